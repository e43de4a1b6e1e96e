"""Where a person opens a finished Optuna search: the Optuna dashboard (the MLflow UI's view of a
sweep is tune_jobs/core/tracking/view.py)."""

from __future__ import annotations

from pathlib import Path

DASHBOARD_UI = "http://127.0.0.1:8080"  # optuna-dashboard's default address


def dashboard_command(sweep_dir: Path) -> str:
    """The optuna-dashboard command of an Optuna search's study (one study per sweep folder)."""
    db = Path(sweep_dir) / "optuna.db"
    if not db.exists():
        return ""
    return f"optuna-dashboard sqlite:///{db}   then open {DASHBOARD_UI}/dashboard/studies/1/trials"
