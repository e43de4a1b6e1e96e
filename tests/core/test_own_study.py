"""README's "Add your own study", as a researcher follows it: the two files copied verbatim
from README.md into a folder of their own, the commands run from there, then the report
rebuilt with `python -m tune_jobs.report` (which finds the study from what the sweep recorded:
no list of studies names it)."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ROOT, job_env

SECTION = "## Add your own study"


def readme_blocks() -> dict[str, list[str]]:
    text = (ROOT / "README.md").read_text()
    section = text[text.index(SECTION) : text.index("\n## ", text.index(SECTION) + 1)]
    blocks: dict[str, list[str]] = {}
    for kind, body in re.findall(r"```(\w+)\n(.*?)```", section, re.S):
        blocks.setdefault(kind, []).append(body)
    return blocks


def commands() -> list[list[str]]:
    """The bash block's commands, comments dropped, `python` as this interpreter."""
    (bash,) = readme_blocks()["bash"]
    out = []
    for line in bash.splitlines():
        words = shlex.split(line, comments=True)
        if words:
            assert words[0] == "python", line
            out.append([sys.executable, *words[1:]])
    return out


def run(cmd: list[str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, env=job_env(), capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def study_folder(tmp_path) -> Path:
    """A folder of the researcher's own, outside the project, with README's two files."""
    folder = tmp_path / "my_study"
    folder.mkdir()
    blocks = readme_blocks()
    (python,) = blocks["python"]
    (yaml,) = blocks["yaml"]
    (folder / "ridge.py").write_text(python)
    (folder / "ridge.yaml").write_text(yaml)
    return folder


@pytest.mark.slow  # a real 6-trial sweep: about 2 minutes
def test_the_readme_study_runs_and_its_report_is_rebuilt_from_anywhere(study_folder):
    dry_run, sweep, report = commands()
    assert dry_run[-1] == "--dry-run" and report[1:3] == ["-m", "tune_jobs.report"]

    planned = run(dry_run, study_folder)
    assert planned.returncode == 0, planned.stderr
    assert "6 trials:" in planned.stdout
    assert not (study_folder / "mlflow.db").exists()

    done = run(sweep, study_folder)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (sweep_dir,) = (study_folder / "results" / "ray").glob("ridge-*")
    recorded = json.loads((sweep_dir / "sweep.json").read_text())
    assert recorded["study_module"] == "__main__" and recorded["study_file"] == str(study_folder / "ridge.py")

    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{study_folder / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("ridge").experiment_id])
    trials = [r for r in runs if r.data.tags.get("sweep.role") == "trial"]
    assert len(trials) == 6 and all(r.info.status == "FINISHED" for r in trials)
    steps = sorted(m.step for m in client.get_metric_history(trials[0].info.run_id, "val/loss"))
    assert steps == [*range(0, 200, 10), 199]

    (report_dir,) = (study_folder / "results" / "ridge").iterdir()
    summary = (report_dir / "sweep_summary.md").read_text()
    assert "6 trials: 6 finished" in summary and "Best trial: ridge/" in summary
    assert "trainer.lr" in summary and "Importance of the searched values" in summary
    assert (report_dir / "sweep_curves.png").exists() and (report_dir / "sweep_parallel.png").exists()

    # The report rebuilt later, from another folder too: the sweep recorded where its study is.
    (report_dir / "sweep_summary.md").unlink()
    rebuilt = run(report, study_folder)
    assert rebuilt.returncode == 0, rebuilt.stderr[-3000:]
    assert (report_dir / "sweep_summary.md").read_text() == summary
    elsewhere = study_folder.parent / "elsewhere"
    elsewhere.mkdir()
    again = run([*report, "--mlflow-uri", f"sqlite:///{study_folder / 'mlflow.db'}"], elsewhere)
    assert again.returncode == 0, again.stderr[-3000:]
    assert (elsewhere / "results" / "ridge" / report_dir.name / "sweep_summary.md").exists()


def test_bad_input_to_an_own_study_is_one_line_before_ray(study_folder):
    _, sweep, _ = commands()
    out = run([*sweep, "trainer.lr=-1"], study_folder, timeout=120)
    assert out.returncode == 2 and out.stderr.strip().count("\n") == 0, out.stderr
    assert out.stderr.startswith("error: ") and "trainer.lr" in out.stderr
    assert not (study_folder / "results").exists() and not (study_folder / "mlflow.db").exists()


def test_a_study_whose_file_moved_is_named_in_one_line(tmp_path):
    from tune_jobs.core.errors import ConfigError
    from tune_jobs.core.study import load_study

    gone = tmp_path / "gone.py"
    with pytest.raises(ConfigError, match=r"study 'ridge' was declared in .*gone\.py, which is gone"):
        load_study("ridge", "__main__", str(gone))
