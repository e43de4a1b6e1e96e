"""A sweep folder's own files damaged into valid JSON of the wrong shape make `--resume` and `report.py --replay` say so in one line naming the file and the fix (exit 2), never a traceback, and write nothing however often they are tried."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest
from helpers import ROOT, job_env

from tune_jobs.core.errors import ConfigError
from tune_jobs.core.record import BACKUP_FILE, STATE_FILE, TRIALS_FILE, Mirror, state_problem, write_json
from tune_jobs.core.rung_journal import RUNG_JOURNAL, parse_rung_event
from tune_jobs.core.sweep_record import DAMAGED_FIX, FIELD_KINDS, SWEEP_FILE, SweepRecord

SWEEP_ID = "20990101-000000-abcd"


def new_sweep(root: Path) -> Path:
    """The folder of a stopped `phase1.py --quick` sweep under root/results/ray, as far as a
    resume reads it before Ray starts: its whole sweep.json and a good mlflow_runs.json."""
    from tune_jobs.core.paths import experiment_file
    from tune_jobs.core.plan import compose, plan
    from tune_jobs.core.space import load_experiment
    from tune_jobs.phase1 import STUDY

    experiment = load_experiment(experiment_file("phase1"))
    composed = compose(STUDY, experiment, profile=None, quick=True, overrides=[])
    sweep = root / "results" / "ray" / f"phase1-{SWEEP_ID}"
    sweep.mkdir(parents=True)
    SweepRecord(
        study="phase1",
        sweep_id=SWEEP_ID,
        tracking_uri=f"sqlite:///{root / 'mlflow.db'}",
        experiment=experiment.name,
        experiment_file=str(experiment.path),
        profile=composed.profile,
        quick=True,
        base=composed.base,
        points=[t.point for t in plan(composed).trials],
    ).write(sweep)
    state = {"experiment": "phase1", "tags": {"sweep.id": SWEEP_ID}, "base": {}, "run_prefix": "phase1"}
    state |= {"start_ms": 0, "trials": {}, "journal_offset": 0, "parent_cfg_logged": False, "ended": False}
    write_json(sweep / STATE_FILE, state)
    return sweep


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """`python tune_jobs/<script> ARGS` from `cwd`, this checkout's code first."""
    script, *rest = args
    env = {**job_env(), "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, str(ROOT / "tune_jobs" / script), *rest],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def refused_twice(args: list[str], root: Path) -> str:
    """Runs the command twice: each time exit 2 and one line `error: ...`, nothing else on
    stderr, and no file under `root` added, changed or removed. Returns that line."""
    before = files(root)
    for _ in range(2):
        out = run(args, root)
        lines = out.stderr.splitlines()
        assert out.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), out.stderr[-3000:]
        assert files(root) == before
    return lines[0]


def resume_args(root: Path) -> list[str]:
    return ["phase1.py", "--resume", SWEEP_ID, "--results-dir", str(root / "results")]


# -- sweep.json -----------------------------------------------------------------------------------


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


# -- mlflow_runs.json -----------------------------------------------------------------------------


