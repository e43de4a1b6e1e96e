"""The two displays (tune_jobs/core/console/displays.py): the live table and the plain log."""

from __future__ import annotations

import io
import re
import time
from pathlib import Path

from console_trials import PHASE1, SEARCH, k_trial, trial
from ray.tune.experiment import Trial

from tune_jobs.core.console.displays import LiveDisplay, PlainDisplay, Snapshot
from tune_jobs.core.console.rows import SweepFacts, row_of


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
