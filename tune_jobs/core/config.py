"""Typed configs: build a study's dataclass tree from dotted `key=value` settings and check it.

Every study config is a tree of dataclasses whose fields carry help text and bounds
(trainables.common.param). Settings arrive as a flat mapping of dotted keys
(`trainer.steps` -> 5001) from the study defaults, the experiment YAML, the profile and the
command line; `build_config` applies them in that order, coerces strings to the declared
type, and raises ConfigError naming the key, the value and the fix.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import typing
from collections.abc import Iterable, Iterator, Mapping
from functools import cache
from typing import Any

import yaml

from tune_jobs.core.errors import ConfigError


@cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def iter_fields(cls: type, prefix: str = "") -> Iterator[tuple[str, type, dataclasses.Field]]:
    """Every leaf field of a config tree as (dotted key, type, field)."""
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            yield from iter_fields(tp, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", tp, f


def field_table(cls: type) -> dict[str, tuple[type, dataclasses.Field]]:
    return {key: (tp, f) for key, tp, f in iter_fields(cls)}


def to_flat(cfg: Any, prefix: str = "") -> dict[str, Any]:
    """A config instance as {dotted key: value}, the form MLflow params and cfg.yaml use."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            out.update(to_flat(value, f"{prefix}{f.name}."))
        else:
            out[f"{prefix}{f.name}"] = value
    return out


def to_nested(flat: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in flat.items():
        node = out
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


def flatten_mapping(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested YAML mappings and dotted keys alike -> {dotted key: value}. A key reached both
    ways (`trainer.steps: 5` beside `trainer: {steps: 7}`) is a ConfigError, not a silent pick."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        items = (
            flatten_mapping(value, f"{prefix}{key}.")
            if isinstance(value, Mapping) and value
            else {f"{prefix}{key}": value}
        )
        for flat, v in items.items():
            if flat in out:
                raise ConfigError(f"{flat} is given twice ({out[flat]!r} and {v!r}); keep one")
            out[flat] = v
    return out


def unknown_key_message(key: str, known: list[str], where: str) -> str:
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    leaf_matches = [k for k in known if k.rsplit(".", 1)[-1] == key.rsplit(".", 1)[-1]]
    hint = close or leaf_matches
    fix = f"did you mean {hint[0]!r}?" if hint else "run with --help-config to list the keys"
    return f"{where}unknown key {key!r}; {fix}"


def parse_value(text: str) -> Any:
    """A command-line value, read as YAML (`[1,2]`, `true`, `0.5`); plain words stay strings."""
    try:
        return yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        return text


def coerce(key: str, tp: Any, value: Any) -> Any:
    """`value` as the declared type `tp`, or ConfigError saying what was expected."""
    origin = typing.get_origin(tp)
    if origin is typing.Union or (origin is not None and str(origin) == "<class 'types.UnionType'>"):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        tp = next(a for a in args if a is not type(None))
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected an integer, got {value!r}; e.g. {key}=100")
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        if isinstance(value, (int, float)):
            out = float(value)
        else:
            try:
                out = float(str(value))
            except ValueError:
                raise ConfigError(f"{key}: expected a number, got {value!r}; e.g. {key}=0.001") from None
        if not math.isfinite(out):
            raise ConfigError(f"{key}: expected a finite number, got {value!r}")
        return out
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key}: expected text, got {value!r}; quote it, e.g. {key}='...'")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list like [1, 2], got {value!r}")
        (item_tp, *_) = typing.get_args(tp) or (Any,)
        items = [v if item_tp is Any else coerce(f"{key}[{i}]", item_tp, v) for i, v in enumerate(value)]
        return type(value)(items) if origin is list else tuple(items)
    return value


def check_bounds(key: str, value: Any, meta: Mapping[str, Any]) -> None:
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        raise ConfigError(f"{key}: {value!r} is not one of {list(choices)}")
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return
    for name, ok, word in (
        ("ge", lambda v, b: v >= b, ">="),
        ("gt", lambda v, b: v > b, ">"),
        ("le", lambda v, b: v <= b, "<="),
        ("lt", lambda v, b: v < b, "<"),
    ):
        bound = meta.get(name)
        if bound is not None and not ok(value, bound):
            raise ConfigError(f"{key}: must be {word} {bound}, got {value!r}")


def _instantiate(cls: type, flat: Mapping[str, Any], prefix: str = "") -> Any:
    kwargs = {}
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            kwargs[f.name] = _instantiate(tp, flat, f"{prefix}{f.name}.")
        elif f"{prefix}{f.name}" in flat:
            kwargs[f.name] = flat[f"{prefix}{f.name}"]
    return cls(**kwargs)


