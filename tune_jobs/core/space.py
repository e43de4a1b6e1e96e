"""The experiment YAML: one file per experiment under search_spaces/, validated on load.

    # python tune_jobs/phase1.py --experiment phase1
    study: phase1
    metric: val/nmse
    mode: min
    goal: measure           # measure (a grid of measurements: no "best") | optimize (the default)
    search: grid            # grid | optuna | random
    num_samples: 1          # trials to sample (optuna, random)
    seeds: 1                # each point run with this many seeds (seed, seed+1, ...), each its own trial
    scheduler: {kind: fifo} # or {kind: asha, max_t: 20, grace_period: 2, reduction_factor: 3}
                            # (promote: false: Ray Tune's stop-only ASHA), {kind: hyperband, ...}
                            # (rank_by: val/loss, rank_mode: min: rungs rank by another metric)
    resources: {cpu: 1, gpu: 0}        # per trial; gpu 0.25 shares a GPU between 4 trials
    fixed: {trainer.steps: 5001}       # settings of every trial
    space:                             # what varies: one value kind per key
      data.n_components: {grid: [1, 2, 4]}

Value kinds: grid / choice (lists), uniform / loguniform [lo, hi], randint [lo, hi] (hi
inclusive), quniform [lo, hi, q]. Every error names the file, the key and the fix.

Resources per trial: `cpu` (> 0), `gpu` (>= 0; a fraction below 1 shares one GPU, above 1 a
whole number) and `custom`, Ray custom resources the nodes were started with
(`ray start --resources='{"worker_slot": 1}'`): `custom: {worker_slot: 1}` runs a trial only
where a unit is free, e.g. one trial per node.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from tune_jobs.core.config import flatten_mapping
from tune_jobs.core.errors import ConfigError

SEARCH_KINDS = ("grid", "optuna", "random")
# What a sweep is for: `optimize` looks for the best trial by the metric (a search); `measure`
# takes every trial's value as a result (a scaling grid), so no trial is called best.
GOALS = ("optimize", "measure")
# Scheduler kinds and their settings (tune_jobs/core/schedulers.py says what each does): asha is
# ASHA with promotion (trials wait paused at a rung), `promote: false` Tune's stop-only ASHA.
SCHEDULERS = {
    "fifo": (),
    "asha": ("time_attr", "max_t", "grace_period", "reduction_factor", "promote", "rank_by", "rank_mode"),
    "hyperband": ("time_attr", "max_t", "reduction_factor"),
}
VALUE_KINDS = ("grid", "choice", "uniform", "loguniform", "randint", "quniform")
DEFAULT_RESOURCES: Mapping[str, Any] = {"cpu": 1, "gpu": 0, "custom": {}}
# Names Ray keeps for itself; a custom resource must not take them.
RAY_RESERVED = ("CPU", "GPU", "memory", "object_store_memory")
TOP_KEYS = (
    "study",
    "description",
    "metric",
    "mode",
    "goal",
    "search",
    "num_samples",
    "seeds",
    "max_concurrent",
    "scheduler",
    "resources",
    "max_failures",
    "seed",
    "fixed",
    "profiles",
    "space",
)


@dataclass(frozen=True)
class Dimension:
    key: str  # dotted config key
    kind: str
    values: tuple[Any, ...]  # the list (grid, choice) or the bounds (lo, hi[, q])

    def candidates(self) -> tuple[Any, ...]:
        """Values to validate against the config: every listed value; every value a randint of
        up to 256 values draws (both bounds included); else the bounds and, for the real-valued
        kinds, a point between them that is not a whole number."""
        if self.kind in ("grid", "choice"):
            return self.values
        lo, hi = self.values[:2]
        if self.kind == "randint":
            return tuple(range(lo, hi + 1)) if hi - lo < 256 else (lo, hi)
        if self.kind == "quniform":
            return (lo, hi)
        inner = math.sqrt(lo * hi) if self.kind == "loguniform" else (lo + hi) / 2
        if float(inner).is_integer():
            inner = lo + (hi - lo) * 0.371
        return (lo, hi, float(inner))


@dataclass(frozen=True)
class Experiment:
    name: str
    path: Path
    study: str
    metric: str
    mode: str
    goal: str = "optimize"
    search: str = "grid"
    num_samples: int = 1
    seeds: int = 1  # runs of each point, the config key `seed` counting up from its value
    max_concurrent: int = 0
    scheduler: Mapping[str, Any] = field(default_factory=lambda: {"kind": "fifo"})
    resources: Mapping[str, Any] = field(default_factory=lambda: dict(DEFAULT_RESOURCES))
    max_failures: int = 2
    seed: int = 0
    description: str = ""
    fixed: Mapping[str, Any] = field(default_factory=dict)
    profiles: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    space: tuple[Dimension, ...] = ()

    def dimension(self, name: str) -> Dimension:
        """A dimension by its key, or by its last part when that is unambiguous."""
        exact = [d for d in self.space if d.key == name]
        leaf = [d for d in self.space if d.key.rsplit(".", 1)[-1] == name]
        found = exact or leaf
        if len(found) == 1:
            return found[0]
        keys = [d.key for d in self.space]
        if not keys:
            raise ConfigError(f"space.{name}: experiment {self.name!r} has no search space")
        close = difflib.get_close_matches(name, keys, n=1)
        hint = f"did you mean space.{close[0]}?" if close else f"its keys are {', '.join(keys)}"
        raise ConfigError(f"space.{name}: no such key in the space of {self.path.name}; {hint}")

    def with_dimension(self, dim: Dimension) -> Experiment:
        return replace(self, space=tuple(dim if d.key == dim.key else d for d in self.space))


def _amount(key: str, value: Any, *, needed: bool) -> float:
    """One resource amount as Ray takes it: >= 0 (> 0 when `needed`), a fraction only below 1."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or (needed and value == 0):
        raise ConfigError(f"{key}: expected a number {'> 0' if needed else '>= 0'}, got {value!r}; e.g. {key}=1")
    if value > 1 and not float(value).is_integer():
        raise ConfigError(
            f"{key}: {value!r} is a fraction above 1; Ray shares a unit only below 1: use e.g. 0.25, 0.5, 1 or 2"
        )
    return int(value) if float(value).is_integer() else float(value)


