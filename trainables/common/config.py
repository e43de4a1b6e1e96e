"""Typed config fields with their help text and allowed range.

A study's config is a tree of plain dataclasses. `param` attaches the help text (shown by
`--help-config`) and the bounds that the sweep service checks before anything runs; the
training code only reads attributes and never imports the config system.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any


def param(
    default: Any,
    help: str,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    choices: Sequence[Any] | None = None,
    used_when: str | None = None,
) -> Any:
    """A config field: its default, a one-line help text and the values it may take.

    `used_when` names the setting that switches this one on, as `KEY=VALUE` (`data.source=squad`,
    `lora.enabled=true`, `data.path=` for empty) or `KEY>0`, or several such joined by ` and `
    or by ` or ` (`loss.k_ce_weight>0 or loss.kd_weight>0`): setting this field while the switch
    is off is an error naming the switch, since the run would silently ignore it."""
    meta = {"help": help, "ge": ge, "gt": gt, "le": le, "lt": lt, "choices": choices, "used_when": used_when}
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def section(cls: type, help: str) -> Any:
    """A nested group of fields (`data`, `model`, `trainer`, ...)."""
    return dataclasses.field(default_factory=cls, metadata={"help": help})
