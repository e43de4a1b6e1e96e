"""What an entry script declares: which trainable, which config, which metrics and report.

The functions a study names (train, estimate, validate, report) may be given as references,
"package.module:function", imported when first called: the training code imports torch and
more (seconds), while the CLI's checks of a sweep's settings need only the config. So bad input
is answered in a fraction of a second, and the report's plotting libraries load only to plot.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

# Study name -> module whose STUDY attribute declares it; used by `tune_jobs/report.py`.
STUDY_MODULES = {
    "phase1": "tune_jobs.phase1",
    "autoencoder": "tune_jobs.autoencoder",
    "denoising": "tune_jobs.denoising",
    "phase1a_lora": "tune_jobs.phase1a_lora",
}


@dataclass(frozen=True)
class Ref:
    """A function named "package.module:function", imported on its first call; pickles as its
    name, so a Ray worker imports it from its own copy of the code."""

    target: str

    def __post_init__(self) -> None:
        module, _, name = self.target.partition(":")
        if not module or not name:
            raise ValueError(f"{self.target!r}: a reference is 'package.module:function'")

    def resolve(self) -> Callable[..., Any]:
        module, _, name = self.target.partition(":")
        return getattr(importlib.import_module(module), name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.resolve()(*args, **kwargs)


_FUNCTIONS = ("train", "estimate", "validate", "report")


@dataclass(frozen=True)
class Study:
    name: str
    train: Callable[[Any, Any], None]
    config: type
    metrics: tuple[str, ...]
    default_experiment: str
    profiles: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    # Columns shown per trial by --dry-run (derived values a person wants to see).
    describe: Callable[[Any], Mapping[str, Any]] | None = None
    # Compute estimate per trial: {"params": ..., "flops": ...}.
    estimate: Callable[[Any], Mapping[str, float]] | None = None
    # Checks of a trial's config that need the outside world (a data file exists, holds the
    # right keys and shapes), run for every planned trial before Ray starts. Raises ValueError
    # (or ConfigError) with a message naming the setting, the value and the fix.
    validate: Callable[[Any], None] | None = None
    # Builds the study's report from a finished sweep's MLflow runs into a folder.
    report: Callable[..., list[Any]] | None = None
    # The compute of one trial run to its end, for the report's compute line: (units, their
    # name) from the trial's params as MLflow holds them (strings), e.g. (epochs, "epochs").
    budget: Callable[[Mapping[str, str]], tuple[int, str]] | None = None
    # The units a trial ran, from the steps at which it reported (the study's `step`); by
    # default the last step (a 0-based step counts one more).
    units_run: Callable[[Sequence[int]], int] = max

    def __post_init__(self) -> None:
        for f in fields(self):
            if f.name in _FUNCTIONS and isinstance(getattr(self, f.name), str):
                object.__setattr__(self, f.name, Ref(getattr(self, f.name)))


def load_study(name: str) -> Study:
    import importlib

    from tune_jobs.core.errors import ConfigError

    if name not in STUDY_MODULES:
        raise ConfigError(f"unknown study {name!r}; known studies: {', '.join(sorted(STUDY_MODULES))}")
    return importlib.import_module(STUDY_MODULES[name]).STUDY
