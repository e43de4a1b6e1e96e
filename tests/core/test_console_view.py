"""The Tune callback (tune_jobs/core/console/view.py), and a real quick sweep in a real
terminal (tmux). The same sweep piped is in test_cluster_mlflow_ui.py, which then opens
README's MLflow link on its store."""

from __future__ import annotations

import io
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from console_trials import PHASE1, k_trial
from helpers import ROOT, job_env
from ray.tune.experiment import Trial

from tune_jobs.core.console.displays import PlainDisplay
from tune_jobs.core.console.rows import row_of

ARTIFACTS = Path(__import__("os").environ.get("TEST_ARTIFACTS_DIR", ROOT / "tests" / "artifacts"))


def test_a_rebuild_of_the_rows_makes_again_only_those_of_trials_that_moved(monkeypatch):
    from tune_jobs.core.console import view as console

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


def test_after_a_ctrl_c_the_last_line_counts_the_trials_tune_stopped_as_interrupted_not_finished(monkeypatch):
    from types import SimpleNamespace

    from tune_jobs.core.console import view as console

    out = io.StringIO()
    display = PlainDisplay(PHASE1, out, None)
    output = SimpleNamespace(open_display=lambda facts: display, close_display=display.close)
    monkeypatch.setattr(console.SweepOutput, "active", output)
    view = console.SweepView(PHASE1)
    view.setup()
    before = k_trial(1, 301, Trial.TERMINATED)  # ended before this (resumed) session
    running = [k_trial(k, 301) for k in (2, 3)] + [k_trial(4, 101)]
    waiting = [k_trial(k, 0, Trial.PENDING) for k in (5, 6)]
    trials = [before, *running, *waiting]
    view.on_step_begin(0, trials)
    running[0].set_status(Trial.TERMINATED)
    view.on_trial_complete(1, trials, running[0])
    for t in [*running[1:], *waiting]:  # the Ctrl-C: Tune stops all the others
        t.set_status(Trial.TERMINATED)
    view.on_experiment_end(trials)
    last = out.getvalue().splitlines()[-1]
    assert re.search(r"sweep stopped after \S+: 2 finished, 2 interrupted, 2 not started$", last), last
    stopped = {t.trial_id: "INTERRUPTED" for t in running[1:]} | {t.trial_id: "NOT_STARTED" for t in waiting}
    assert "2 of 8 trials ended (2 finished, 2 interrupted, 2 not started)" in PHASE1.note(trials, stopped)


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
