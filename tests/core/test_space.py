"""The experiment YAML format: every shipped file validates, and each mistake is one line."""

from pathlib import Path

import pytest

from tune_jobs.core.errors import ConfigError
from tune_jobs.core.plan import compose, plan
from tune_jobs.core.space import load_experiment
from tune_jobs.core.study import load_study, shipped_studies

ROOT = Path(__file__).resolve().parents[2]
SPACES = sorted((ROOT / "search_spaces").glob("*.yaml"))


@pytest.mark.parametrize("path", SPACES, ids=[p.stem for p in SPACES])
def test_every_shipped_experiment_file_validates_and_plans(path):
    exp = load_experiment(path)
    first = path.read_text().splitlines()[0]
    assert first.startswith("# python tune_jobs/"), "an experiment file's first line is the command that runs it"
    assert f"--experiment {path.stem}" in first
    study = load_study(exp.study)
    for profile in [p for p in study.profiles if p != "quick"]:
        for quick in (False, True):
            p = plan(compose(study, exp, profile=profile, quick=quick))
            assert p.count >= 1


def test_the_shipped_studies_are_found_by_name_without_a_list():
    assert shipped_studies() == ["autoencoder", "denoising", "phase1", "phase1a_lora"]
    for name in shipped_studies():
        assert load_study(name).name == name
    with pytest.raises(
        ConfigError,
        match=r"unknown study 'phase9'; the studies shipped here: autoencoder, denoising, phase1, phase1a_lora",
    ):
        load_study("phase9")


def write(tmp_path, text):
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    return path


GOOD = """\
study: phase1
metric: val/nmse
search: grid
space:
  data.n_components: {grid: [1, 2]}
"""


@pytest.mark.parametrize(
    "text,message",
    [
        ("study: phase1\nmetric: val/nmse\nspace: {data.n_components: {grid: [1, 2]}\n", "malformed YAML at line"),
        ("- a\n- b\n", "expected a mapping of keys"),
        (GOOD + "sapce: {}\n", "sapce: unknown key; did you mean 'space'?"),
        (GOOD.replace("search: grid", "search: bayes"), "search: expected one of grid, optuna, random"),
        (GOOD.replace("metric: val/nmse\n", ""), "metric: required"),
        (GOOD.replace("{grid: [1, 2]}", "{grdi: [1, 2]}"), "unknown value kind 'grdi'; did you mean 'grid'?"),
        (GOOD.replace("{grid: [1, 2]}", "{grid: []}"), "grid needs a non-empty list"),
        (GOOD.replace("{grid: [1, 2]}", "{grid: [1, 1]}"), "lists a value twice"),
        (GOOD.replace("{grid: [1, 2]}", "{uniform: [0, 1]}"), "a grid search takes only grid"),
        (
            GOOD.replace("search: grid", "search: optuna").replace("{grid: [1, 2]}", "{uniform: [2, 1]}"),
            "needs low < high",
        ),
        (
            GOOD.replace("search: grid", "search: optuna").replace("{grid: [1, 2]}", "{loguniform: [0, 1]}"),
            "loguniform needs low > 0",
        ),
        (GOOD.replace("search: grid", "search: optuna"), "write choice: [...] instead of grid"),
        (GOOD + "scheduler: {kind: pbt}\n", "scheduler: expected {kind: fifo}, {kind: asha, ...} or {kind: hyperband"),
        (GOOD + "scheduler: {kind: asha, grace: 2}\n", "scheduler.grace: unknown setting for asha"),
        (
            GOOD + "scheduler: {kind: hyperband, grace_period: 2}\n",
            "scheduler.grace_period: unknown setting for hyperband",
        ),
        (GOOD + "scheduler: {kind: asha, promote: 1}\n", "scheduler.promote: expected true or false"),
        (GOOD + "scheduler: {kind: asha, max_t: 4, grace_period: 5}\n", "scheduler.grace_period: 5 is above max_t=4"),
        (
            GOOD + "scheduler: {kind: asha, reduction_factor: 1}\n",
            "scheduler.reduction_factor: expected a finite number > 1",
        ),
        (GOOD + "resources: {gpus: 1}\n", "resources.gpus: unknown resource"),
        (GOOD + "num_samples: 0\n", "num_samples: expected an integer >= 1"),
        (GOOD + "goal: best\n", "goal: expected optimize (find the best trial) or measure"),
        # What YAML or the service would otherwise drop without a word.
        (GOOD + "space:\n  trainer.lr: {grid: [0.001]}\n", "key 'space' is written twice (lines 4 and 6)"),
        (GOOD + "mode: min\nmode: max\n", "key 'mode' is written twice (lines 6 and 7)"),
        (GOOD + "fixed: {trainer.steps: 5, trainer: {steps: 7}}\n", "fixed: trainer.steps is given twice (5 and 7)"),
        (GOOD + "fixed: {data.n_components: 3}\n", "fixed.data.n_components: is also searched in space:"),
        (GOOD + "num_samples: 5\n", "num_samples: a grid search runs each point of its space once"),
        (GOOD + "seed: 7\n", "seed: seeds the sampler of an optuna or random search"),
        (GOOD + "profiles: {local: [1, 2]}\n", "profiles.local: expected a mapping of settings"),
        (GOOD + "scheduler: {kind: hyperband, reduction_factor: .inf}\n", "expected a finite number > 1, got inf"),
        (
            GOOD.replace("search: grid", "search: optuna").replace("{grid: [1, 2]}", "{uniform: [0, .inf]}"),
            "expected a finite number, got inf",
        ),
    ],
)
def test_each_mistake_names_the_file_the_key_and_the_fix(tmp_path, text, message):
    with pytest.raises(ConfigError) as err:
        load_experiment(write(tmp_path, text))
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_goal_says_whether_a_sweep_has_a_best_trial(tmp_path):
    assert load_experiment(write(tmp_path, GOOD)).goal == "optimize"
    assert load_experiment(write(tmp_path, GOOD + "goal: measure\n")).goal == "measure"
    # The measurement grids shipped: the scaling studies and the reference runs.
    measured = {p.stem for p in SPACES if load_experiment(p).goal == "measure"}
    assert measured == {"phase1", "phase2", "phase3", "phase4", "reference_3blob"}


