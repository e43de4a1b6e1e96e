"""The sweep's terminal view: rows from Tune's own Trial objects, the live table, the plain log,
where Ray's output goes, and a real quick sweep in a real terminal (tmux). The same sweep piped
is in test_cluster_mlflow_ui.py, which then opens README's MLflow link on its store."""

from __future__ import annotations

import io
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import ROOT, job_env
from ray.tune.experiment import Trial

from tune_jobs.core.adapter import DIVERGED_KEY, STOP_REASON_KEY
from tune_jobs.core.console import (
    LiveDisplay,
    PlainDisplay,
    Snapshot,
    SweepFacts,
    budget_of,
    eta_seconds,
    note_markdown,
    row_of,
    slots,
    visible_rows,
)

ARTIFACTS = Path(__import__("os").environ.get("TEST_ARTIFACTS_DIR", ROOT / "tests" / "artifacts"))
PHASE1 = SweepFacts(
    run_prefix="phase1",
    sweep_id="20261201-000000-abcd",
    metric="val/nmse",
    mode="min",
    goal="measure",
    total=8,
    tracking_uri="sqlite:////tmp/mlflow.db",
    unit="step",
    budget=301,
    budget_key="trainer.steps",
    per_trial={"cpu": 1, "gpu": 0},
)
SEARCH = SweepFacts(
    run_prefix="denoising_search",
    sweep_id="20261201-000000-ef01",
    metric="blob/score",
    mode="max",
    goal="optimize",
    total=80,
    tracking_uri="http://127.0.0.1:5000",
    unit="epoch",
    budget=9,
    budget_key="trainer.epochs",
)


def trial(n: int, point: dict, results: list[dict], status: str = Trial.RUNNING) -> Trial:
    """A real Tune Trial (a stub: no Ray needed) that has reported `results`."""
    t = Trial("study", config={"point": point}, trial_id=f"abcd_{n:05d}", stub=True)
    for i, result in enumerate(results, start=1):
        t.update_last_result({"training_iteration": i, "time_total_s": 2.0 * i, **result})
    t.set_status(status)
    return t


def k_trial(k: int, steps: int, status: str = Trial.RUNNING, nmse: float = 0.8) -> Trial:
    return trial(k, {"data.n_components": k}, [{"step": s, "val/nmse": nmse} for s in range(0, steps, 100)], status)


def test_rows_name_trials_as_mlflow_does_and_say_how_they_ended():
    finished = k_trial(1, 301, Trial.TERMINATED)
    assert finished.last_result["step"] == 300
    row = row_of(finished, PHASE1)
    assert (row.name, row.status, row.done, row.budget, row.outcome) == (
        "phase1/n_components=1",
        "done",
        301,
        301,
        "finished",
    )
    assert row_of(k_trial(2, 201, Trial.TERMINATED), PHASE1).outcome == "stopped early"
    assert row_of(k_trial(3, 101), PHASE1).outcome == "" and row_of(k_trial(3, 101), PHASE1).status == "running"
    assert row_of(k_trial(4, 101, Trial.ERROR), PHASE1).outcome == "failed"
    blown = trial(5, {"data.n_components": 5}, [{"step": 0, "val/nmse": 1.0}, {"step": 99, "val/nmse": float("nan"),
                  DIVERGED_KEY: 1, STOP_REASON_KEY: "val/nmse became nan at step 99"}], Trial.TERMINATED)  # fmt: skip
    row = row_of(blown, PHASE1)
    assert row.outcome == "diverged" and row.reason.startswith("val/nmse became nan")
    # Tune calls on_trial_complete before it sets TERMINATED: the callback passes the status.
    assert row_of(k_trial(6, 301, Trial.RUNNING), PHASE1, "TERMINATED").outcome == "finished"
    waiting = trial(7, {"data.n_components": 7}, [], Trial.PENDING)
    assert row_of(waiting, PHASE1).done is None and row_of(waiting, PHASE1).latest is None

    epochs = trial(1, {"trainer.lr": 0.01}, [{"step": e, "blob/score": 0.1 * e} for e in (1, 2)], Trial.TERMINATED)
    row = row_of(epochs, SEARCH)
    assert (row.done, row.budget, row.outcome, row.best, row.latest) == (2, 9, "stopped early", 0.2, 0.2)
    searched_budget = trial(2, {"trainer.epochs": 2}, [{"step": e, "blob/score": 0.1} for e in (1, 2)], "TERMINATED")
    assert row_of(searched_budget, SEARCH).outcome == "finished"  # its own budget, from its point