def build_config(cls: type, *layers: Mapping[str, Any], where: str = "", cross_check: bool = True) -> Any:
    """Apply each layer of dotted settings over the defaults of `cls`, check, and return it.

    Types and bounds are always checked; `cross_check=False` skips the config's own `check()`
    (rules across fields), for a shared base that is only ever run with a point on top."""
    table = field_table(cls)
    values: dict[str, Any] = {}
    for layer in layers:
        for key, raw in layer.items():
            if key not in table:
                raise ConfigError(unknown_key_message(key, list(table), where))
            tp, f = table[key]
            value = coerce(f"{where}{key}", tp, raw)
            check_bounds(f"{where}{key}", value, f.metadata)
            values[key] = value
    cfg = _instantiate(cls, values)
    check = getattr(cfg, "check", None) if cross_check else None
    if check is not None:
        try:
            check()
        except ValueError as exc:
            raise ConfigError(f"{where}{exc}") from None
    return cfg


def _condition(text: str) -> tuple[str, str, str]:
    """`data.source=squad` -> ('data.source', '=', 'squad'); `loss.kd_weight>0` -> (..., '>', '0')
    (one condition; see _conditions for several)."""
    for op in ("=", ">"):
        if op in text:
            key, _, value = text.partition(op)
            return key.strip(), op, value.strip()
    raise ValueError(f"used_when {text!r} is not KEY=VALUE or KEY>NUMBER")


def _conditions(text: str) -> tuple[str, list[tuple[str, str, str]]]:
    """A `used_when` of one condition, or of several joined by ` and ` or by ` or ` (one kind
    per text): ('and' | 'or', [(key, op, value), ...])."""
    for joiner in ("or", "and"):
        parts = text.split(f" {joiner} ")
        if len(parts) > 1:
            return joiner, [_condition(part) for part in parts]
    return "and", [_condition(text)]


def switches(condition: str) -> list[str]:
    """The keys a `used_when` condition reads."""
    return [key for key, _, _ in _conditions(condition)[1]]


def switch_is_on(cls: type, flat: Mapping[str, Any], condition: str) -> bool:
    """Whether `condition` (a field's `used_when`) holds for the settings `flat` (all keys)."""
    table = field_table(cls)

    def holds(key: str, op: str, text: str) -> bool:
        value = flat[key]
        return value > float(text) if op == ">" else value == coerce(key, table[key][0], text)

    joiner, parts = _conditions(condition)
    return (any if joiner == "or" else all)(holds(*part) for part in parts)


def shown_switches(condition: str, flat: Mapping[str, Any]) -> str:
    """What the switches of `condition` are in `flat`, as a user would set them."""
    return ", ".join(f"{key}={_shown(flat[key])}" for key in switches(condition))


def unused_settings(cls: type, flat: Mapping[str, Any], given: Iterable[str], searched: Iterable[str] = ()) -> None:
    """ConfigError for the first of `given` keys set to a non-default value that the run would
    ignore because its switch (`used_when`) is off. `flat` holds every setting; a switch in
    `searched` is on for some trials, so what it switches is not unused."""
    table, defaults, searched = field_table(cls), to_flat(cls()), set(searched)
    for key in given:
        condition = table[key][1].metadata.get("used_when") if key in table else None
        if not condition or flat[key] == defaults[key]:
            continue
        if searched & set(switches(condition)) or switch_is_on(cls, flat, condition):
            continue
        want = condition + "''" if condition.endswith("=") else condition
        raise ConfigError(
            f"{key}={flat[key]!r} would be ignored: it is used only when {want} "
            f"(here {shown_switches(condition, flat)}); set {want} to use it, or drop {key}"
        )


def _shown(value: Any) -> str:
    """A value as a user would type it on the command line."""
    if isinstance(value, bool):
        return str(value).lower()
    return "''" if value == "" else str(value)


def describe_fields(cls: type) -> str:
    """The --help-config text: every key with its type, default and help."""
    lines = []
    defaults = to_flat(cls())
    for key, tp, f in iter_fields(cls):
        name = getattr(tp, "__name__", str(tp))
        when = f" (used when {f.metadata['used_when']})" if f.metadata.get("used_when") else ""
        lines.append(f"  {key} ({name}, default {defaults[key]!r}): {f.metadata.get('help', '')}{when}")
    return "\n".join(lines)
