"""Compose a sweep (defaults <- study profile <- experiment YAML <- quick <- overrides) and expand its trials.

Everything here is pure and fast: a bad key, type or value fails with ConfigError before
Ray starts or any file is written.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from tune_jobs.core.config import (
    build_config,
    field_table,
    flatten_mapping,
    parse_value,
    shown_switches,
    switch_is_on,
    switches,
    to_flat,
    unused_settings,
)
from tune_jobs.core.errors import ConfigError
from tune_jobs.core.space import Dimension, Experiment, parse_dimension, scheduler_settings, set_resource
from tune_jobs.core.study import Study

SWEEP_KEYS = {"num_samples": 1, "seeds": 1, "max_concurrent": 0, "max_failures": 0}
# The config key `seeds: N` counts up (every study's top-level `seed`: what training draws).
SEED_KEY = "seed"


@dataclass
class Composed:
    study: Study
    experiment: Experiment
    profile: str
    quick: bool
    base: dict[str, Any]  # dotted settings common to every trial (not yet defaults-filled)
    overrides: list[str] = field(default_factory=list)
    # Where each key of `base` was set (see PRECEDENCE), for --dry-run.
    sources: dict[str, str] = field(default_factory=dict)

    @property
    def base_flat(self) -> dict[str, Any]:
        """Every setting of the shared config, defaults included (MLflow params, cfg.yaml)."""
        return to_flat(build_config(self.study.config, self.base, cross_check=False))


@dataclass(frozen=True)
class PlannedTrial:
    number: int  # 1-based position in the grid, as --dry-run shows it
    point: dict[str, Any]  # the searched values of this trial (dotted keys)
    cfg: Any


@dataclass
class Plan:
    composed: Composed
    trials: list[PlannedTrial]  # grid: the trials; optuna/random: empty (sampled at run time)

    @property
    def sampled(self) -> bool:
        return self.composed.experiment.search != "grid"

    @property
    def count(self) -> int:
        """The sweep's trials: a search's samples run on each of their seeds, or the grid's."""
        exp = self.composed.experiment
        return exp.num_samples * exp.seeds if self.sampled else len(self.trials)


def study_profiles(study: Study) -> dict[str, Mapping[str, Any]]:
    """The study's profiles by name; one without profiles runs its defaults as "local". `quick`
    is --quick's, not one to name with profile=."""
    return {"local": {}, **study.profiles}


