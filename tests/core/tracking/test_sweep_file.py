"""sweep.json damaged into valid JSON of the wrong shape makes `--resume` and `report.py --replay`
say so in one line naming the file, the field and the fix (exit 2), never a traceback, and
write nothing however often they are tried."""

from __future__ import annotations

import json
from dataclasses import fields

import pytest
from tracking_helpers import new_sweep, refused_twice, resume_args

from tune_jobs.core.errors import ConfigError
from tune_jobs.core.tracking.sweep_file import DAMAGED_FIX, FIELD_KINDS, SWEEP_FILE, SweepRecord


def test_a_sweep_json_holding_a_list_stops_the_resume_in_one_line(tmp_path):
    sweep = new_sweep(tmp_path)
    (sweep / SWEEP_FILE).write_text("[]")
    line = refused_twice(resume_args(tmp_path), tmp_path)
    assert line == f"error: {sweep / SWEEP_FILE} is damaged: it holds a list ([]), not an object; {DAMAGED_FIX}"


def test_a_null_field_of_sweep_json_stops_the_replay_in_one_line(tmp_path):
    sweep = new_sweep(tmp_path)
    record = json.loads((sweep / SWEEP_FILE).read_text())
    (sweep / SWEEP_FILE).write_text(json.dumps({**record, "experiment_file": None}))
    line = refused_twice(["report.py", "--replay", str(sweep)], tmp_path)
    assert line == (
        f"error: {sweep / SWEEP_FILE} is damaged: 'experiment_file' is null, not the experiment file's path; {DAMAGED_FIX}"
    )


@pytest.mark.parametrize(
    ("edit", "resume", "problem"),
    [
        ({"experiment_file": ...}, True, "'experiment_file' is missing (--resume needs it)"),
        ({"overrides": "abc"}, False, "'overrides' is a string (\"abc\"), not a list of key=value strings"),
        ({"points": [1]}, False, "'points' is a list ([1]), not a list of objects"),
        ({"quick": "yes"}, False, "'quick' is a string (\"yes\"), not true or false"),
        ({"study": ...}, False, "'study' is missing"),
        ({"sweep_id": ""}, False, "'sweep_id' is a string (\"\"), not the sweep's id"),
    ],
)
def test_each_field_of_sweep_json_is_checked_by_name(tmp_path, edit, resume, problem):
    sweep = new_sweep(tmp_path)
    record = json.loads((sweep / SWEEP_FILE).read_text())
    record.update({k: v for k, v in edit.items() if v is not ...})
    for key in [k for k, v in edit.items() if v is ...]:
        del record[key]
    (sweep / SWEEP_FILE).write_text(json.dumps(record))
    with pytest.raises(ConfigError) as caught:
        SweepRecord.read(sweep, resume=resume)
    assert str(caught.value) == f"{sweep / SWEEP_FILE} is damaged: {problem}; {DAMAGED_FIX}"


def test_a_replay_needs_three_fields_of_sweep_json_and_every_field_is_checked(tmp_path):
    (tmp_path / SWEEP_FILE).write_text(json.dumps({"study": "phase1", "sweep_id": "x", "tracking_uri": "u", "new": 1}))
    assert SweepRecord.read(tmp_path).sweep_id == "x"  # a field it does not know is left alone
    with pytest.raises(ConfigError, match="'experiment_file' is missing"):
        SweepRecord.read(tmp_path, resume=True)
    assert set(FIELD_KINDS) == {f.name for f in fields(SweepRecord)}
