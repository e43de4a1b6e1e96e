"""The link a finished Optuna search prints: the Optuna dashboard on the sweep's own study.

The page itself is checked in headless Chromium by tests/cluster/test_cluster_mlflow_ui.py."""

from tune_jobs.core.search import dashboard_command


def test_dashboard_command_names_the_sweeps_own_study(tmp_path):
    assert dashboard_command(tmp_path) == ""
    (tmp_path / "optuna.db").touch()
    assert dashboard_command(tmp_path) == (
        f"optuna-dashboard sqlite:///{tmp_path}/optuna.db   then open http://127.0.0.1:8080/dashboard/studies/1/trials"
    )
