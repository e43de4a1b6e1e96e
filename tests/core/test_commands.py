"""Commands printed for a person to paste run as printed, whatever the folder holds: each is
handed to a real bash (`bash -c`), its program swapped for printf, and the words bash makes of
it must be the words the service meant."""

from __future__ import annotations

import argparse
import subprocess
from pathlib import Path
from types import SimpleNamespace

from tune_jobs.core.cli import interrupted_line
from tune_jobs.core.commands import command_line
from tune_jobs.core.interrupts import Interrupted
from tune_jobs.core.search import dashboard_command
from tune_jobs.core.tracking.view import runs_view

AWKWARD = "my sweeps/résultats ü 'quoted' $HOME"


def bash_words(command: str) -> list[str]:
    """The words bash makes of `command` (its first word, the program, dropped)."""
    out = subprocess.run(
        ["bash", "-c", f"printf '%s\\n' {command.split(' ', 1)[1]}"], capture_output=True, text=True, check=True
    )
    return out.stdout.splitlines()


def test_a_command_line_pastes_as_its_words():
    words = ["python", "tune_jobs/phase1.py", "--resume", "20261207-000000-abcd", "--results-dir", AWKWARD]
    line = command_line(*words)
    assert bash_words(line) == words[1:]
    assert command_line("python", "tune_jobs/phase1.py") == "python tune_jobs/phase1.py"  # plain words stay plain


def test_the_resume_line_after_ctrl_c_pastes_with_its_results_folder(tmp_path):
    args = argparse.Namespace(results_dir=str(tmp_path / AWKWARD), mlflow_uri=None)
    line = interrupted_line(SimpleNamespace(name="phase1"), args, Interrupted("20261207-000000-abcd", "sweep", 1, 8))
    command = line.split("finish it with: ", 1)[1]
    assert bash_words(command)[-4:] == ["--resume", "20261207-000000-abcd", "--results-dir", str(tmp_path / AWKWARD)]


def test_the_browse_and_dashboard_lines_paste_with_their_stores(tmp_path):
    folder = tmp_path / AWKWARD
    folder.mkdir(parents=True)
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    experiment = SimpleNamespace(metric="val/score", mode="max", goal="optimize", space=[])
    browse = runs_view(uri, "1", experiment, [{"x": 1}])
    assert bash_words(browse.split("   then open ")[0]) == ["ui", "--backend-store-uri", uri, "--port", "5000"]
    (folder / "optuna.db").touch()
    dashboard = dashboard_command(folder)
    assert bash_words(dashboard.split("   then open ")[0]) == [f"sqlite:///{folder / 'optuna.db'}"]
    assert Path(folder / "mlflow.db").exists()


def test_the_browse_line_without_a_saved_view_pastes_too(tmp_path, capsys):
    from tune_jobs.core.sweep_result import SweepResult, print_result

    uri = f"sqlite:///{tmp_path / AWKWARD / 'mlflow.db'}"
    print_result(SweepResult("s", tmp_path, "p", uri, trials=1, errored=0, report_dir=None))
    (line,) = [x for x in capsys.readouterr().out.splitlines() if x.startswith("  browse:")]
    command = line.removeprefix("  browse:").strip().split("   (then open ")[0]
    assert bash_words(command) == ["ui", "--backend-store-uri", uri, "--port", "5000"]


def test_the_start_over_command_a_trial_offers_names_the_sweep_s_own_script_and_folder(tmp_path):
    """A trial none of whose checkpoints loads offers `<resume> --start-over <trial>`: the entry
    script the sweep was started with (a study outside the repo too), its results folder."""
    from tune_jobs.core.runner import _resume

    script = str(tmp_path / AWKWARD / "ridge.py")
    record = SimpleNamespace(script=script, sweep_id="20261207-000000-abcd")
    line = _resume(record, tmp_path / AWKWARD / "results")
    assert bash_words(line) == [
        script,
        "--resume",
        "20261207-000000-abcd",
        "--results-dir",
        f"{tmp_path / AWKWARD}/results",
    ]
    started_in_the_repo = SimpleNamespace(script="tune_jobs/phase1.py", sweep_id="20261207-000000-abcd")
    assert (
        _resume(started_in_the_repo, Path("results").resolve())
        == "python tune_jobs/phase1.py --resume 20261207-000000-abcd"
    )
