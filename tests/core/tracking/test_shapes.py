"""The sweep's files as declared shapes: a damaged one is None (a line) or a problem in words."""

import json

import pytest
from tracking_helpers import new_sweep, refused_twice, resume_args

from tune_jobs.core.errors import ConfigError
from tune_jobs.core.tracking.shapes import RUNG_JOURNAL, parse_row, parse_rung_event, parse_trial_event, state_problem
from tune_jobs.core.tracking.sweep_file import DAMAGED_FIX, SWEEP_FILE, SweepRecord


def test_a_result_row_is_checked_field_by_field():
    row = {"trial": "t1", "step": 3, "ts": 1, "metrics": {"loss": 0.5}}
    assert parse_row(json.dumps(row).encode()) == row
    assert parse_row(json.dumps({**row, "metrics": {"loss": True}}).encode()) is None
    assert parse_row(b'{"trial": "t1", "st') is None


def test_a_trial_event_and_a_rung_event_are_checked():
    start = {"event": "start", "trial": "t1", "point": {}, "name": "n", "start_ms": 1}
    assert parse_trial_event(json.dumps(start).encode()) == start
    assert parse_trial_event(json.dumps({**start, "event": "end"}).encode()) is None  # no status, tags ...
    assert parse_rung_event(b'{"event": "promote", "trial": "t1", "rung": 0}') is not None
    assert parse_rung_event(b'{"event": "rung", "trial": "t1", "rung": -1, "score": 1}') is None


def test_a_damaged_state_names_the_first_key_at_fault():
    assert state_problem([]) == "holds a list, not an object"
    state = {
        "experiment": "e",
        "tags": {},
        "base": {},
        "run_prefix": "p",
        "start_ms": 1,
        "trials": {},
        "journal_offset": 0,
        "parent_cfg_logged": False,
        "ended": False,
    }
    assert state_problem(state) is None
    assert state_problem({**state, "journal_offset": "0"}) == "'journal_offset' is missing or not a int"
    assert state_problem({**state, "end": 3}) == "'end' is a int, not dict or null"


def test_a_damaged_sweep_file_is_one_line_naming_the_field(tmp_path):
    (tmp_path / SWEEP_FILE).write_text(json.dumps({"study": "s", "sweep_id": "x", "tracking_uri": 5}))
    with pytest.raises(ConfigError) as err:
        SweepRecord.read(tmp_path)
    assert str(err.value) == (
        f"{tmp_path / SWEEP_FILE} is damaged: 'tracking_uri' is a number (5), not the MLflow tracking URI; {DAMAGED_FIX}"
    )


def test_a_rungs_journal_line_that_is_no_decision_stops_the_resume_before_ray(tmp_path):
    sweep = new_sweep(tmp_path)
    rung = {"event": "rung", "trial": "a_00000", "rung": 0, "score": -1.5, "result": None}
    (sweep / RUNG_JOURNAL).write_text(json.dumps(rung) + '\n{"event": "promote", "trial": "a_00000", "rung": null}\n')
    line = refused_twice(resume_args(tmp_path), tmp_path)
    assert line == (
        f"error: {sweep / RUNG_JOURNAL} is damaged: line 2 is not a rung decision "
        f'({{"event": "promote", "trial": "a_00000", "rung": null}}); {DAMAGED_FIX}'
    )
