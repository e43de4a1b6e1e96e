"""A sweep's MLflow state file (mlflow_runs.json) as the driver keeps it: loaded (else its
previous version, else rebuilt from the journals), saved whole at a bounded rate, its previous
version kept as a backup and a damaged one kept aside. The trials' starts and ends, which must
survive a killed driver at once, are lines of the trials file, read back over the state.

The state holds the sweep's runs as the driver knows them: each trial's name, searched point,
start and end, status, tags and artifact folders, and the MLflow run ids once the runs exist."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from trainables.common.context import atomic_file
from trainables.common.jsonl import append_line, read_from
from tune_jobs.core.adapter import trial_point
from tune_jobs.core.plan import trial_label
from tune_jobs.core.tracking.failures import SweepFileError
from tune_jobs.core.tracking.shapes import parse_row, parse_trial_event, read_state

log = logging.getLogger(__name__)

STATE_FILE = "mlflow_runs.json"
BACKUP_FILE = STATE_FILE + ".bak"
JOURNAL_FILE = "mlflow_journal.jsonl"
TRIALS_FILE = "mlflow_trials.jsonl"
# The state file is rewritten whole, so it is written at most every SAVE_EVERY_S seconds, or
# every SAVE_PER_TRIALS_S per trial of the sweep when that is longer: its writes then cost the
# same per trial at 10 trials or 1,000. What must survive a killed driver is on disk at once:
# each trial's start and end are lines appended to TRIALS_FILE (read back over the state when
# it is loaded), and the sweep's start, end and resumes rewrite the state. The rest a kill can
# lose is found again (runs by their tags, results resent from the journal, which MLflow
# takes once).
SAVE_EVERY_S = 1.0
SAVE_PER_TRIALS_S = 0.01


def write_json(path: Path, data: Any) -> None:
    """Atomic, durable JSON write: the file is the old one or the new one, never half, even
    after a power cut (fsync before the rename)."""
    with atomic_file(path) as tmp, open(tmp, "w") as f:
        f.write(json.dumps(data, indent=1, sort_keys=True))
        f.flush()
        os.fsync(f.fileno())


def now_ms() -> int:
    return int(time.time() * 1000)


def read_file(path: Path, offset: int = 0) -> bytes:
    """A sweep file's bytes from `offset` on (b"" when it does not exist); SweepFileError when
    it cannot be read."""
    try:
        return read_from(path, offset)
    except OSError as exc:
        raise SweepFileError(f"cannot read {path}: {exc.strerror or exc}") from None


def state_damage(sweep_dir: str | os.PathLike[str]) -> str | None:
    """Why neither mlflow_runs.json nor its previous version can be used, in words naming the
    files (damaged, or missing); None when one of them can. Reads only: nothing is written, no
    copy is kept."""
    state_path = Path(sweep_dir) / STATE_FILE
    backup_path = Path(sweep_dir) / BACKUP_FILE
    damaged = []
    for path in (state_path, backup_path):
        state, problem = read_state(path)
        if state is not None:
            return None
        if problem is not None:
            damaged.append(f"{path} is damaged ({problem})")
        elif path == state_path:
            damaged.append(f"{path} is missing")
    return "; ".join(damaged)


def sweep_finished(sweep_dir: str | os.PathLike[str]) -> bool:
    """Whether the sweep ran to its end: its state records an end that is not an interrupt.
    Reads only."""
    for name in (STATE_FILE, BACKUP_FILE):
        state, _ = read_state(Path(sweep_dir) / name)
        if state is not None:
            end = state.get("end")
            return isinstance(end, dict) and end.get("status") == "FINISHED"
    return False


def recorded_trials(sweep_dir: str | os.PathLike[str]) -> dict[str, str]:
    """The sweep's trials as its record knows them, trial id -> name: from mlflow_runs.json (or
    its previous version) and the starts in mlflow_trials.jsonl. Reads only; what is not a
    trial's entry counts for nothing (a resume rebuilds a damaged state), nor does a damaged
    line of the trials file."""
    trials: dict[str, str] = {}
    for path in (Path(sweep_dir) / STATE_FILE, Path(sweep_dir) / BACKUP_FILE):
        try:
            state = json.loads(read_file(path, 0) or b"null")
        except (ValueError, UnicodeDecodeError, RecursionError):
            continue
        entries = state.get("trials") if isinstance(state, dict) else None
        if isinstance(entries, dict):
            for tid, entry in entries.items():
                name = entry.get("name") if isinstance(entry, dict) else None
                trials[tid] = name if isinstance(name, str) else tid
            break
    for line in read_file(Path(sweep_dir) / TRIALS_FILE, 0).splitlines():
        event = parse_trial_event(line)
        if event is not None:
            trials.setdefault(event["trial"], event["name"])
    return trials


class StateFile:
    """A sweep's state as kept on disk. `lock` guards `state` (the driver's callback records
    while a sync thread sends)."""

    def __init__(self, sweep_dir: str | os.PathLike[str]) -> None:
        self.dir = Path(sweep_dir)
        self.state_path = self.dir / STATE_FILE
        self.backup_path = self.dir / BACKUP_FILE
        self.journal = self.dir / JOURNAL_FILE
        self.trials_log = self.dir / TRIALS_FILE
        self.lock = threading.RLock()
        self.state: dict[str, Any] = {}
        self.recovered = False  # the state was damaged with no good copy: rebuilt by create()
        self._main_good = True  # the state file on disk is good, so it may become the backup
        self._dirty = False  # the state in memory is ahead of the file (see SAVE_EVERY_S)
        self._written = -math.inf  # when the state file was last written (monotonic)

    def load(self) -> None:
        """Read the state file (see _load) and the trial events appended after it was written."""
        self.state = self._load()
        if self.state:
            self._apply_trial_events(self.state)

    def _load(self) -> dict[str, Any]:
        """The state file, else its previous version, else {} (recovered) when both are damaged."""
        damaged = []
        for path in (self.state_path, self.backup_path):
            state, problem = read_state(path)
            if state is not None:
                if damaged:
                    log.warning("%s; using its previous version %s", "; ".join(damaged), path)
                return state
            if problem is None:  # no such file
                if path == self.state_path and self.backup_path.exists():
                    damaged.append(f"{path} is missing")
                continue
            damaged.append(f"{path} is damaged ({problem})")
            if path == self.state_path:
                self._main_good = False
                self._keep_damaged(path)
        if damaged:
            self.recovered = True
            log.warning(
                "%s; it is rebuilt from the sweep's settings, its journal and MLflow (runs are found by their tags)",
                "; ".join(damaged),
            )
        return {}

    def _keep_damaged(self, path: Path) -> None:
        """A damaged file is evidence: kept beside, never overwritten in place. One copy of a
        given content: loading the same damaged file again (a resume that stopped before
        rebuilding it, the scheduler's read and the tracker's) keeps no second one."""
        with contextlib.suppress(OSError):
            data = path.read_bytes()
            for kept in path.parent.glob(f"{path.name}.damaged-*"):
                with contextlib.suppress(OSError):
                    if kept.stat().st_size == len(data) and kept.read_bytes() == data:
                        return
            aside = path.with_name(f"{path.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
            n = 1
            while aside.exists():  # another damaged content in the same second
                aside = path.with_name(f"{path.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}-{n}")
                n += 1
            aside.write_bytes(data)

    def _adopt_journal_trials(self) -> None:
        """After a rebuild: an entry for every trial the journal holds results of (its point
        from Ray's trial folder when it has a params.json, else from the trials file, see
        _apply_trial_events), so its results can be sent; its run is found by its tags."""
        first_ts: dict[str, int] = {}
        for line in read_file(self.journal, 0).splitlines():
            row = parse_row(line)
            if row is not None:
                first_ts.setdefault(row["trial"], row["ts"])
        for trial_id, ts in first_ts.items():
            point: dict[str, Any] = {}
            for params in self.dir.glob(f"*{trial_id}/params.json"):
                with contextlib.suppress(OSError, ValueError, RecursionError):
                    config = json.loads(params.read_text())
                    point = trial_point(config) if isinstance(config, dict) else point
            self.state["trials"][trial_id] = self._new_trial(point, ts)
            if not point:
                self.state["trials"][trial_id]["name"] = trial_id

    def _apply_trial_events(self, state: dict[str, Any]) -> None:
        """The trials' starts and ends recorded in the trials file after the state was written."""
        offset = int(state.get("trials_offset", 0) or 0)
        for line in read_file(self.trials_log, offset).splitlines():
            event = parse_trial_event(line)
            if event is None:
                continue  # torn by a crash while it was appended: the trial says it again on resume
            entry = state["trials"].get(event["trial"])
            if entry is None:  # started after the state was last written
                entry = state["trials"][event["trial"]] = self._new_trial(event["point"], event["start_ms"])
                entry["name"] = event["name"]
                self._dirty = True
            elif not entry["point"] and event["point"]:
                # Adopted from the journal by a rebuild, which knows no point: a run made or
                # found for it must get the trial's own params, not the sweep's defaults.
                entry.update(point=dict(event["point"]), name=event["name"])
                self._dirty = True
            if event["event"] == "end" and ("status" not in entry or entry.pop("interrupted", False)):
                entry.update({k: event[k] for k in ("status", "end_tags", "artifacts", "end_ms")}, ended=False)
                self._dirty = True

    def _log_trial(self, trial_id: str, event: str, **data: Any) -> None:
        entry = self.state["trials"][trial_id]
        line = {"event": event, "trial": trial_id, "point": entry["point"], "name": entry["name"]}
        try:
            append_line(self.trials_log, {**line, "start_ms": entry["start_ms"], **data})
        except OSError as exc:
            raise SweepFileError(f"cannot append to {self.trials_log}: {exc.strerror or exc}") from None

    def save(self, now: bool = False) -> None:
        """Record the state: at once with `now`, else when the last write is old enough (see
        SAVE_EVERY_S); flush() writes what is left."""
        with self.lock:
            self._dirty = True
            every = max(SAVE_EVERY_S, SAVE_PER_TRIALS_S * len(self.state.get("trials", ())))
            if now or time.monotonic() - self._written >= every:
                self._write()

    def flush(self, due_only: bool = False) -> None:
        """Write the state if it is ahead of its file (with `due_only`, only if its last write
        is as old as save() allows)."""
        with self.lock:
            if self._dirty and due_only:
                self.save()
            elif self._dirty:
                self._write()

    def _write(self) -> None:
        try:
            self.state["trials_offset"] = self.trials_log.stat().st_size if self.trials_log.exists() else 0
            if self._main_good and self.state_path.exists():
                self._keep_previous()
            write_json(self.state_path, self.state)
        except OSError as exc:
            raise SweepFileError(f"cannot write {self.state_path}: {exc.strerror or exc}") from None
        self._main_good = True
        self._dirty = False
        self._written = time.monotonic()

    def _keep_previous(self) -> None:
        """The state file as it is now becomes the backup (a hard link: no copy, no window
        without a state file)."""
        tmp = self.backup_path.with_name(self.backup_path.name + ".new")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        try:
            os.link(self.state_path, tmp)
        except OSError:
            shutil.copyfile(self.state_path, tmp)
        os.replace(tmp, self.backup_path)

    @property
    def parent_run_id(self) -> str | None:
        return self.state.get("parent_run_id")

    @staticmethod
    def _new_trial(point: Mapping[str, Any], start_ms: int) -> dict[str, Any]:
        return {
            "name": trial_label(point),
            "point": dict(point),
            "start_ms": start_ms,
            "run_id": None,
            "params_logged": False,
            "ended": False,
        }