def _custom(key: str, value: Any) -> dict[str, float]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{key}: expected a mapping of Ray custom resources like {{worker_slot: 1}}, got {value!r}")
    out = {}
    for name, amount in value.items():
        name = str(name)
        if name in RAY_RESERVED or name.lower() in ("cpu", "gpu") or not re.fullmatch(r"[A-Za-z_][\w.-]*", name):
            raise ConfigError(
                f"{key}.{name}: not a custom resource name; use a name your nodes were started with "
                "(ray start --resources='{\"worker_slot\": 1}'), and resources.cpu/gpu for CPUs and GPUs"
            )
        out[name] = _amount(f"{key}.{name}", amount, needed=True)
    return out


def set_resource(resources: Mapping[str, Any], key: str, value: Any) -> dict[str, Any]:
    """`resources` with `key` (cpu, gpu, custom or custom.NAME) set to `value`, checked.

    Errors start with `resources.<key>:` and say what Ray accepts.
    """
    res = {**resources, "custom": dict(resources.get("custom", {}))}
    where = f"resources.{key}"
    if key in ("cpu", "gpu"):
        res[key] = _amount(where, value, needed=key == "cpu")
    elif key == "custom":
        res["custom"] = _custom(where, value if value is not None else {})
    elif key.startswith("custom."):
        res["custom"].update(_custom("resources.custom", {key.split(".", 1)[1]: value}))
    else:
        close = difflib.get_close_matches(key, ("cpu", "gpu", "custom"), n=1)
        hint = f"did you mean resources.{close[0]}?" if close else "use cpu, gpu or custom: {name: amount}"
        raise ConfigError(f"{where}: unknown resource; {hint}")
    return res