def test_a_rebuild_of_the_rows_makes_again_only_those_of_trials_that_moved(monkeypatch):
    from tune_jobs.core import console

    view = console.SweepView(PHASE1)
    view.setup()
    view._display = PlainDisplay(PHASE1, io.StringIO(), None)
    made = []
    monkeypatch.setattr(
        console, "row_of", lambda t, facts, status=None: made.append(t.trial_id) or row_of(t, facts, status)
    )
    trials = [k_trial(k, 301, Trial.TERMINATED) for k in range(1, 5)] + [k_trial(5, 101)]
    view._snapshot(trials, force=True)
    assert len(made) == 5
    made.clear()
    trials[4].update_last_result({"training_iteration": 9, "step": 200, "val/nmse": 0.5})
    view._snapshot(trials, force=True)
    assert made == [trials[4].trial_id]  # the four that ended are shown as they were
    assert view._snap.rows[4].done == 201 and view._snap.rows[0].outcome == "finished"
    made.clear()
    trials[4].set_status(Trial.TERMINATED)
    view._snapshot(trials, force=True)
    assert made == [trials[4].trial_id] and view._snap.rows[4].status == "done"


def test_budget_comes_from_the_study_config():
    from trainables import denoising, phase1

    assert budget_of(phase1.Config()) == ("step", 5001, "trainer.steps")
    assert budget_of(denoising.Config()) == ("epoch", denoising.Config().trainer.epochs, "trainer.epochs")
    assert budget_of(object()) == ("report", None, None)


def test_eta_uses_the_trials_own_speeds_and_the_slots():
    rows = [row_of(k_trial(k, 101), PHASE1) for k in (1, 2)]  # 2 s per 100 steps... (101 steps in 4 s)
    speed = 4.0 / 101
    # Two running, each with 200 steps left; 6 more trials waiting, each as long as these will take.
    expected = (2 * 200 * speed + 6 * 301 * speed) / 2
    assert eta_seconds(rows, 8, 2) == pytest.approx(expected)
    assert eta_seconds([row_of(k_trial(1, 301, Trial.TERMINATED), PHASE1)], 1, 2) == 0.0
    assert eta_seconds([row_of(trial(1, {}, [], Trial.PENDING), PHASE1)], 8, 2) is None  # nothing measured yet
    assert eta_seconds([row_of(k_trial(1, 1), PHASE1)], 8, 2) is None  # one report: its start, not its speed
    assert slots({"cpu": 1, "gpu": 0.25}, {"CPU": 16, "GPU": 2}) == 8
    assert slots({"cpu": 2, "gpu": 0}, {"CPU": 2}, max_concurrent=4) == 1
    assert slots({"cpu": 1, "worker_slot": 1}, {"CPU": 8, "worker_slot": 3}, max_concurrent=2) == 2


def test_a_long_search_shows_the_running_and_the_best_trials():
    done = [
        trial(i, {"trainer.lr": i / 1000}, [{"step": 1, "blob/score": i / 100}], Trial.TERMINATED) for i in range(60)
    ]
    running = [trial(100 + i, {"trainer.lr": 1.0 + i}, [{"step": 1, "blob/score": 0.0}]) for i in range(2)]
    rows = [row_of(t, SEARCH) for t in done + running]
    shown, rest = visible_rows(rows, SEARCH, 10)
    assert len(shown) == 10 and [r.status for r in shown[:2]] == ["running", "running"]
    assert [r.best for r in shown[2:5]] == [0.59, 0.58, 0.57]  # the best first (mode max)
    assert rest == "52 more trials not shown (52 stopped early)"  # 1 epoch of 9
    # A measurement grid has no best: the latest ended trials fill the room instead.
    grid = [row_of(k_trial(k, 301, Trial.TERMINATED, nmse=k), PHASE1) for k in range(1, 21)]
    shown, rest = visible_rows(grid, PHASE1, 5)
    assert [r.name for r in shown] == [f"phase1/n_components={k}" for k in (20, 19, 18, 17, 16)]


def render_live(facts: SweepFacts, rows: list, width: int = 110, height: int = 30) -> str:
    from rich.console import Console

    display = LiveDisplay(facts, io.StringIO(), Path("/results/ray/sweep/ray.log"))
    display.update(Snapshot(rows=tuple(rows), started=time.monotonic() - 75, slots=2, eta=130.0))
    out = io.StringIO()
    console = Console(file=out, width=width, height=height, color_system=None)
    display.console = console
    console.print(display._render())
    return out.getvalue()


