"""A sweep's outbox: everything the sweep must tell MLflow, written to disk before anything is
sent (sync.py sends it). One parent run per sweep, one nested run per trial.

- `mlflow_runs.json` (the state, state.py) holds the sweep's runs as the driver knows them, and
  the MLflow run ids once the runs exist (`mlflow_runs.json.bak` is its previous version);
- `mlflow_journal.jsonl` holds every result, one JSON line, appended before anything is sent;
- `mlflow_trials.jsonl` holds each trial's start and end, appended at once.
Every step of a sync is recorded in the state as it succeeds, and every step can be done twice
without harm, so a sync can stop anywhere and the next one carries on. Therefore:
- a driver killed mid-sweep loses nothing: `--resume` syncs what was recorded but not sent;
- a tracking server that is down or hangs only delays the writes: what is left is sent by the
  sync thread, the end of the sweep, or `python tune_jobs/report.py --replay SWEEP_DIR`;
- a resumed trial replays from its last checkpoint, and the steps already journalled are
  skipped, so no step appears twice in a run's history;
- damaged files of our own never block the sync: a journal line torn by a crash is skipped
  (with a warning naming the file and the byte offset; the trial replays that result from its
  checkpoint), a damaged state file is replaced by its previous version or rebuilt.
One process at a time writes a sweep's files (a lock file in the sweep folder): the driver
while it runs, or `report.py --replay`. Runs live on the driver only, so trials never talk to
the tracking server.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from trainables.common.jsonl import append_line, end_torn_line
from tune_jobs.core.plan import trial_label
from tune_jobs.core.tracking.failures import SweepBusy, SweepFileError
from tune_jobs.core.tracking.shapes import parse_row
from tune_jobs.core.tracking.state import StateFile, now_ms, read_file

log = logging.getLogger(__name__)

LOCK_FILE = ".mlflow_mirror.lock"


def warn_bad_line(journal: Path, offset: int, size: int) -> None:
    log.warning(
        "%s: the line at byte %d (%d bytes) is not a result row (torn by a crash, or damaged); skipped",
        journal,
        offset,
        size,
    )


class Outbox(StateFile):
    """What a sweep must tell MLflow, kept on disk (see the module's text).

    Thread-safe: the driver's callback records (add_trial, end_trial ...) while a sync thread
    sends; `lock` guards the state, and no store call is made while holding it."""

    def __init__(self, sweep_dir: str | os.PathLike[str], *, lock_s: float | None = None) -> None:
        """Read a sweep's outbox; with `lock_s`, first become its one writer (see take_lock)."""
        super().__init__(sweep_dir)
        self._file_lock: FileLock | None = None
        self._bad_lines: set[int] = set()  # journal offsets already warned about
        # Trials first recorded by this object whose run no earlier create may have made: their
        # runs are created without first searching MLflow for them (a search per trial is a
        # query over the whole experiment). A trial leaves the set when a create of it fails,
        # since a server may have made the run and lost the answer.
        self.new_trials: set[str] = set()
        if lock_s is not None:
            self.take_lock(lock_s)
        self.load()

    @classmethod
    def create(
        cls,
        sweep_dir: str | os.PathLike[str],
        *,
        experiment_name: str,
        artifact_location: str | None,
        tags: Mapping[str, str],
        base: Mapping[str, Any],
        run_prefix: str,
        lock_s: float | None = None,
    ) -> Outbox:
        return cls(sweep_dir, lock_s=lock_s).prepare(
            experiment_name=experiment_name,
            artifact_location=artifact_location,
            tags=tags,
            base=base,
            run_prefix=run_prefix,
        )

    def prepare(
        self,
        *,
        experiment_name: str,
        artifact_location: str | None,
        tags: Mapping[str, str],
        base: Mapping[str, Any],
        run_prefix: str,
    ) -> Outbox:
        """A new sweep's state (the parent run to create) when the files hold none yet."""
        if not self.state:
            self.dir.mkdir(parents=True, exist_ok=True)
            self.state = {
                "experiment": experiment_name,
                "artifact_location": artifact_location,
                "tags": dict(tags),
                "base": dict(base),
                "run_prefix": run_prefix,
                "start_ms": now_ms(),
                "experiment_id": None,
                "parent_run_id": None,
                "parent_cfg_logged": False,
                "end": None,
                "ended": False,
                "journal_offset": 0,
                "trials": {},
            }
            if self.recovered:
                self._adopt_journal_trials()
                self._apply_trial_events(self.state)
            self.save(now=True)
        return self

    # -- one writer per sweep ---------------------------------------------------------------
    def take_lock(self, wait_s: float = 0.0) -> Outbox:
        """Become the one process that writes this sweep's files; then repair the journal's
        torn tail. Raises SweepBusy naming the process that holds them."""
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.dir / LOCK_FILE
        lock = FileLock(path, timeout=wait_s, preserve_lock_file=True)
        try:
            lock.acquire()
        except Timeout:
            try:
                holder = path.read_text().strip() or "?"
            except OSError:
                holder = "?"
            raise SweepBusy(
                f"the sweep {self.dir} is being written by process {holder} (its driver, or a replay); "
                "its records reach MLflow from there: wait for it to end"
            ) from None
        path.write_text(str(os.getpid()))
        self._file_lock = lock
        self.repair_journal_tail()
        return self

    def release(self) -> None:
        self.flush()
        if self._file_lock is not None:
            self._file_lock.release()
            self._file_lock = None

    def repair_journal_tail(self) -> None:
        """End a last line torn by a crash (a killed driver) with its newline: appends must not
        glue onto it. A torn line is then skipped by every send; a whole row that only lacked
        its newline is kept. Only the process that holds the sweep may do this."""
        torn = end_torn_line(self.journal)
        if torn is None:
            return
        start, fragment = torn
        if parse_row(fragment) is None:
            self._bad_lines.add(start)
            log.warning(
                "%s: the last line (byte %d, %d bytes) was torn by a crash; it is skipped, and its trial "
                "reports that result again when it resumes from its checkpoint",
                self.journal,
                start,
                len(fragment),
            )

    def bad_line(self, offset: int, size: int) -> None:
        """Warn once per damaged journal line."""
        if offset not in self._bad_lines:
            self._bad_lines.add(offset)
            warn_bad_line(self.journal, offset, size)

    def last_steps(self) -> dict[str, int]:
        """The last step journalled per trial (a resumed trial's replayed steps are skipped)."""
        last: dict[str, int] = {}
        for line in read_file(self.journal).splitlines():
            row = parse_row(line)
            if row is not None:
                last[row["trial"]] = max(row["step"], last.get(row["trial"], -1))
        return last

    # -- what the driver records -----------------------------------------------------------
    def add_trial(self, trial_id: str, point: Mapping[str, Any]) -> None:
        with self.lock:
            entry = self.state["trials"].get(trial_id)
            if entry is not None:
                if point and not entry["point"]:
                    # Adopted from the journal after a rebuild, its point unknown until now
                    # (Tune gives it back with the trial): its params and name follow it.
                    entry.update(point=dict(point), name=trial_label(point))
                    self._log_trial(trial_id, "start")
                    self.save()
                return
            self.state["trials"][trial_id] = self._new_trial(point, now_ms())
            self.new_trials.add(trial_id)
            self._log_trial(trial_id, "start")
            self.save()

    def set_node(self, trial_id: str, node: Mapping[str, str]) -> None:
        """Record where a trial runs (tagged on its run at the next sync)."""
        with self.lock:
            entry = self.state["trials"][trial_id]
            if entry.get("node_tags") != dict(node):
                entry.update(node_tags=dict(node), node_tagged=False)
                self.save()

    def append(self, row: Mapping[str, Any]) -> None:
        """Journal one result row (before anything is sent)."""
        try:
            append_line(self.journal, row)
        except OSError as exc:
            raise SweepFileError(f"cannot append to {self.journal}: {exc.strerror or exc}") from None

    def end_trial(
        self, trial_id: str, status: str, tags: Mapping[str, str], artifacts: Sequence[tuple[str, str | None]]
    ) -> None:
        with self.lock:
            end = {
                "status": status,
                "end_tags": dict(tags),
                "artifacts": [list(a) for a in artifacts],
                "end_ms": now_ms(),
            }
            self._log_trial(trial_id, "end", **end)  # at once: a resume must not run it again
            entry = self.state["trials"][trial_id]
            # A trial that ends after a Ctrl-C filed it as interrupted (it was finishing as the
            # signal came) has ended: a resume must neither run it again nor wait for it.
            entry.pop("interrupted", None)
            entry.update(end, ended=False)
            self.save()

    def end_sweep(self, tags: Mapping[str, str], status: str = "FINISHED") -> None:
        with self.lock:
            self.state.update(end={"tags": dict(tags), "end_ms": now_ms(), "status": status}, ended=False)
            self.save(now=True)

    def interrupt(self, unfinished: Sequence[str], tags: Mapping[str, str]) -> None:
        """The sweep was stopped (Ctrl-C) with `unfinished` trials: their runs and the parent's
        are closed KILLED, tagged `sweep.status=interrupted`, until `--resume` reopens them."""
        with self.lock:
            for trial_id in unfinished:
                entry = self.state["trials"].get(trial_id)
                if entry is not None and "status" not in entry:
                    entry.update(status="KILLED", end_tags={"sweep.status": "interrupted"}, artifacts=[])
                    entry.update(end_ms=now_ms(), ended=False, interrupted=True)
            self.end_sweep({**tags, "sweep.status": "interrupted"}, status="KILLED")

    def start_over(self, names: Sequence[str]) -> list[str]:
        """Trials (ids or labels) that `--start-over` runs again from scratch: their ended runs
        are filed as interrupted, so the resumed sweep runs them and reopens their runs
        (see reopen). Returns their ids."""
        with self.lock:
            ids = [tid for tid, e in self.state["trials"].items() if tid in names or e.get("name") in names]
            for trial_id in ids:
                entry = self.state["trials"][trial_id]
                if "status" in entry:
                    entry["interrupted"] = True
            self.save(now=True)
            return ids

    @property
    def interrupted(self) -> bool:
        return bool(self.state.get("end")) and self.state["end"].get("status") == "KILLED"

    def reopen(self) -> None:
        """A resumed sweep: the runs an interrupt closed are RUNNING again (at the next sync)."""
        with self.lock:
            st, changed = self.state, False
            for entry in st["trials"].values():
                if entry.pop("interrupted", False):
                    # An ended run started over loses its end's tags (an error, a reason).
                    stale = sorted(set(entry.get("end_tags", {})) - {"sweep.status"}) if entry.get("ended") else []
                    for key in ("status", "end_tags", "artifacts", "end_ms"):
                        entry.pop(key, None)
                    entry.update(ended=False, reopen=True, stale_tags=stale)
                    changed = True
            if self.interrupted:
                st.update(end=None, ended=False, reopen=True)
                changed = True
            if changed:
                self.save(now=True)

    def extend(self, tags: Mapping[str, str]) -> None:
        """A finished sweep given more trials (tune_jobs/core/extend.py): its parent run is
        RUNNING again, with `tags` (the extended settings), at the next sync."""
        with self.lock:
            self.state.update(end=None, ended=False, reopen=True, reopen_tags=dict(tags))
            self.save(now=True)

    def pending(self) -> str:
        """What MLflow does not hold yet, in words ('' when it is up to date)."""
        with self.lock:
            st = self.state
            parts = []
            try:
                size = self.journal.stat().st_size
            except FileNotFoundError:
                size = 0
            unsent = size - st.get("journal_offset", 0)
            if unsent > 0:
                parts.append(f"{unsent} bytes of results")
            missing = sum(1 for t in st["trials"].values() if not t.get("params_logged"))
            if st.get("parent_run_id") is None or not st.get("parent_cfg_logged"):
                missing += 1
            if missing:
                parts.append(f"{missing} runs to create")
            open_ = sum(1 for t in st["trials"].values() if "status" in t and not t.get("ended"))
            open_ += 1 if st.get("end") and not st.get("ended") else 0
            if open_:
                parts.append(f"{open_} runs to close")
            return ", ".join(parts)