def test_missing_file():
    with pytest.raises(ConfigError, match="not found; pick one of search_spaces"):
        load_experiment(Path("/nonexistent/exp.yaml"))


def test_nested_and_dotted_fixed_settings_are_the_same(tmp_path):
    a = load_experiment(write(tmp_path, GOOD + "fixed: {trainer: {steps: 7}}\n"))
    b = load_experiment(write(tmp_path, GOOD + "fixed: {trainer.steps: 7}\n"))
    assert a.fixed == b.fixed == {"trainer.steps": 7}


def test_grid_is_expanded_in_file_order_with_the_first_key_outermost(tmp_path):
    exp = load_experiment(write(tmp_path, GOOD + "  data.noise_std: {grid: [0.0, 0.1]}\n"))
    p = plan(compose(load_study("phase1"), exp))
    assert [t.point for t in p.trials] == [
        {"data.n_components": 1, "data.noise_std": 0.0},
        {"data.n_components": 1, "data.noise_std": 0.1},
        {"data.n_components": 2, "data.noise_std": 0.0},
        {"data.n_components": 2, "data.noise_std": 0.1},
    ]
    assert [t.number for t in plan(compose(load_study("phase1"), exp), start_from=2, stop_at=3).trials] == [2, 3]


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["space.n_components=[0]"], "data.n_components: must be >= 1, got 0"),
        (["space.n_comp=[1]"], "space.n_comp: no such key"),
        (
            ["data.n_components=3"],
            "data.n_components is searched by exp.yaml; set its values with space.n_components=[...]",
        ),
        (["trainer.steps=abc"], "trainer.steps: expected an integer, got 'abc'"),
        (["trainer.steps"], "is not key=value"),
        (["profile=huge"], "profile 'huge' is not defined for phase1; use one of"),
        (["sweep.num_samples=0"], "sweep.num_samples: expected an integer >= 1"),
        (["resources.gpu=-1"], "resources.gpu: expected a number >= 0"),
    ],
)
def test_override_mistakes(tmp_path, overrides, message):
    exp = load_experiment(write(tmp_path, GOOD))
    with pytest.raises(ConfigError) as err:
        plan(compose(load_study("phase1"), exp, overrides=overrides))
    assert message in str(err.value)


@pytest.mark.parametrize(
    "override,message",
    [
        ("space.n_components=[]", "grid needs a non-empty list"),
        ("space.n_components={grdi: [1]}", "unknown value kind 'grdi'"),
        ("space.n_components={uniform: [1, 4]}", "a grid search takes only grid"),
    ],
)
def test_a_bad_space_override_is_named_as_the_override_not_as_the_yaml(tmp_path, override, message):
    exp = load_experiment(write(tmp_path, GOOD))
    with pytest.raises(ConfigError) as err:
        compose(load_study("phase1"), exp, overrides=[override])
    assert str(err.value).startswith("the override space.n_components: space.data.n_components: ")
    assert message in str(err.value) and "exp.yaml" not in str(err.value)


