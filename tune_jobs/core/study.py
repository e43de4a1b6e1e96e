"""What an entry script declares: which trainable, which config, which metrics and report.

The functions a study names (train, estimate, validate, report) may be given as references,
"package.module:function", imported when first called: the training code imports torch and
more (seconds), while the CLI's checks of a sweep's settings need only the config. So bad input
is answered in a fraction of a second, and the report's plotting libraries load only to plot.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any


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
    # Metrics reported only when a setting holds, in `used_when` form: {"blob/score":
    # "diagnostics.enabled=true"}. A sweep on such a metric (or rungs ranked by it) with that
    # setting off in some trial is refused before Ray starts.
    metrics_when: Mapping[str, str] = field(default_factory=dict)
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


def declared_in(study: Study) -> dict[str, str]:
    """Where `study` is declared: the module holding it as `STUDY` and that module's file.

    A sweep records this (sweep.json, the parent run's tags), so that its report can be
    rebuilt and its records replayed for any study, in this repository or in a folder of the
    user's own, without a list of studies to keep."""
    holders = [(name, m) for name, m in list(sys.modules.items()) if getattr(m, "STUDY", None) is study]
    # The module that declares it, not an entry script that imports it (its __main__).
    holders.sort(key=lambda item: "STUDY = Study(" not in _source(item[1]))
    for name, module in holders:
        return {"module": name, "file": str(Path(getattr(module, "__file__", "") or "").resolve())}
    return {"module": "", "file": ""}


def _source(module: Any) -> str:
    try:
        return Path(module.__file__).read_text(errors="replace")
    except (AttributeError, TypeError, OSError):
        return ""


def load_study(name: str, module: str = "", file: str = "") -> Study:
    """The study a sweep recorded: from its module, else from the file declaring it (an entry
    script run as `python path/to/study.py` is the module `__main__`), else the declaration
    trainables/<name>/study.py of a study shipped here."""
    from tune_jobs.core.errors import ConfigError

    if module and module != "__main__":
        try:
            return _study_of(importlib.import_module(module), name)
        except ImportError:
            pass  # moved or renamed: its file, or the shipped script, may still declare it
    if file and Path(file).is_file():
        return _study_of(_import_file(Path(file), f"{FILE_MODULE}{name}"), name)
    shipped = _trainables() / name / "study.py"
    if shipped.is_file() and _declares_a_study(shipped):
        return _study_of(importlib.import_module(f"trainables.{name}.study"), name)
    if file:
        raise ConfigError(f"study {name!r} was declared in {file}, which is gone; put the file back there")
    raise ConfigError(f"unknown study {name!r}; the studies shipped here: {', '.join(shipped_studies())}")


def _trainables() -> Path:
    return Path(__file__).resolve().parents[2] / "trainables"


def shipped_studies() -> list[str]:
    """The studies of this repository: the packages trainables/<name>/ whose study.py declares
    a STUDY (each has its entry script tune_jobs/<name>.py)."""
    return sorted(p.parent.name for p in _trainables().glob("*/study.py") if _declares_a_study(p))


def _study_of(module: Any, name: str) -> Study:
    from tune_jobs.core.errors import ConfigError

    study = getattr(module, "STUDY", None)
    if not isinstance(study, Study) or study.name != name:
        raise ConfigError(f"{module.__name__} declares no study {name!r} as STUDY")
    return study


# The module name of a study imported from its file: Ray's workers cannot import it by name.
FILE_MODULE = "_study_"


def _import_file(path: Path, module_name: str) -> Any:
    """Import a study's entry script by path, as `python path` would see it (its folder first
    on sys.path, so that its own modules import); its `if __name__ == "__main__"` part does not run."""
    import importlib.util

    if module_name in sys.modules:
        return sys.modules[module_name]
    folder = str(path.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    spec = importlib.util.spec_from_file_location(module_name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def _declares_a_study(path: Path) -> bool:
    return "STUDY = Study(" in path.read_text(errors="replace")
