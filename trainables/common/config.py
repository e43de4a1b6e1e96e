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
) -> Any:
    """A config field: its default, a one-line help text and the values it may take."""
    meta = {"help": help, "ge": ge, "gt": gt, "le": le, "lt": lt, "choices": choices}
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def section(cls: type, help: str) -> Any:
    """A nested group of fields (`data`, `model`, `trainer`, ...)."""
    return dataclasses.field(default_factory=cls, metadata={"help": help})