def test_space_override_by_leaf_name_replaces_the_grid(tmp_path):
    exp = load_experiment(write(tmp_path, GOOD))
    p = plan(compose(load_study("phase1"), exp, overrides=["space.n_components=[3,5]", "resources.cpu=2"]))
    assert [t.cfg.data.n_components for t in p.trials] == [3, 5]
    assert p.composed.experiment.resources["cpu"] == 2


def test_metric_must_be_reported_by_the_study(tmp_path):
    exp = load_experiment(write(tmp_path, GOOD.replace("val/nmse", "val/mse")))
    with pytest.raises(ConfigError, match="metric 'val/mse' is not reported by study phase1; it reports"):
        compose(load_study("phase1"), exp)


CONFIGS = """\
study: phase1
metric: val/nmse
space:
  model:
    grid:
      - {n_layer: 2}
      - {n_layer: 4, n_embd: 128}
  seed: {grid: [0, 1]}
"""


def test_a_grid_of_configurations_sets_several_keys_per_point(tmp_path):
    (tmp_path / "exp.yaml").write_text(CONFIGS)
    exp = load_experiment(tmp_path / "exp.yaml")
    p = plan(compose(load_study("phase1"), exp))
    assert [t.point for t in p.trials] == [
        {"model.n_layer": 2, "seed": 0},
        {"model.n_layer": 2, "seed": 1},
        {"model.n_layer": 4, "model.n_embd": 128, "seed": 0},
        {"model.n_layer": 4, "model.n_embd": 128, "seed": 1},
    ]
    assert p.trials[2].cfg.model.n_embd == 128 and p.trials[0].cfg.model.n_layer == 2
    with pytest.raises(ConfigError, match=r"model.n_embd is set by the 'model' configurations searched by exp.yaml"):
        compose(load_study("phase1"), exp, overrides=["model.n_embd=64"])
    compose(load_study("phase1"), exp, overrides=["model.n_head=2"])  # a key no configuration sets is free
    with pytest.raises(ConfigError, match=r"model.n_layer: must be >= 1, got 0"):
        plan(compose(load_study("phase1"), exp, overrides=["space.model=[{n_layer: 0}]"]))


@pytest.mark.parametrize(
    "text,kind",
    [
        ("scheduler: {kind: asha, max_t: 9, grace_period: 1, reduction_factor: 3}\n", "asha"),
        ("scheduler: {kind: asha, max_t: 9, promote: false}\n", "asha"),
        ("scheduler: {kind: hyperband, max_t: 9, reduction_factor: 3}\n", "hyperband"),
        ("scheduler: fifo\n", "fifo"),
    ],
)
def test_each_scheduler_kind_loads_with_its_settings(tmp_path, text, kind):
    exp = load_experiment(write(tmp_path, GOOD + text))
    assert exp.scheduler["kind"] == kind


def test_sweep_scheduler_overrides_are_checked_as_the_yaml_is(tmp_path):
    exp = load_experiment(write(tmp_path, GOOD + "scheduler: {kind: asha, max_t: 9, grace_period: 1}\n"))
    study = load_study("phase1")
    c = compose(study, exp, overrides=["sweep.scheduler.promote=false", "sweep.scheduler.reduction_factor=2"])
    assert dict(c.experiment.scheduler) == {
        "kind": "asha",
        "max_t": 9,
        "grace_period": 1,
        "promote": False,
        "reduction_factor": 2,
    }
    for override, message in (
        ("sweep.scheduler.grace_period=20", "sweep.scheduler.grace_period: 20 is above max_t=9"),
        ("sweep.scheduler.eta=3", "sweep.scheduler.eta: unknown setting for asha"),
        ("sweep.scheduler.kind=fifo", "the scheduler kind is the experiment's"),
        ("sweep.scheduler.max_t=2.5", r"sweep.scheduler.max_t: expected an integer >= 1, got 2.5"),
        ("sweep.scheduler.time_attr=stepz", "scheduler.time_attr: 'stepz' is not in the results of study phase1"),
        ("sweep.scheduler.rank_by=train/loss", r"sweep.scheduler.rank_mode: expected min or max \(how train/loss"),
        ("sweep.scheduler.rank_mode=min", r"sweep.scheduler.rank_by: expected the metric the rungs rank by"),
    ):
        with pytest.raises(ConfigError, match=message):
            compose(study, exp, overrides=[override])
    # Settings valid only together are checked once every override is in, in any order.
    both = ["sweep.scheduler.rank_mode=min", "sweep.scheduler.rank_by=train/loss"]
    assert compose(study, exp, overrides=both).experiment.scheduler["rank_by"] == "train/loss"
    later = ["sweep.scheduler.grace_period=20", "sweep.scheduler.max_t=30"]
    assert compose(study, exp, overrides=later).experiment.scheduler["max_t"] == 30
    for overrides, message in (
        ([*both, "sweep.scheduler.promote=false"], "only ASHA with promotion ranks by another metric"),
        (["sweep.scheduler.rank_by=val/nmsee", "sweep.scheduler.rank_mode=min"], "'val/nmsee' is not in the results"),
    ):
        with pytest.raises(ConfigError, match=message):
            compose(study, exp, overrides=overrides)


