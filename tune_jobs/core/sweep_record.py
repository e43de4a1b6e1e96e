"""A sweep's description (sweep.json), written beside Ray's experiment state before the first
trial starts and read back by `--resume`, `report.py --replay` and the report: the study and
where it is declared, the experiment file, profile, --quick and overrides, the composed base
config, the planned points and the MLflow URI. A resumed sweep runs exactly what it started
with, whatever has changed in the YAML since. One typed record, read in one place."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from tune_jobs.core.errors import ConfigError, one_line

SWEEP_FILE = "sweep.json"


@dataclass(frozen=True)
class SweepRecord:
    study: str
    sweep_id: str
    tracking_uri: str
    experiment: str = ""  # a replay needs only the three above
    experiment_file: str = ""
    profile: str = "local"
    study_module: str = ""  # empty in sweeps recorded before studies were found by module
    study_file: str = ""
    entry_script: str = ""  # the script the sweep was started with (empty: from Python)
    quick: bool = False
    overrides: list[str] = field(default_factory=list)
    base: dict[str, Any] = field(default_factory=dict)
    points: list[dict[str, Any]] = field(default_factory=list)
    git_commit: str = ""
    created: float = field(default_factory=time.time)

    @property
    def script(self) -> str:
        """The script that runs the sweep's study: the one it was started with, else the file
        declaring it (a study of one's own is its own script), else tune_jobs/<study>.py."""
        if self.entry_script:
            return self.entry_script
        if self.study_file and not self.study_file.endswith("/study.py"):
            return self.study_file
        return f"tune_jobs/{self.study}.py"

    def write(self, sweep_dir: Path) -> None:
        from trainables.common.context import atomic_file

        with atomic_file(sweep_dir / SWEEP_FILE) as tmp:
            Path(tmp).write_text(json.dumps(asdict(self), indent=1, default=str))

    @classmethod
    def read(cls, sweep_dir: Path) -> SweepRecord:
        """The sweep's record; ConfigError naming the file when it is missing or damaged."""
        path = sweep_dir / SWEEP_FILE
        try:
            data = json.loads(path.read_text())
            known = {f.name for f in fields(cls)}
            return cls(**{k: v for k, v in data.items() if k in known})
        except FileNotFoundError:
            raise ConfigError(f"{sweep_dir} is not a sweep folder (no {SWEEP_FILE})") from None
        except (OSError, ValueError, TypeError) as exc:
            raise ConfigError(
                f"{path} is damaged ({one_line(exc)[:120]}); the sweep cannot be resumed or replayed from it"
            ) from None