def test_a_replay_of_an_empty_object_as_mlflow_runs_json_names_the_resume_that_rebuilds_it(tmp_path):
    sweep = new_sweep(tmp_path)
    (sweep / STATE_FILE).write_text("{}")
    line = refused_twice(["report.py", "--replay", str(sweep)], tmp_path)
    resume = f"python tune_jobs/phase1.py --resume {SWEEP_ID} --results-dir {tmp_path / 'results'}"
    assert line == (
        f"error: {sweep / STATE_FILE} is damaged ('experiment' is missing or not a str); the sweep's resume "
        f"rebuilds its record from its settings, its journal and MLflow: {resume}"
    )
    # That resume gets past everything it checks before Ray starts (--dry-run stops there).
    out = subprocess.run(
        [sys.executable, *resume.split()[1:], "--dry-run"],
        cwd=ROOT,
        env={**job_env(), "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0 and not out.stderr, out.stderr[-3000:]


def test_a_damaged_mlflow_runs_json_is_kept_aside_once_however_often_it_is_loaded(tmp_path):
    sweep = new_sweep(tmp_path)
    (sweep / STATE_FILE).write_text("[]")
    for _ in range(3):  # as the resume's scheduler and tracker load it, resume after resume
        assert Mirror(sweep).recovered
    assert [p.read_text() for p in sweep.glob(f"{STATE_FILE}.damaged-*")] == ["[]"]
    (sweep / STATE_FILE).write_text('{"trials": 1}')  # damaged otherwise: kept too
    assert Mirror(sweep).recovered
    assert sorted(p.read_text() for p in sweep.glob(f"{STATE_FILE}.damaged-*")) == ["[]", '{"trials": 1}']


def test_fields_of_mlflow_runs_json_of_the_wrong_type_make_it_damaged_not_a_crash(tmp_path):
    sweep = new_sweep(tmp_path)
    good = json.loads((sweep / STATE_FILE).read_text())
    trial = {"name": "t", "point": {}, "start_ms": 0, "params_logged": False, "ended": False}
    assert state_problem({**good, "trials": {"t1": trial}}) is None
    assert state_problem({**good, "trials_offset": "abc"}) == "'trials_offset' is a str, not int"
    assert (
        state_problem({**good, "end": {"status": "FINISHED"}}) == "'end' lacks its 'tags' object or its 'end_ms' number"
    )
    bad_trial = {**good, "trials": {"t1": {**trial, "status": "FINISHED", "end_ms": None}}}
    assert state_problem(bad_trial) == "trial t1: 'end_ms' is null, not int"
    (sweep / STATE_FILE).write_text(json.dumps({**good, "trials_offset": "abc"}))
    (sweep / TRIALS_FILE).write_text('[]\n{"event": "start"}\n')
    assert Mirror(sweep).recovered  # no traceback: the resume rebuilds it (no backup here)


def test_start_over_with_a_damaged_mlflow_runs_json_lists_the_trials_the_trials_file_knows(tmp_path):
    from tune_jobs.core.runner import check_start_over

    sweep = new_sweep(tmp_path)
    (sweep / STATE_FILE).write_text("[]")
    (sweep / BACKUP_FILE).write_text('{"trials": [1]}')
    start = {"event": "start", "trial": "a_00000", "point": {"n": 1}, "name": "n=1", "start_ms": 1}
    (sweep / TRIALS_FILE).write_text("[]\n" + json.dumps(start) + "\n")
    check_start_over(sweep, ["n=1"])
    with pytest.raises(ConfigError, match=r"--start-over n=2: no such trial in .*; its trials: a_00000 \(n=1\)"):
        check_start_over(sweep, ["n=2"])


# -- what a resume restores from inside Ray -------------------------------------------------------


def test_a_rungs_journal_line_that_is_no_decision_stops_the_resume_before_ray(tmp_path):
    sweep = new_sweep(tmp_path)
    rung = {"event": "rung", "trial": "a_00000", "rung": 0, "score": -1.5, "result": None}
    (sweep / RUNG_JOURNAL).write_text(json.dumps(rung) + '\n{"event": "promote", "trial": "a_00000", "rung": null}\n')
    line = refused_twice(resume_args(tmp_path), tmp_path)
    assert line == (
        f"error: {sweep / RUNG_JOURNAL} is damaged: line 2 is not a rung decision "
        f'({{"event": "promote", "trial": "a_00000", "rung": null}}); {DAMAGED_FIX}'
    )


def test_an_experiment_state_of_the_wrong_shape_stops_the_resume_before_ray(tmp_path):
    sweep = new_sweep(tmp_path)
    (sweep / "experiment_state-2099-01-01_00-00-00.json").write_text('{"trial_data": null}')
    line = refused_twice(resume_args(tmp_path), tmp_path)
    assert line.startswith(f"error: {sweep / 'experiment_state-2099-01-01_00-00-00.json'} is damaged: ")
    assert line.endswith(DAMAGED_FIX)


def test_a_trial_result_line_of_the_wrong_shape_is_no_last_result(tmp_path):
    from types import SimpleNamespace

    from tune_jobs.core.experiment_state import RESULT_FILE, last_logged_result

    (tmp_path / RESULT_FILE).write_text('{"training_iteration": 3}\n[1, 2]\nnull\n')
    assert last_logged_result(SimpleNamespace(path=str(tmp_path))) == {"training_iteration": 3}
    assert parse_rung_event(b'{"event": "end", "trial": "a"}\n') == {"event": "end", "trial": "a"}
    for bad in (b"[]", b"null", b'{"event": "rung", "trial": "a", "rung": 0, "score": "x"}', b'{"event": "end"}'):
        assert parse_rung_event(bad) is None
