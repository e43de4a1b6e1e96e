"""The driver of an Optuna + ASHA sweep is SIGKILLed mid-sweep; `--resume` finishes it. No
finished trial runs again, the Optuna study keeps its history (the same trials with the same
values, then the rest), and every trial has exactly one MLflow run whose history has no gap
and no duplicate step. (The grid case is in test_sweep.py.)"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from helpers import crash_when, run_job, start_job, sweep_runs, sweep_state

SAMPLES = 6
EXPERIMENT = f"""\
# python tune_jobs/phase1.py --experiment lr_asha.yaml
study: phase1
metric: val/nmse
mode: min
search: optuna
num_samples: {SAMPLES}
max_concurrent: 2
seed: 5
scheduler: {{kind: asha, max_t: 16, grace_period: 4, reduction_factor: 2}}
fixed:
  data.n_components: 2
space:
  trainer.lr: {{loguniform: [0.0001, 0.01]}}
  model.n_layer: {{choice: [1, 2]}}
"""
ARGS = [
    "--quick",
    "trainer.steps=300",
    "trainer.eval_every=20",
    "trainer.checkpoint_every=40",
    "trainer.eval_prompts=64",
]


def optuna_trials(sweep_dir: Path) -> list:
    import optuna

    (summary,) = optuna.get_all_study_summaries(f"sqlite:///{sweep_dir / 'optuna.db'}")
    study = optuna.load_study(study_name=summary.study_name, storage=f"sqlite:///{sweep_dir / 'optuna.db'}")
    return study.get_trials(deepcopy=False)


@pytest.mark.slow
def test_optuna_asha_driver_killed_then_resumed_keeps_the_study_and_one_run_per_trial(workdir, tmp_path):
    path = tmp_path / "lr_asha.yaml"
    path.write_text(EXPERIMENT)

    def two_ended_one_running() -> Path | None:
        for sweep_dir in (workdir / "results" / "ray").glob("lr_asha-*"):
            trials = sweep_state(sweep_dir)["trials"].values()
            if sum("status" in t for t in trials) >= 2 and any("status" not in t for t in trials):
                return sweep_dir
        return None

    driver = start_job(["phase1.py", "--experiment", str(path), *ARGS], workdir)
    sweep_dir = crash_when(driver, two_ended_one_running, within=500, settle=0.5)
    before = sweep_state(sweep_dir)
    finished_before = {tid for tid, t in before["trials"].items() if "status" in t}
    rows_before = {p.parent.name: p.read_text() for p in sweep_dir.glob("*/result.json")}
    done_in_optuna = {t.number: (t.params, t.value) for t in optuna_trials(sweep_dir) if t.state.name == "COMPLETE"}
    assert done_in_optuna, "no Optuna trial had completed before the kill"
    time.sleep(2)

    out = run_job(["phase1.py", "--experiment", str(path), "--resume"], workdir, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]

    # The Optuna study kept its history: the same completed trials, then the rest.
    after = optuna_trials(sweep_dir)
    for number, (params, value) in done_in_optuna.items():
        assert (after[number].params, after[number].value) == (params, value)
    assert sum(t.state.name == "COMPLETE" for t in after) == SAMPLES
    assert not [t.number for t in after if t.state.name == "RUNNING"]  # none left running forever

    # No finished trial ran again.
    for name, text in rows_before.items():
        if any(name.endswith(tid) for tid in finished_before):
            assert (sweep_dir / name / "result.json").read_text() == text, f"{name} ran again"

    # One MLflow run per trial, each history without gap or duplicate; ASHA cut some short.
    client, parents, trials = sweep_runs(workdir, "lr_asha")
    assert len(parents) == 1 and len(trials) == SAMPLES
    lengths = []
    for r in trials:
        assert r.info.status == "FINISHED", r.info.run_name
        steps = [m.step for m in client.get_metric_history(r.info.run_id, "val/nmse")]
        evals = list(range(0, 300, 20)) + [299]
        assert sorted(steps) == evals[: len(steps)], (r.info.run_name, steps)
        lengths.append(len(steps))
    assert min(lengths) < max(lengths) == 16


def test_an_optuna_trial_asked_for_by_a_driver_killed_before_it_started_is_filed_as_failed(tmp_path):
    import optuna

    from tune_jobs.core.search import close_orphan_optuna_trials

    assert close_orphan_optuna_trials(tmp_path) == 0  # no Optuna search here
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'optuna.db'}", study_name="s")
    done, orphan = study.ask(), study.ask()
    study.tell(done, 0.5)
    assert close_orphan_optuna_trials(tmp_path) == 1
    states = {t.number: t.state.name for t in optuna_trials(tmp_path)}
    assert states == {done.number: "COMPLETE", orphan.number: "FAIL"}
    assert close_orphan_optuna_trials(tmp_path) == 0