def split_override(token: str) -> tuple[str, Any]:
    key, sep, text = token.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"override {token!r} is not key=value; write e.g. trainer.steps=100")
    if not re.fullmatch(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*", key):
        raise ConfigError(f"override key {key!r} is not a dotted name like trainer.steps")
    return key, parse_value(text)


def _override_dimension(exp: Experiment, name: str, value: Any) -> Experiment:
    dim = exp.dimension(name)
    where = f"the override space.{name}"  # its mistakes are the override's, not the YAML's
    if isinstance(value, dict):
        new = parse_dimension(where, dim.key, value, exp.search)
    else:
        values = value if isinstance(value, list) else [value]
        kind = dim.kind if dim.kind in ("grid", "choice") else ("grid" if exp.search == "grid" else "choice")
        new = parse_dimension(where, dim.key, {kind: values}, exp.search)
    return exp.with_dimension(new)


def _sweep_setting(exp: Experiment, key: str, value: Any) -> Experiment:
    name = key.split(".", 1)[1]
    if name.startswith("scheduler."):
        # Any setting of the experiment's scheduler kind (sweep.scheduler.max_t=9,
        # sweep.scheduler.promote=false), checked as the YAML's are once every override is in:
        # some settings are only valid together (rank_by and rank_mode, grace_period <= max_t).
        setting = name.split(".", 1)[1]
        if setting == "kind":
            raise ConfigError(f"{key}: the scheduler kind is the experiment's; change scheduler: in {exp.path.name}")
        return replace(exp, scheduler={**exp.scheduler, setting: value})
    if name not in SWEEP_KEYS:
        raise ConfigError(
            f"{key}: unknown sweep setting; use sweep.num_samples, sweep.seeds, sweep.max_concurrent, sweep.max_failures or sweep.scheduler.<setting>"
        )
    if isinstance(value, bool) or not isinstance(value, int) or value < SWEEP_KEYS[name]:
        raise ConfigError(f"{key}: expected an integer >= {SWEEP_KEYS[name]}, got {value!r}")
    if name == "num_samples" and exp.search == "grid":
        raise ConfigError(
            f"{key}: {exp.path.name} is a grid search, which runs each point of its space once, so "
            "num_samples would be ignored; drop it (an optuna or random search samples that many trials)"
        )
    return replace(exp, **{name: value})


def _resource(exp: Experiment, key: str, value: Any) -> Experiment:
    return replace(exp, resources=set_resource(exp.resources, key.split(".", 1)[1], value))


def compose(
    study: Study,
    experiment: Experiment,
    *,
    profile: str | None = None,
    quick: bool = False,
    overrides: Sequence[str] = (),
) -> Composed:
    if experiment.study != study.name:
        raise ConfigError(
            f"{experiment.path}: study is {experiment.study!r}, but this is the {study.name!r} "
            f"entry point; run python tune_jobs/{experiment.study}.py --experiment {experiment.name}"
        )
    if experiment.metric not in study.metrics:
        raise ConfigError(
            f"{experiment.path}: metric {experiment.metric!r} is not reported by study {study.name}; "
            f"it reports {', '.join(m for m in study.metrics if m != 'step')}"
        )
    parsed = [split_override(t) for t in overrides]
    profiles = study_profiles(study)
    allowed = [p for p in profiles if p != "quick"]
    for key, value in parsed:
        if key == "profile":
            if value is None or str(value).strip() == "":
                raise ConfigError(f"profile=: no profile named; use one of {', '.join(allowed)}")
            profile = str(value)
    profile = profile or "local"
    if profile not in profiles or profile == "quick":
        raise ConfigError(f"profile {profile!r} is not defined for {study.name}; use one of {', '.join(allowed)}")
    for name in experiment.profiles:
        if name not in profiles:
            raise ConfigError(
                f"{experiment.path}: profiles.{name}: {study.name} has no profile {name!r}, so these settings "
                f"would never run; use one of {', '.join(profiles)}"
            )

    # What the YAML says is what runs: its `fixed:` over the study's profile, its own
    # per-profile values over both; --quick shrinks whatever that gives; overrides last.
    layers = [
        (f"profile {profile}", profiles[profile]),
        ("experiment", experiment.fixed),
        (f"experiment, profile {profile}", experiment.profiles.get(profile, {})),
    ]
    if quick:
        layers += [
            ("quick", study.profiles.get("quick", {})),
            ("experiment, quick", experiment.profiles.get("quick", {})),
        ]
    base: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for source, values in layers:
        base.update(values)
        sources.update(dict.fromkeys(values, source))
    searched = {d.key for d in experiment.space}
    grouped = {  # keys set together by a grid of configurations (mapping values)
        k: d.key
        for d in experiment.space
        for v in d.values
        if isinstance(v, dict)
        for k in flatten_mapping(v, f"{d.key}.")
    }
    for key, value in parsed:
        if key == "profile":
            continue
        if key.startswith("space."):
            experiment = _override_dimension(experiment, key[len("space.") :], value)
        elif key.startswith("sweep."):
            experiment = _sweep_setting(experiment, key, value)
        elif key.startswith("resources."):
            experiment = _resource(experiment, key, value)
        elif key in searched:
            leaf = key.rsplit(".", 1)[-1]
            raise ConfigError(f"{key} is searched by {experiment.path.name}; set its values with space.{leaf}=[...]")
        elif key in grouped:
            raise ConfigError(
                f"{key} is set by the {grouped[key]!r} configurations searched by {experiment.path.name}; "
                f"change them with space.{grouped[key]}=[{{...}}, ...]"
            )
        else:
            base[key] = value
            sources[key] = "override"
    if any(key.startswith("sweep.scheduler.") for key, _ in parsed):
        experiment = replace(experiment, scheduler=scheduler_settings(experiment.scheduler, where="sweep.scheduler"))
    check_time_attr(experiment, study)
    check_seeds(experiment, study)
    composed = Composed(
        study=study,
        experiment=experiment,
        profile=profile,
        quick=quick,
        base=base,
        overrides=list(overrides),
        sources=sources,
    )
    # The settings every trial shares must be valid on their own; when a grid of configurations
    # sets keys together (grouped), the rules across fields are checked per trial in plan().
    shared = build_config(study.config, base, cross_check=not grouped)
    # What the user wrote (the YAML, the overrides) must be used; a study profile may set
    # settings that a switch the user flipped then leaves unused.
    given = [*experiment.fixed, *experiment.profiles.get(profile, {}), *(k for k, _ in parsed)]
    if quick:
        given += list(experiment.profiles.get("quick", {}))
    searched_now = {d.key for d in experiment.space} | set(grouped)
    unused_settings(study.config, to_flat(shared), dict.fromkeys(given), searched_now)
    return composed


# Keys Tune adds to every result, which a scheduler may count in as well as the study's own.
TUNE_RESULT_KEYS = ("training_iteration", "time_total_s", "time_this_iter_s")


def check_time_attr(experiment: Experiment, study: Any) -> None:
    """A scheduler's `time_attr` and `rank_by` must be keys every result carries: one the
    scheduler never sees would leave every trial unscheduled (never stopped, never promoted),
    silently."""
    attr = experiment.scheduler.get("time_attr")
    if attr is not None and attr not in TUNE_RESULT_KEYS and attr not in study.metrics:
        allowed = ", ".join([*TUNE_RESULT_KEYS, *study.metrics])
        raise ConfigError(
            f"scheduler.time_attr: {attr!r} is not in the results of study {study.name}; use one of {allowed}"
        )
    rank_by = experiment.scheduler.get("rank_by")
    if rank_by is not None and rank_by not in study.metrics:
        raise ConfigError(
            f"scheduler.rank_by: {rank_by!r} is not in the results of study {study.name}; "
            f"use one of {', '.join(study.metrics)}"
        )


def check_seeds(experiment: Experiment, study: Study) -> None:
    """`seeds: N` runs every point of a grid, or every point an Optuna search suggests, N times,
    `seed` counting up. Refused where it would not mean that: a study without a `seed` setting, a
    space that already searches it, a random search (its samples are seeds of their own: each
    point is drawn once), an early-stopping scheduler (it would stop a point's seeds one by one,
    on one seed's noise)."""
    n = experiment.seeds
    if n == 1:
        return
    where = f"seeds: {n}"
    if SEED_KEY not in field_table(study.config):
        raise ConfigError(
            f"{where}: study {study.name} has no `seed` setting to vary; add one to its config, or drop seeds"
        )
    if any(d.key == SEED_KEY for d in experiment.space):
        raise ConfigError(
            f"{where}: {experiment.path.name} already searches seed in space:; keep one of the two "
            "(seeds: N runs seed, seed+1, ... for every point)"
        )
    if experiment.search == "random":
        raise ConfigError(
            f"{where}: a random search draws each point once, so no point would run on several seeds; "
            "use search: grid or search: optuna, or drop seeds"
        )
    if experiment.scheduler.get("kind", "fifo") != "fifo":
        raise ConfigError(
            f"{where}: {experiment.scheduler['kind']} would stop a point's seeds one by one, on one seed's noise; "
            "use scheduler: {kind: fifo} with seeds, or drop seeds"
        )


def _check_searched_used(cls: type, trials: Sequence[tuple[Sequence[str], dict[str, Any]]]) -> None:
    """A searched key that no trial uses (its switch is off wherever it is set) is a mistake.

    `trials` holds each trial's searched keys and its whole config as {dotted key: value}."""
    table = field_table(cls)
    used: dict[str, bool] = {}
    for keys, flat in trials:
        for key in keys:
            condition = table[key][1].metadata.get("used_when") if key in table else None
            if condition:
                used[key] = used.get(key, False) or switch_is_on(cls, flat, condition)
    for key, ok in used.items():
        if not ok:
            condition = table[key][1].metadata["used_when"]
            raise ConfigError(
                f"{key} is searched, but it is used only when {condition}, which no trial sets; "
                f"add {condition} to fixed: (or the overrides), or drop it from the space"
            )


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def trial_label(point: dict[str, Any]) -> str:
    """`n_components=4,lr=0.001`: the searched values by their last key part."""
    return ",".join(f"{k.rsplit('.', 1)[-1]}={_fmt(v)}" for k, v in point.items()) or "default"


MAX_GRID = 10_000  # a grid larger than this is a typo far more often than a plan


def _grid_points(space: Sequence[Dimension]) -> list[dict[str, Any]]:
    """The grid's points in order. A grid value that is a mapping sets several keys together:
    `lora: {grid: [{enabled: false}, {r: 4, alpha: 8}]}` gives points {lora.enabled: false} and
    {lora.r: 4, lora.alpha: 8} (a list of named configurations, not a product)."""
    size = math.prod(len(d.values) for d in space)
    if size > MAX_GRID:
        sizes = " x ".join(f"{d.key}: {len(d.values)}" for d in space)
        raise ConfigError(
            f"the grid has {size} trials ({sizes}); more than {MAX_GRID} is not run: "
            "shorten the lists or use search: optuna with num_samples"
        )
    points = []
    for combo in itertools.product(*(d.values for d in space)):
        point: dict[str, Any] = {}
        for dim, value in zip(space, combo, strict=True):
            if isinstance(value, dict):
                point.update(flatten_mapping(value, f"{dim.key}."))
            else:
                point[dim.key] = value
        points.append(point)
    return points


def first_seed(composed: Composed) -> int:
    """The seed a point's first trial runs on (the composed config's `seed`)."""
    return getattr(build_config(composed.study.config, composed.base, cross_check=False), SEED_KEY)


def _with_seeds(points: list[dict[str, Any]], composed: Composed) -> list[dict[str, Any]]:
    """Each point `seeds` times, seed counting up from the configured one, a point's seeds together."""
    n = composed.experiment.seeds
    if n == 1:
        return points
    first = first_seed(composed)
    return [{**point, SEED_KEY: first + i} for point in points for i in range(n)]


def plan(composed: Composed, *, start_from: int | None = None, stop_at: int | None = None) -> Plan:
    exp, cls = composed.experiment, composed.study.config
    if exp.search != "grid":
        if start_from is not None or stop_at is not None:
            raise ConfigError(
                "--start-from/--stop-at select trials of a grid; an optuna or random search samples sweep.num_samples trials"
            )
        table = field_table(cls)
        for dim in exp.space:
            tp = table[dim.key][0] if dim.key in table else None
            if dim.kind in ("uniform", "loguniform") and tp is int:
                lo, hi = dim.values
                raise ConfigError(
                    f"space.{dim.key}: {dim.kind} draws real numbers, but {dim.key} takes whole numbers; "
                    f"use randint: [{math.ceil(lo)}, {math.floor(hi)}] or choice: [...]"
                )
            for value in dim.candidates():
                try:
                    build_config(cls, composed.base, {dim.key: value})
                except ConfigError as exc:
                    raise ConfigError(f"space.{dim.key} value {value!r}: {exc}") from None
        shared = build_config(cls, composed.base)
        validate(composed.study, shared)
        if not any(d.key in _switches(cls) for d in exp.space):
            _check_searched_used(cls, [([d.key for d in exp.space], to_flat(shared))])
        flat = to_flat(shared)
        variants = [{**flat, d.key: v} for d in exp.space for v in d.candidates()] or [flat]
        _check_given_used(composed, variants, {d.key for d in exp.space})
        _check_metrics_reported(composed, [("", v) for v in variants])
        _check_devices(composed, [("", v) for v in variants])
        return Plan(composed=composed, trials=[])

    points = _with_seeds(_grid_points(exp.space), composed)
    first = 1 if start_from is None else start_from
    last = len(points) if stop_at is None else stop_at
    if not 1 <= first <= last <= len(points):
        raise ConfigError(
            f"--start-from {first} --stop-at {last}: the grid has trials 1..{len(points)}; pick 1 <= start <= stop <= {len(points)}"
        )
    trials = []
    for number, point in enumerate(points, start=1):
        if not first <= number <= last:
            continue
        try:
            cfg = build_config(cls, composed.base, point)
        except ConfigError as exc:
            raise ConfigError(f"space ({trial_label(point)}): {exc}") from None
        validate(composed.study, cfg)
        trials.append(PlannedTrial(number=number, point=point, cfg=cfg))
    _check_searched_used(cls, [(list(t.point), to_flat(t.cfg)) for t in trials])
    flat = to_flat(build_config(cls, composed.base, cross_check=False))
    searched = {key for point in points for key in point}
    _check_given_used(composed, [{**flat, **point} for point in points], searched)  # every point, whatever slice runs
    every = [(trial_label(point), {**flat, **point}) for point in points]
    _check_metrics_reported(composed, every)
    _check_devices(composed, every)
    return Plan(composed=composed, trials=trials)


def _check_devices(composed: Composed, trials: Sequence[tuple[str, Mapping[str, Any]]]) -> None:
    """A trial told to train on CUDA (a `device` setting) must be given a GPU by Ray."""
    if composed.experiment.resources.get("gpu", 0) > 0:
        return
    for _, flat in trials:
        for key, value in flat.items():
            if key.rsplit(".", 1)[-1] == "device" and value == "cuda":
                raise ConfigError(
                    f"{key}=cuda, but Ray gives each trial no GPU (resources.gpu=0); set resources.gpu=1 "
                    f"(a fraction shares one GPU), or {key}=auto"
                )


def _check_metrics_reported(composed: Composed, trials: Sequence[tuple[str, Mapping[str, Any]]]) -> None:
    """The sweep's metric (and the rungs' rank_by) must be reported by every trial: a study's
    `metrics_when` names the setting some metrics need (the denoising blob/* metrics come from
    its diagnostics). A trial without it would fail Tune's metric check after Ray started."""
    exp, cls = composed.experiment, composed.study.config
    for metric in (exp.metric, exp.scheduler.get("rank_by")):
        condition = composed.study.metrics_when.get(metric) if metric else None
        if not condition:
            continue
        for label, flat in trials:
            if not switch_is_on(cls, flat, condition):
                which = f"trial {label}" if label else "this sweep"
                raise ConfigError(
                    f"{metric} is reported only when {condition}, but {which} has {shown_switches(condition, flat)}; "
                    f"set {condition}, or sweep another metric (--experiment with metric: ...)"
                )


def _check_given_used(composed: Composed, variants: Sequence[Mapping[str, Any]], searched: set[str]) -> None:
    """A setting the YAML or an override gives, whose switch the space searches, must be used
    by some trial (`vq.codebook_size=64` with `space.latent_space=[linear]` is used by none).
    `variants` are the trials' settings (a grid's points; a sampled search's candidates)."""
    cls = composed.study.config
    table, defaults = field_table(cls), to_flat(cls())
    for key, source in composed.sources.items():
        condition = table[key][1].metadata.get("used_when") if key in table else None
        if not condition or not (source.startswith("experiment") or source == "override"):
            continue
        searched_switches = [k for k in switches(condition) if k in searched]
        if not searched_switches or composed.base[key] == defaults[key]:
            continue
        switch = searched_switches[0]
        if not any(switch_is_on(cls, v, condition) for v in variants):
            raise ConfigError(
                f"{key}={composed.base[key]!r} would be ignored: it is used only when {condition}, and no "
                f"trial sets that ({switch} is searched over other values); add it to the searched values "
                f"(space.{switch.rsplit('.', 1)[-1]}=[...]), or drop {key}"
            )


def _switches(cls: type) -> set[str]:
    """Keys that switch other settings on (named in some field's `used_when`)."""
    from tune_jobs.core.config import iter_fields

    return {
        key for _, _, f in iter_fields(cls) if f.metadata.get("used_when") for key in switches(f.metadata["used_when"])
    }


def validate(study: Study, cfg: Any) -> None:
    """The study's own checks of one trial's config (data files and the like), as ConfigError."""
    if study.validate is None:
        return
    try:
        study.validate(cfg)
    except ConfigError:
        raise
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