def test_the_live_table_shows_readable_names_progress_and_no_best_for_a_measurement_grid():
    rows = [row_of(k_trial(k, 301 if k < 3 else 101, Trial.TERMINATED if k < 3 else Trial.RUNNING), PHASE1) for k in (1, 2, 3, 4)]  # fmt: skip
    rows += [row_of(trial(k, {"data.n_components": k}, [], Trial.PENDING), PHASE1) for k in (5, 6, 8, 10)]
    text = render_live(PHASE1, rows)
    assert "phase1 sweep 20261201-000000-abcd   2/8 trials done   slots 2/2 in use" in text
    assert "elapsed 1m15s   ETA ~2m10s   MLflow sqlite:////tmp/mlflow.db" in text
    assert "Ray's output: /results/ray/sweep/ray.log" in text
    for k in (1, 2, 3, 4, 5, 6, 8, 10):
        assert re.search(rf"phase1/n_components={k}\s", text), text
    assert re.search(r"phase1/n_components=1\s+done\s+step 301/301\s+0\.8\s+finished", text), text
    assert re.search(r"phase1/n_components=3\s+running\s+step 101/301\s+0\.8\s", text), text
    assert "best" not in text  # goal: measure


def test_the_live_table_of_a_search_names_the_best_and_folds_long_names_instead_of_cutting_them():
    point = {f"model.{name}": 0.0123456 for name in ("encoder_init_scale", "decoder_init_scale", "noise_variance")}
    rows = [row_of(trial(1, point, [{"step": 1, "blob/score": 0.5}], Trial.TERMINATED), SEARCH)]
    text = render_live(SEARCH, rows, width=100)
    name = rows[0].name
    assert len(name) > 80 and "…" not in text and "..." not in text
    assert f"best so far: \n{name}  \nblob/score = 0.5" in text  # the header line wraps between words
    assert "best so far: " in text and " best " in text  # goal: optimize
    rows_text = text[text.index(" trial ") :]
    # Broken between searched values, each value whole on its line.
    parts = [
        "denoising_search/",
        "encoder_init_scale=0.01235,",
        "decoder_init_scale=0.01235,",
        "noise_variance=0.01235",
    ]
    lines = [line.split()[0] for line in rows_text.splitlines()[2:6]]
    assert lines == parts, rows_text


def test_the_plain_log_is_one_line_per_event_and_never_cuts_a_name():
    out = io.StringIO()
    display = PlainDisplay(PHASE1, out, Path("/r/ray.log"))
    display.start()
    rows = [row_of(k_trial(k, 101), PHASE1) for k in (1, 2)]
    display.update(Snapshot(rows=tuple(rows)))
    display.event("started", rows[0])
    ended = row_of(k_trial(1, 301, Trial.TERMINATED), PHASE1)
    display.event("finished", ended)
    display.update(Snapshot(rows=(ended,)))  # no line: nothing happened (the heartbeat is minutes apart)
    display.close(Snapshot(rows=(ended,)))
    lines = out.getvalue().splitlines()
    assert len(lines) == 4, lines
    assert "phase1 20261201-000000-abcd: 8 trials, metric val/nmse (min, goal measure)" in lines[0]
    assert "Ray's output: /r/ray.log" in lines[0]
    assert re.search(r"started\s+phase1/n_components=1  \[0/8 done, 2 running", lines[1]), lines[1]
    assert re.search(r"finished\s+phase1/n_components=1  step 301/301  val/nmse=0\.8", lines[2]), lines[2]
    assert lines[3].endswith("1 finished")


def test_the_parent_runs_description_is_the_final_table_and_fits_in_a_tag():
    rows = [row_of(k_trial(k, 301, Trial.TERMINATED, nmse=k / 10), PHASE1) for k in (1, 2, 4)]
    note = note_markdown(PHASE1, rows)
    assert "**phase1 sweep 20261201-000000-abcd**: 3 of 8 trials ended (3 finished)" in note
    assert "| phase1/n_components=4 | finished | step 301/301 | 0.4 |" in note
    assert "Best" not in note and "none is called best" in note
    many = [row_of(trial(i, {"trainer.lr": i / 1e4}, [{"step": 1, "blob/score": i}], "TERMINATED"), SEARCH) for i in range(400)]  # fmt: skip
    note = note_markdown(SEARCH, many)
    assert len(note) <= 8000 and "Best trial: **denoising_search/lr=0.0399**" in note
    assert "| denoising_search/lr=0.0399 | stopped early | epoch 1/9 | 399 | 399 |" in note
    assert "more trials: see the runs of this sweep" in note