@pytest.mark.parametrize(
    "setting,message",
    [
        ("max_t: 2.5", "scheduler.max_t: expected an integer >= 1, got 2.5"),
        ("time_attr: stepz", "scheduler.time_attr: 'stepz' is not in the results of study phase1"),
    ],
)
def test_the_yaml_and_the_overrides_meet_the_same_scheduler_rules(tmp_path, setting, message):
    with pytest.raises(ConfigError, match=message):  # when the file loads, or when it meets the study
        settings = setting if setting.startswith("max_t") else f"max_t: 9, {setting}"
        exp = load_experiment(write(tmp_path, GOOD + f"scheduler: {{kind: asha, {settings}}}\n"))
        compose(load_study("phase1"), exp)
    ok = load_experiment(write(tmp_path, GOOD + "scheduler: {kind: asha, max_t: 9, time_attr: step}\n"))
    assert compose(load_study("phase1"), ok).experiment.scheduler["time_attr"] == "step"


def test_settings_the_study_would_ignore_or_fail_on_are_refused_when_composed(tmp_path):
    study = load_study("phase1")
    exp = load_experiment(write(tmp_path, GOOD + "profiles: {bogus: {trainer.steps: 5}}\n"))
    with pytest.raises(ConfigError, match=r"profiles.bogus: phase1 has no profile 'bogus'.*use one of local, full"):
        compose(study, exp)
    exp = load_experiment(write(tmp_path, GOOD))
    with pytest.raises(ConfigError, match=r"sweep.num_samples: exp.yaml is a grid search"):
        compose(study, exp, overrides=["sweep.num_samples=5"])
    with pytest.raises(ConfigError, match=r"profile=: no profile named; use one of local, full"):
        compose(study, exp, overrides=["profile="])
    sampled = GOOD.replace("search: grid", "search: optuna").replace("data.n_components: {grid: [1, 2]}", "{}")
    exp = load_experiment(write(tmp_path, sampled.replace("{}", "trainer.steps: {uniform: [10, 20]}")))
    with pytest.raises(
        ConfigError, match=r"uniform draws real numbers, but trainer.steps takes whole numbers; use randint: \[10, 20\]"
    ):
        plan(compose(study, exp))
    # Every value a small randint draws meets the rules across fields (n_head must divide n_embd = 64).
    exp = load_experiment(write(tmp_path, sampled.replace("{}", "model.n_head: {randint: [1, 8]}")))
    with pytest.raises(ConfigError, match=r"space.model.n_head value 3"):
        plan(compose(study, exp))
    exp = load_experiment(write(tmp_path, sampled.replace("{}", "model.n_head: {choice: [1, 2, 4, 8]}")))
    assert plan(compose(study, exp)).count == 1


def test_a_sweep_whose_trials_could_not_report_its_metric_or_reach_their_device_is_refused(tmp_path):
    denoising = load_study("denoising")
    exp = load_experiment(ROOT / "search_spaces" / "reference_3blob.yaml")
    with pytest.raises(ConfigError, match=r"blob/score is reported only when diagnostics.enabled=true, but trial"):
        plan(compose(denoising, exp, overrides=["diagnostics.enabled=false"]))
    exp = load_experiment(ROOT / "search_spaces" / "denoising_search.yaml")
    with pytest.raises(ConfigError, match=r"but this sweep has diagnostics.enabled=false"):
        plan(compose(denoising, exp, overrides=["diagnostics.enabled=false"]))
    phase1 = load_study("phase1")
    exp = load_experiment(write(tmp_path, GOOD))
    with pytest.raises(ConfigError, match=r"trainer.device=cuda, but Ray gives each trial no GPU \(resources.gpu=0\)"):
        plan(compose(phase1, exp, overrides=["trainer.device=cuda"]))
    assert plan(compose(phase1, exp, overrides=["trainer.device=cuda", "resources.gpu=0.5"])).count == 2