def ray_resources(resources: Mapping[str, Any]) -> dict[str, float]:
    """What one trial asks Ray for (`tune.with_resources`): cpu, gpu and the custom resources."""
    return {"cpu": resources.get("cpu", 1), "gpu": resources.get("gpu", 0), **resources.get("custom", {})}


def slots(per_trial: Mapping[str, float], cluster: Mapping[str, float], max_concurrent: int = 0) -> int:
    """How many trials fit at once: the scarcest resource decides, capped by max_concurrent."""
    names = {"cpu": "CPU", "gpu": "GPU"}
    fits = [int(cluster.get(names.get(k, k), 0) // v + 1e-9) for k, v in per_trial.items() if v > 0]
    n = min(fits) if fits else 1
    return min(n, max_concurrent) if max_concurrent else n


def _fail(path: Path | str, key: str, message: str) -> ConfigError:
    return ConfigError(f"{path}: {key}: {message}")


def _number(path: Path | str, key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _fail(path, key, f"expected a finite number, got {value!r}")
    return value


def parse_dimension(path: Path | str, key: str, spec: Any, search: str) -> Dimension:
    """One `space:` entry, checked; errors start with `path` (the YAML file, or the override
    that gave it)."""
    where = f"space.{key}"
    if isinstance(spec, list):  # shorthand: a bare list is a grid (or a choice for samplers)
        spec = {"grid" if search == "grid" else "choice": spec}
    if not isinstance(spec, Mapping) or len(spec) != 1:
        raise _fail(path, where, f"expected one of {{{', '.join(VALUE_KINDS)}}}: [...], got {spec!r}")
    ((kind, values),) = spec.items()
    if kind not in VALUE_KINDS:
        close = difflib.get_close_matches(str(kind), VALUE_KINDS, n=1)
        raise _fail(
            path,
            where,
            f"unknown value kind {kind!r}"
            + (f"; did you mean {close[0]!r}?" if close else f"; use one of {', '.join(VALUE_KINDS)}"),
        )
    if not isinstance(values, list) or not values:
        raise _fail(path, where, f"{kind} needs a non-empty list, got {values!r}")
    if search == "grid" and kind != "grid":
        raise _fail(
            path,
            where,
            f"a grid search takes only grid: [...] values, got {kind}; use search: optuna or random for sampled values",
        )
    if search == "optuna" and kind == "grid":
        raise _fail(path, where, "optuna samples its values; write choice: [...] instead of grid: [...]")
    if kind in ("uniform", "loguniform", "randint"):
        if len(values) != 2:
            raise _fail(path, where, f"{kind} takes [low, high], got {values!r}")
        lo, hi = (_number(path, where, v) for v in values)
        if not lo < hi:
            raise _fail(path, where, f"{kind} needs low < high, got {values!r}")
        if kind == "loguniform" and lo <= 0:
            raise _fail(path, where, f"loguniform needs low > 0, got {values!r}")
        if kind == "randint" and not all(isinstance(v, int) for v in values):
            raise _fail(path, where, f"randint takes integer bounds, got {values!r}")
    if kind == "quniform":
        if len(values) != 3:
            raise _fail(path, where, f"quniform takes [low, high, q], got {values!r}")
        lo, hi, q = (_number(path, where, v) for v in values)
        if not lo < hi or q <= 0:
            raise _fail(path, where, f"quniform needs low < high and q > 0, got {values!r}")
    if kind in ("grid", "choice") and len({repr(v) for v in values}) != len(values):
        raise _fail(path, where, f"{kind} lists a value twice: {values!r}")
    return Dimension(key=key, kind=kind, values=tuple(values))


def scheduler_settings(scheduler: Any, where: str = "scheduler") -> dict[str, Any]:
    """The `scheduler:` settings, checked: ConfigError names `where.<setting>` and the fix."""
    if isinstance(scheduler, str):
        scheduler = {"kind": scheduler}
    if not isinstance(scheduler, Mapping) or scheduler.get("kind") not in SCHEDULERS:
        raise ConfigError(
            f"{where}: expected {{kind: fifo}}, {{kind: asha, ...}} or {{kind: hyperband, ...}}, got {scheduler!r}"
        )
    kind = scheduler["kind"]
    for key in scheduler:
        if key != "kind" and key not in SCHEDULERS[kind]:
            allowed = ", ".join(SCHEDULERS[kind]) or "nothing else"
            raise ConfigError(f"{where}.{key}: unknown setting for {kind}; allowed: {allowed}")
    for key in ("max_t", "grace_period"):
        value = scheduler.get(key, 1)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{where}.{key}: expected an integer >= 1, got {value!r}")
    if scheduler.get("grace_period", 1) > scheduler.get("max_t", scheduler.get("grace_period", 1)):
        raise ConfigError(
            f"{where}.grace_period: {scheduler['grace_period']} is above max_t={scheduler['max_t']}; "
            "the first rung must come before the end"
        )
    if "reduction_factor" in scheduler:
        rf = scheduler["reduction_factor"]
        if isinstance(rf, bool) or not isinstance(rf, (int, float)) or not 1 < rf < math.inf:
            raise ConfigError(f"{where}.reduction_factor: expected a finite number > 1, got {rf!r}")
    if "promote" in scheduler and not isinstance(scheduler["promote"], bool):
        raise ConfigError(f"{where}.promote: expected true or false, got {scheduler['promote']!r}")
    if "rank_by" in scheduler or "rank_mode" in scheduler:
        rank_by, rank_mode = scheduler.get("rank_by"), scheduler.get("rank_mode")
        if not isinstance(rank_by, str) or not rank_by:
            raise ConfigError(
                f"{where}.rank_by: expected the metric the rungs rank by (e.g. val/loss), got {rank_by!r}"
            )
        if rank_mode not in ("min", "max"):
            raise ConfigError(f"{where}.rank_mode: expected min or max (how {rank_by} ranks), got {rank_mode!r}")
        if scheduler.get("promote", True) is False:
            raise ConfigError(
                f"{where}.rank_by: only ASHA with promotion ranks by another metric; "
                "drop promote: false, or rank_by and rank_mode"
            )
    if "time_attr" in scheduler and not isinstance(scheduler["time_attr"], str):
        raise ConfigError(
            f"{where}.time_attr: expected a result key like training_iteration, got {scheduler['time_attr']!r}"
        )
    return dict(scheduler)


def _check_top(path: Path, data: Mapping[str, Any]) -> None:
    for key in data:
        if key not in TOP_KEYS:
            close = difflib.get_close_matches(str(key), TOP_KEYS, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"allowed: {', '.join(TOP_KEYS)}"
            raise _fail(path, str(key), f"unknown key; {hint}")
    for key in ("study", "metric"):
        if not isinstance(data.get(key), str) or not data.get(key):
            raise _fail(path, key, "required; see search_spaces/phase1.yaml for an example")


class _DuplicateKey(yaml.YAMLError):
    def __init__(self, key: Any, first: int, again: int) -> None:
        super().__init__(f"{key!r} appears twice (lines {first} and {again})")
        self.key, self.first, self.again = key, first, again


class _UniqueKeyLoader(yaml.SafeLoader):
    """safe_load that refuses a key written twice in one mapping: YAML would keep the last one
    and drop the first without a word (a second `space:` block, `mode:` twice)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                if key in seen:
                    raise _DuplicateKey(key, seen[key], line)
                seen[key] = line
            except TypeError:
                continue  # an unhashable key: the base constructor says so
        return super().construct_mapping(node, deep=deep)


def read_yaml(text: str) -> Any:
    """YAML as safe_load reads it (no code ever runs), refusing duplicate keys."""
    loader = _UniqueKeyLoader(text)  # as yaml.safe_load does, with the duplicate check
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def load_experiment(path: Path) -> Experiment:
    """Read and validate one experiment file (safe_load: a YAML file can never run code)."""
    if not path.is_file():
        raise ConfigError(
            f"experiment file {path} not found; pick one of search_spaces/*.yaml or pass --experiment PATH.yaml"
        )
    try:
        data = read_yaml(path.read_text())
    except _DuplicateKey as exc:
        raise ConfigError(
            f"{path}: key {exc.key!r} is written twice (lines {exc.first} and {exc.again}); YAML would keep "
            "only the last: merge the two into one"
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "malformed YAML"
        raise ConfigError(f"{path}: malformed YAML{where}: {problem}; fix the file's syntax") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the file: {exc}") from None
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path}: expected a mapping of keys (study, metric, space, ...), got {type(data).__name__}")
    _check_top(path, data)

    mode = data.get("mode", "min")
    if mode not in ("min", "max"):
        raise _fail(path, "mode", f"expected min or max, got {mode!r}")
    goal = data.get("goal", "optimize")
    if goal not in GOALS:
        raise _fail(
            path, "goal", f"expected optimize (find the best trial) or measure (every trial is a result), got {goal!r}"
        )
    search = data.get("search", "grid")
    if search not in SEARCH_KINDS:
        raise _fail(path, "search", f"expected one of {', '.join(SEARCH_KINDS)}, got {search!r}")
    for key, low in (("num_samples", 1), ("seeds", 1), ("max_concurrent", 0), ("max_failures", 0), ("seed", 0)):
        value = data.get(key, low)
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise _fail(path, key, f"expected an integer >= {low}, got {value!r}")

    try:
        scheduler = scheduler_settings(data.get("scheduler", {"kind": "fifo"}))
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None

    resources = data.get("resources", {})
    if not isinstance(resources, Mapping):
        raise _fail(path, "resources", f"expected {{cpu: 1, gpu: 0}}, got {resources!r}")
    res = dict(DEFAULT_RESOURCES)
    try:
        for key, value in resources.items():
            res = set_resource(res, str(key), value)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    if search == "grid" and data.get("num_samples", 1) != 1:
        raise _fail(
            path,
            "num_samples",
            "a grid search runs each point of its space once, so num_samples would be ignored; "
            "remove it, or use search: optuna or random to sample that many trials",
        )
    if search == "grid" and "seed" in data:
        raise _fail(
            path,
            "seed",
            "seeds the sampler of an optuna or random search; a grid draws nothing, so it would be ignored: "
            "remove it (the trials' own seed is the config key seed, set under fixed: or space:)",
        )
    for section in ("fixed", "profiles", "space"):
        if not isinstance(data.get(section) or {}, Mapping):
            raise _fail(path, section, f"expected a mapping, got {data[section]!r}")
    for name, values in (data.get("profiles") or {}).items():
        if not isinstance(values or {}, Mapping):
            raise _fail(path, f"profiles.{name}", f"expected a mapping of settings (key: value), got {values!r}")
    try:
        fixed = flatten_mapping(data.get("fixed") or {})
    except ConfigError as exc:
        raise _fail(path, "fixed", str(exc)) from None
    profiles = {}
    for name, values in (data.get("profiles") or {}).items():
        try:
            profiles[str(name)] = flatten_mapping(values or {})
        except ConfigError as exc:
            raise _fail(path, f"profiles.{name}", str(exc)) from None
    space = tuple(parse_dimension(path, str(k), v, search) for k, v in (data.get("space") or {}).items())
    if search != "grid" and not space:
        raise _fail(path, "space", f"a {search} search needs at least one dimension to sample")
    both = sorted(set(fixed) & {d.key for d in space})
    if both:
        raise _fail(
            path,
            f"fixed.{both[0]}",
            "is also searched in space:, which would override it in every trial; keep it in one of the two",
        )
    return Experiment(
        name=path.stem,
        path=path,
        study=data["study"],
        metric=data["metric"],
        mode=mode,
        goal=goal,
        search=search,
        num_samples=data.get("num_samples", 1),
        seeds=data.get("seeds", 1),
        max_concurrent=data.get("max_concurrent", 0),
        scheduler=dict(scheduler),
        resources=res,
        max_failures=data.get("max_failures", 2),
        seed=data.get("seed", 0),
        description=str(data.get("description", "")),
        fixed=fixed,
        profiles=profiles,
        space=space,
    )