CHILD = """
import logging, os, subprocess, sys
from pathlib import Path
from tune_jobs.core.console import SweepOutput

with SweepOutput(verbose={verbose}) as out:
    print("python print before the folder exists")
    log = Path(sys.argv[1])
    out.log_to(log)
    print("python print")
    os.write(1, b"fd 1 write\\n")
    os.write(2, b"fd 2 write\\n")
    subprocess.run([sys.executable, "-c", "print('child process print')"], check=True)
    for _ in range(3):
        logging.getLogger("tune_jobs.core.record").warning("MLflow at http://x unreachable")
    logging.getLogger("ray.tune").error("Trial task failed for trial study_00000")
print("after the sweep")
"""


@pytest.mark.parametrize("verbose", [1, 2])
def test_ray_output_goes_to_the_log_and_warnings_reach_the_terminal_once(tmp_path, verbose):
    log = tmp_path / "ray.log"
    out = subprocess.run(
        [sys.executable, "-c", CHILD.format(verbose=verbose), str(log)],
        cwd=ROOT,
        env=job_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    terminal = out.stdout + out.stderr
    printed = ["python print", "fd 1 write", "fd 2 write", "child process print"]
    if verbose == 1:
        assert terminal.count("warning: MLflow at http://x unreachable") == 1, terminal
        assert not any(p in terminal for p in printed) and "Trial task failed" not in terminal, terminal
        assert terminal.rstrip().endswith("after the sweep")
        text = log.read_text()
        assert text.index("python print before the folder exists") < text.index("python print\n")
        assert all(p in text for p in printed) and "MLflow at http://x unreachable" in text
    else:  # --verbose: Ray's output stays on the terminal, nothing is redirected
        assert all(p in terminal for p in printed) and not log.exists()


CONSOLE_ARTIFACTS = ("live_view_mid_sweep.txt", "live_view_end.txt")


@pytest.mark.slow
def test_quick_sweep_in_a_terminal_shows_the_live_view(workdir):
    if not shutil.which("tmux"):
        if __import__("os").environ.get("CI"):
            pytest.fail("CI must run the terminal test: tmux is not installed (.ci/run installs it)")
        pytest.skip("tmux is not installed (apt-get install tmux)")
    session = f"sweep-{workdir.parent.name}"[-40:]
    command = f"{sys.executable} {ROOT / 'tune_jobs' / 'phase1.py'} --quick; echo EXIT=$?; sleep 300"
    env = job_env()
    tmux = ["tmux", "-L", session]
    subprocess.run(
        [*tmux, "new-session", "-d", "-s", session, "-x", "150", "-y", "45", "-c", str(workdir), command],
        env=env,
        check=True,
    )
    try:
        mid, deadline, screen = "", time.monotonic() + 900, ""
        while time.monotonic() < deadline:
            screen = subprocess.run([*tmux, "capture-pane", "-p", "-t", session], capture_output=True, text=True).stdout
            # The live view mid-sweep: a trial running, with its progress; the latest such
            # screen once some trials are done.
            running = re.search(r"phase1/n_components=\d+\s+running\s+step \d+/301", screen)
            if running and (not mid or re.search(r"   [1-7]/8 trials done", screen)):
                mid = screen
            if "EXIT=" in screen:
                break
            time.sleep(2)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        for name, text in zip(CONSOLE_ARTIFACTS, (mid, screen), strict=True):
            (ARTIFACTS / name).write_text(text)
        assert "EXIT=0" in screen, screen
        assert mid, f"no running trial was ever on the screen:\n{screen}"
        assert re.search(r"phase1 sweep \S+   \d/8 trials done   slots [12]/2 in use", mid), mid
        assert re.search(r"elapsed \S+   ETA \S+   MLflow sqlite:///\S+mlflow.db", mid), mid
        assert re.search(r"Ray's output: \S+/ray.log", mid), mid
        assert "best" not in mid.lower()  # phase1 is a measurement grid (goal: measure)
        assert sum(f"phase1/n_components={k} " in mid for k in (1, 2, 3, 4, 5, 6, 8, 10)) == 8, mid
        # The end: the final table (every trial finished) once, then the summary; no Ray output.
        for k in (1, 2, 3, 4, 5, 6, 8, 10):
            assert re.search(rf"phase1/n_components={k}\s+done\s+step 301/301\s+\S+\s+finished", screen), screen
        assert "8 trials measured val/nmse" in screen and "browse:" in screen
        for ray_text in ("Trial status", "Checkpoint successfully created", "phase1_", "...n_components"):
            assert ray_text not in screen, ray_text
    finally:
        subprocess.run([*tmux, "kill-server"], check=False)
