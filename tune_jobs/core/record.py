"""A sweep's MLflow record on disk, and its sync to MLflow: one parent run per sweep, one
nested run per trial. No Ray here: `report.py --replay` and the report read and send the
record without starting Ray (tune_jobs/core/tracking.py is the Tune callback that writes it).

What a sweep tells MLflow is first written to disk beside the Ray experiment, then mirrored:
- `mlflow_runs.json` (the state) holds the sweep's runs as the driver knows them: each
  trial's name, searched point, start and end, status, tags and artifact folders, and the
  MLflow run ids once the runs exist (`mlflow_runs.json.bak` is its previous version);
- `mlflow_journal.jsonl` holds every result, one JSON line, appended before anything is sent.
`Mirror.sync` brings MLflow up to date with those two files: it creates the runs that do not
exist yet (with their real start times), sends the journal's unsent tail with `log_batch`,
and closes the runs that have ended. Every step is recorded in the state as it succeeds, and
every step can be done twice without harm (a run is looked up by its tags before it is
created; MLflow keeps one row per identical metric), so a sync can stop anywhere and the next
one carries on. Therefore:
- a driver killed mid-sweep loses nothing: `--resume` syncs what was recorded but not sent;
- a tracking server that is down or hangs (at the start, in the middle or at the end) only
  delays the writes: the sync runs in a thread of its own, never on Tune's event loop, and
  the end of the sweep waits for it a bounded time (see END_*); what is left is sent with
  `python tune_jobs/report.py --replay SWEEP_DIR`;
- a resumed trial replays from its last checkpoint, and the steps already journalled are
  skipped, so no step appears twice in a run's history;
- damaged files of our own never block the sync: a journal line torn by a crash is skipped
  (with a warning naming the file and the byte offset; the trial replays that result from its
  checkpoint), a damaged state file is replaced by its previous version or rebuilt, and a
  message always says whether our file or the tracking store failed.
One process at a time writes a sweep's files (a lock file in the sweep folder): the driver
while it runs, or `report.py --replay`. Runs live on the driver only, so trials never talk to
the tracking server. Each trial run is tagged with where it ran (`ray.node_id`, `ray.node_ip`,
`ray.hostname`; with GPUs also `ray.gpu_ids` and
`ray.cuda_visible_devices`), updated if a restarted trial lands on another node.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import math
import os
import shutil
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from trainables.common.context import atomic_file
from tune_jobs.core.adapter import CUDA_DEVICES_KEY, GPU_IDS_KEY, NODE_KEY, trial_point
from tune_jobs.core.config import to_nested
from tune_jobs.core.errors import one_line
from tune_jobs.core.paths import sqlite_file, uri_scheme
from tune_jobs.core.plan import trial_label
from tune_jobs.core.store import CLIENT_DEFAULTS, drop_cached_pages, open_client, upload_folder

log = logging.getLogger(__name__)

STATE_FILE = "mlflow_runs.json"
BACKUP_FILE = STATE_FILE + ".bak"
JOURNAL_FILE = "mlflow_journal.jsonl"
TRIALS_FILE = "mlflow_trials.jsonl"
LOCK_FILE = ".mlflow_mirror.lock"
# The state file is rewritten whole, so it is written at most every SAVE_EVERY_S seconds, or
# every SAVE_PER_TRIALS_S per trial of the sweep when that is longer: its writes then cost the
# same per trial at 10 trials or 1,000. What must survive a killed driver is on disk at once:
# each trial's start and end are lines appended to TRIALS_FILE (read back over the state when
# it is loaded), and the sweep's start, end and resumes rewrite the state. The rest a kill can
# lose is found again (runs by their tags, results resent from the journal, which MLflow
# takes once).
SAVE_EVERY_S = 1.0
SAVE_PER_TRIALS_S = 0.01
MAX_METRICS_PER_BATCH = 1000
MAX_PARAMS_PER_BATCH = 100
MAX_PARAM_CHARS = 6000  # MLflow's limit on a param value
NODE_TAGS = {
    "ray.node_id": NODE_KEY,
    "ray.node_ip": "node_ip",
    "ray.hostname": "hostname",
    "ray.gpu_ids": GPU_IDS_KEY,
    "ray.cuda_visible_devices": CUDA_DEVICES_KEY,
}
__all__ = ["CLIENT_DEFAULTS", "Mirror", "Syncer", "client_for", "replay", "send_journal"]

# The end of a sweep waits for MLflow to take what is left while it makes progress: never more
# than END_STALL_S without one successful call, nor END_WAIT_S in all. For a server (not a
# local SQLite file) the wait without progress is at most END_SERVER_SHARE of the sweep's time
# so far (END_SERVER_MIN_S at least), and there is no wait when it does not answer its health
# check within END_PROBE_S. So a hung server costs a sweep about a tenth of its time at most,
# while one that takes the records (closing runs uploads their checkpoints) is not cut off
# half-way; what is left is replayed.
END_PROBE_S = 2.0
END_WAIT_S = 120.0
END_STALL_S = 30.0
END_SERVER_SHARE = 0.1
END_SERVER_MIN_S = 5.0
RETRY_FIRST_S = 10.0  # the back-off after the first failed sync; it doubles from there
RETRY_MAX_S = 60.0  # up to this


class SweepFileError(Exception):
    """One of the sweep's own files cannot be read or written (the message names it)."""


class SweepBusy(SweepFileError):
    """Another process writes this sweep's files (its driver, or a replay)."""


def write_json(path: Path, data: Any) -> None:
    """Atomic, durable JSON write: the file is the old one or the new one, never half, even
    after a power cut (fsync before the rename)."""
    with atomic_file(path) as tmp, open(tmp, "w") as f:
        f.write(json.dumps(data, indent=1, sort_keys=True))
        f.flush()
        os.fsync(f.fileno())


def now_ms() -> int:
    return int(time.time() * 1000)


# -- what failed: our files or the tracking store -------------------------------------------------


def _mark_store(exc: BaseException) -> BaseException:
    exc.from_store = True  # type: ignore[attr-defined]
    return exc


def from_store(exc: BaseException) -> bool:
    """Whether `exc` was raised by a call to the tracking store (not by our own files)."""
    return bool(getattr(exc, "from_store", False))


class _Store:
    """The MLflow client, with every failure marked as the store's and every success noted."""

    def __init__(self, client: Any, progress: Callable[[], None] | None = None) -> None:
        self._client, self._progress = client, progress

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self._client, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                out = method(*args, **kwargs)
            except Exception as exc:
                raise _mark_store(exc) from None
            if self._progress is not None:
                self._progress()
            return out

        return call


UNREACHABLE_WORDS = (
    "connection refused",
    "max retries exceeded",
    "timed out",
    "timeout",
    "failed to establish",
    "connection aborted",
    "connection reset",
    "remotedisconnected",
    "name or service not known",
    "no route to host",
)


def unreachable(exc: BaseException) -> bool:
    """A store call that never got an answer (as opposed to one the store refused)."""
    text = str(exc).lower()
    return "error responses" not in text and any(w in text for w in UNREACHABLE_WORDS)


def failure_line(exc: BaseException, uri: str, *, still: bool = False) -> str:
    """What failed, in words that tell our files from the tracking store and a server that
    does not answer from one that refuses."""
    detail = one_line(exc)[:300]
    if not from_store(exc):
        if isinstance(exc, OSError) and exc.filename:
            return f"cannot use the sweep's file {exc.filename} ({exc.strerror or detail})"
        if isinstance(exc, SweepFileError):
            return f"cannot use the sweep's files: {detail}"
        return f"the MLflow mirror failed on its own ({type(exc).__name__}: {detail})"
    db = sqlite_file(uri)
    if db is not None:
        return f"MLflow store {db} failed ({detail})"
    if uri_scheme(uri) in ("http", "https"):
        if unreachable(exc):
            return f"MLflow at {uri} {'is still unreachable' if still else 'unreachable'} ({detail})"
        return f"MLflow at {uri} answered with an error ({detail})"
    return f"MLflow store {uri} failed ({detail})"


# -- the journal ----------------------------------------------------------------------------------


def parse_row(line: bytes) -> dict[str, Any] | None:
    """One journal line as a result row, None when it is not one (torn or damaged)."""
    try:
        row = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        return None
    ok = (
        isinstance(row, dict)
        and isinstance(row.get("trial"), str)
        and isinstance(row.get("step"), int)
        and isinstance(row.get("ts"), int)
        and isinstance(row.get("metrics"), dict)
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in row["metrics"].values())
        and isinstance(row.get("run", ""), (str, type(None)))
    )
    return row if ok else None


def parse_trial_event(line: bytes) -> dict[str, Any] | None:
    """One line of the trials file (a trial's start or end), None when it is not one (torn by
    a crash, or damaged)."""
    try:
        row = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        return None
    if not (
        isinstance(row, dict)
        and isinstance(row.get("trial"), str)
        and isinstance(row.get("point"), dict)
        and isinstance(row.get("name"), str)
        and isinstance(row.get("start_ms"), int)
    ):
        return None
    if row.get("event") == "start":
        return row
    ended = (
        isinstance(row.get("status"), str)
        and isinstance(row.get("end_tags"), dict)
        and isinstance(row.get("artifacts"), list)
        and isinstance(row.get("end_ms"), int)
    )
    return row if row.get("event") == "end" and ended else None


def _append_line(path: Path, data: Mapping[str, Any]) -> None:
    """Append one JSON line, never onto a line a crash left torn. Like the journal's, it
    survives a killed process once written (the page cache is the kernel's)."""
    with open(path, "a+b") as f:
        size = f.seek(0, os.SEEK_END)
        prefix = b""
        if size:
            f.seek(size - 1)
            prefix = b"" if f.read(1) == b"\n" else b"\n"
        f.write(prefix + json.dumps(data).encode() + b"\n")


def _read_from(path: Path, offset: int) -> bytes:
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read()
    except FileNotFoundError:
        return b""
    except OSError as exc:
        raise SweepFileError(f"cannot read {path}: {exc.strerror or exc}") from None


def _warn_bad_line(journal: Path, offset: int, size: int) -> None:
    log.warning(
        "%s: the line at byte %d (%d bytes) is not a result row (torn by a crash, or damaged); skipped",
        journal,
        offset,
        size,
    )


def send_journal(
    client: Any,
    journal: Path,
    offset: int,
    run_of: Callable[[str], str | None] | None = None,
    on_bad_line: Callable[[int, int], None] | None = None,
) -> int:
    """Send the journal's lines from byte `offset` on to MLflow; returns the new offset.

    `run_of` maps a trial id to its run id; the send stops before the first line of a trial
    whose run does not exist yet. A last line without its newline may still be being written:
    it waits for the next send. A complete line that is not a result row is skipped
    (`on_bad_line(offset, size)`, by default a warning naming the file and the byte offset),
    so a damaged line never blocks the lines after it. Raises whatever the client raises when
    the server is unreachable; the caller keeps the old offset then. A batch sent twice is
    harmless: MLflow stores one row per identical (key, value, timestamp, step).
    """
    from mlflow.entities import Metric

    journal = Path(journal)
    bad_line = on_bad_line or (lambda at, size: _warn_bad_line(journal, at, size))
    data = _read_from(journal, offset)
    end = 0
    by_run: dict[str, list[Metric]] = defaultdict(list)
    for line in data.splitlines(keepends=True):
        if not line.endswith(b"\n"):
            break
        if line.strip():
            row = parse_row(line)
            if row is None:
                bad_line(offset + end, len(line))
                end += len(line)
                continue
            run_id = row.get("run") or (run_of(row["trial"]) if run_of else None)
            if run_id is None:
                break
            by_run[run_id].extend(Metric(k, float(v), row["ts"], row["step"]) for k, v in row["metrics"].items())
        end += len(line)
    for run_id, metrics in by_run.items():
        for i in range(0, len(metrics), MAX_METRICS_PER_BATCH):
            client.log_batch(run_id, metrics=metrics[i : i + MAX_METRICS_PER_BATCH])
    return offset + end


def _log_dict(client: Any, run_id: str, data: Mapping[str, Any], name: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_text(yaml.safe_dump(dict(data), sort_keys=False))
        client.log_artifact(run_id, str(path))


# -- the state file -------------------------------------------------------------------------------

_STATE_KEYS = {
    "experiment": str,
    "tags": dict,
    "base": dict,
    "run_prefix": str,
    "start_ms": int,
    "trials": dict,
    "journal_offset": int,
    "parent_cfg_logged": bool,
    "ended": bool,
}
_TRIAL_KEYS = {"name": str, "point": dict, "start_ms": int, "params_logged": bool, "ended": bool}
# Keys a state may lack (older sweeps, hand-made records), of this type when present (None: may be null).
_STATE_OPTIONAL = {
    "experiment_id": (str, None),
    "parent_run_id": (str, None),
    "artifact_location": (str, None),
    "end": (dict, None),
    "trials_offset": (int,),
    "reopen": (bool,),
}
_TRIAL_OPTIONAL = {
    "run_id": (str, None),
    "status": (str,),
    "end_tags": (dict,),
    "artifacts": (list,),
    "end_ms": (int,),
    "node_tags": (dict,),
    "node_tagged": (bool,),
    "interrupted": (bool,),
    "reopen": (bool,),
    "stale_tags": (list,),
}


def _wrong_optional(data: Mapping[str, Any], optional: Mapping[str, tuple[Any, ...]]) -> str | None:
    """The first key of `optional` that `data` holds with the wrong type, as a problem."""
    for key, kinds in optional.items():
        if key in data and not any(data[key] is None if k is None else isinstance(data[key], k) for k in kinds):
            names = " or ".join("null" if k is None else k.__name__ for k in kinds)
            found = "null" if data[key] is None else f"a {type(data[key]).__name__}"
            return f"'{key}' is {found}, not {names}"
    return None


def state_problem(state: Any) -> str | None:
    """Why `state` is not a usable mlflow_runs.json, None when it is."""
    if not isinstance(state, dict):
        return f"holds a {type(state).__name__}, not an object"
    for key, kind in _STATE_KEYS.items():
        if not isinstance(state.get(key), kind):
            return f"'{key}' is missing or not a {kind.__name__}"
    problem = _wrong_optional(state, _STATE_OPTIONAL)
    if problem is not None:
        return problem
    for key in ("journal_offset", "trials_offset"):
        if state.get(key, 0) < 0:
            return f"'{key}' is negative"
    end = state.get("end")
    if end is not None and not (isinstance(end.get("tags"), dict) and isinstance(end.get("end_ms"), int)):
        return "'end' lacks its 'tags' object or its 'end_ms' number"
    for trial_id, entry in state["trials"].items():
        if not isinstance(entry, dict):
            return f"trial {trial_id} is not an object"
        for key, kind in _TRIAL_KEYS.items():
            if not isinstance(entry.get(key), kind):
                return f"trial {trial_id}: '{key}' is missing or not a {kind.__name__}"
        problem = _wrong_optional(entry, _TRIAL_OPTIONAL)
        if problem is not None:
            return f"trial {trial_id}: {problem}"
    return None


def _read_state(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """(state, None) when `path` holds a usable state; (None, why) when it is damaged; (None,
    None) when it does not exist. Reads only; SweepFileError when it cannot be read."""
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        return None, None
    except OSError as exc:
        raise SweepFileError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        state = json.loads(text)
        problem = state_problem(state)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        problem = "empty" if not text.strip() else f"not JSON: {one_line(exc)[:80]}"
    return (state, None) if problem is None else (None, problem)


def state_damage(sweep_dir: str | os.PathLike[str]) -> str | None:
    """Why neither mlflow_runs.json nor its previous version can be used, in words naming the
    files (damaged, or missing); None when one of them can. Reads only: nothing is written, no
    copy is kept."""
    state_path = Path(sweep_dir) / STATE_FILE
    backup_path = Path(sweep_dir) / BACKUP_FILE
    damaged = []
    for path in (state_path, backup_path):
        state, problem = _read_state(path)
        if state is not None:
            return None
        if problem is not None:
            damaged.append(f"{path} is damaged ({problem})")
        elif path == state_path:
            damaged.append(f"{path} is missing")
    return "; ".join(damaged)


def recorded_trials(sweep_dir: str | os.PathLike[str]) -> dict[str, str]:
    """The sweep's trials as its record knows them, trial id -> name: from mlflow_runs.json (or
    its previous version) and the starts in mlflow_trials.jsonl. Reads only; what is not a
    trial's entry counts for nothing (a resume rebuilds a damaged state), nor does a damaged
    line of the trials file."""
    trials: dict[str, str] = {}
    for path in (Path(sweep_dir) / STATE_FILE, Path(sweep_dir) / BACKUP_FILE):
        try:
            state = json.loads(_read_from(path, 0) or b"null")
        except (ValueError, UnicodeDecodeError, RecursionError):
            continue
        entries = state.get("trials") if isinstance(state, dict) else None
        if isinstance(entries, dict):
            for tid, entry in entries.items():
                name = entry.get("name") if isinstance(entry, dict) else None
                trials[tid] = name if isinstance(name, str) else tid
            break
    for line in _read_from(Path(sweep_dir) / TRIALS_FILE, 0).splitlines():
        event = parse_trial_event(line)
        if event is not None:
            trials.setdefault(event["trial"], event["name"])
    return trials


class Mirror:
    """A sweep's MLflow record as kept on disk, and its sync to an MLflow store.

    Thread-safe: the driver's callback records (add_trial, end_trial ...) while a sync thread
    sends; `lock` guards the state, and no store call is made while holding it."""

    def __init__(self, sweep_dir: str | os.PathLike[str], *, hold_s: float | None = None) -> None:
        """Read a sweep's record; with `hold_s`, first become its one writer (see hold)."""
        self.dir = Path(sweep_dir)
        self.state_path = self.dir / STATE_FILE
        self.backup_path = self.dir / BACKUP_FILE
        self.journal = self.dir / JOURNAL_FILE
        self.lock = threading.RLock()
        self.recovered = False  # the state was damaged with no good copy: rebuilt by create()
        self._main_good = True  # the state file on disk is good, so it may become the backup
        self._hold_file: Any = None
        self._bad_lines: set[int] = set()  # journal offsets already warned about
        self.trials_log = self.dir / TRIALS_FILE
        self._dirty = False  # the state in memory is ahead of the file (see SAVE_EVERY_S)
        self._written = -math.inf  # when the state file was last written (monotonic)
        # Trials first recorded by this object whose run no earlier create may have made: their
        # runs are created without first searching MLflow for them (a search per trial is a
        # query over the whole experiment). A trial leaves the set when a create of it fails,
        # since a server may have made the run and lost the answer.
        self._new_trials: set[str] = set()
        self._twins = False  # the store is a server, whose client may send a create twice (see sync)
        if hold_s is not None:
            self.hold(hold_s)
        self.state: dict[str, Any] = self._load()
        if self.state:
            self._apply_trial_events(self.state)

    def _load(self) -> dict[str, Any]:
        """The state file, else its previous version, else {} (recovered) when both are damaged."""
        damaged = []
        for path in (self.state_path, self.backup_path):
            state, problem = _read_state(path)
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
        hold_s: float | None = None,
    ) -> Mirror:
        mirror = cls(sweep_dir, hold_s=hold_s)
        if not mirror.state:
            mirror.dir.mkdir(parents=True, exist_ok=True)
            mirror.state = {
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
            if mirror.recovered:
                mirror._adopt_journal_trials()
                mirror._apply_trial_events(mirror.state)
            mirror.save(now=True)
        return mirror

    def _adopt_journal_trials(self) -> None:
        """After a rebuild: an entry for every trial the journal holds results of (its point
        from Ray's trial folder when it has a params.json, else from the trials file, see
        _apply_trial_events), so its results can be sent; its run is found by its tags."""
        first_ts: dict[str, int] = {}
        for line in _read_from(self.journal, 0).splitlines():
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
        for line in _read_from(self.trials_log, offset).splitlines():
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
            if event["event"] == "end" and "status" not in entry:
                entry.update({k: event[k] for k in ("status", "end_tags", "artifacts", "end_ms")}, ended=False)
                self._dirty = True

    def _log_trial(self, trial_id: str, event: str, **data: Any) -> None:
        entry = self.state["trials"][trial_id]
        line = {"event": event, "trial": trial_id, "point": entry["point"], "name": entry["name"]}
        try:
            _append_line(self.trials_log, {**line, "start_ms": entry["start_ms"], **data})
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

    # -- one writer per sweep ---------------------------------------------------------------
    def hold(self, wait_s: float = 0.0) -> Mirror:
        """Become the one process that writes this sweep's files; then repair the journal's
        torn tail. Raises SweepBusy naming the process that holds them."""
        self.dir.mkdir(parents=True, exist_ok=True)
        f = open(self.dir / LOCK_FILE, "a+")  # noqa: SIM115 (held until release())
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    f.seek(0)
                    holder = f.read().strip() or "?"
                    f.close()
                    raise SweepBusy(
                        f"the sweep {self.dir} is being written by process {holder} (its driver, or a replay); "
                        "its records reach MLflow from there: wait for it to end"
                    ) from None
                time.sleep(0.2)
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        self._hold_file = f
        self.repair_journal_tail()
        return self

    def release(self) -> None:
        self.flush()
        if self._hold_file is not None:
            fcntl.flock(self._hold_file, fcntl.LOCK_UN)
            self._hold_file.close()
            self._hold_file = None

    def repair_journal_tail(self) -> None:
        """End a last line torn by a crash (a killed driver) with its newline: appends must not
        glue onto it. A torn line is then skipped by every send; a whole row that only lacked
        its newline is kept. Only the process that holds the sweep may do this."""
        try:
            size = self.journal.stat().st_size
        except FileNotFoundError:
            return
        if size == 0:
            return
        with open(self.journal, "rb+") as f:
            pos, start = size, 0
            while pos > 0:  # the last line's start, read backwards a block at a time
                block = min(pos, 1 << 16)
                f.seek(pos - block)
                chunk = f.read(block)
                if pos == size and chunk.endswith(b"\n"):
                    return  # nothing torn
                newline = chunk.rfind(b"\n")
                if newline >= 0:
                    start = pos - block + newline + 1
                    break
                pos -= block
            f.seek(start)
            fragment = f.read()
            f.seek(size)
            f.write(b"\n")
        if parse_row(fragment) is None:
            self._bad_lines.add(start)
            log.warning(
                "%s: the last line (byte %d, %d bytes) was torn by a crash; it is skipped, and its trial "
                "reports that result again when it resumes from its checkpoint",
                self.journal,
                start,
                len(fragment),
            )

    def _bad_line(self, offset: int, size: int) -> None:
        if offset not in self._bad_lines:
            self._bad_lines.add(offset)
            _warn_bad_line(self.journal, offset, size)

    def last_steps(self) -> dict[str, int]:
        """The last step journalled per trial (a resumed trial's replayed steps are skipped)."""
        last: dict[str, int] = {}
        for line in _read_from(self.journal, 0).splitlines():
            row = parse_row(line)
            if row is not None:
                last[row["trial"]] = max(row["step"], last.get(row["trial"], -1))
        return last

    # -- what the driver records -----------------------------------------------------------
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
            self._new_trials.add(trial_id)
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
            with open(self.journal, "a") as f:
                f.write(json.dumps(row) + "\n")
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
            self.state["trials"][trial_id].update(end, ended=False)
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

    # -- the sync ---------------------------------------------------------------------------
    def sync(self, client: Any, progress: Callable[[], None] | None = None) -> None:
        """Bring MLflow up to date; raises (keeping what succeeded) when it fails.

        A failure of the tracking store is marked (`from_store`); anything else is ours."""
        # MLflow's HTTP client retries a request whose answer did not come in time, and the
        # server may have made the run the first time: after a create, twins are looked for.
        self._twins = uri_scheme(str(getattr(client, "tracking_uri", "") or "")) in ("http", "https")
        store = _Store(client, progress)
        self._sync_parent(store)
        self._sync_runs(store)
        self._sync_reopened(store)
        self._sync_nodes(store)
        self._sync_journal(store)
        self._sync_trial_ends(store)
        self._sync_sweep_end(store)

    def _record(self, update: Callable[[dict[str, Any]], None]) -> None:
        with self.lock:
            update(self.state)
            self.save()

    def _sync_parent(self, store: _Store) -> None:
        st = self.state
        if st["experiment_id"] is None:
            exp_id = _experiment_id(store, st["experiment"], st.get("artifact_location"))
            self._record(lambda s: s.update(experiment_id=exp_id))
        if st["parent_run_id"] is None:
            tags = {**st["tags"], "sweep.role": "parent"}
            found = _find_run(store, st["experiment_id"], {"sweep.id": tags["sweep.id"], "sweep.role": "parent"})
            run_id = (
                found.info.run_id
                if found
                else self._create_run(
                    store,
                    {"sweep.id": tags["sweep.id"], "sweep.role": "parent"},
                    st["experiment_id"],
                    start_time=st["start_ms"],
                    run_name=f"{st['run_prefix']} sweep {tags['sweep.id']}",
                    tags=tags,
                )
            )
            self._record(lambda s: s.update(parent_run_id=run_id))
        if not st["parent_cfg_logged"]:
            _log_dict(store, st["parent_run_id"], to_nested(st["base"]), "cfg.yaml")
            self._record(lambda s: s.update(parent_cfg_logged=True))

    def _sync_runs(self, store: _Store) -> None:
        st = self.state
        with self.lock:
            todo = [(tid, dict(e)) for tid, e in st["trials"].items() if e["run_id"] is None or not e["params_logged"]]
        for trial_id, entry in todo:
            flat = {**st["base"], **entry["point"]}
            params_logged = False
            if entry["run_id"] is None:
                found = None
                if trial_id not in self._new_trials:
                    found = _find_run(
                        store, st["experiment_id"], {"sweep.id": st["tags"]["sweep.id"], "sweep.trial_id": trial_id}
                    )
                if found is not None:  # created before the state could record it (a crash, a rebuilt state)
                    run_id = found.info.run_id
                    params_logged = found.info.status != "RUNNING"  # closed: its params were logged first
                else:
                    tags = {
                        **st["tags"],
                        "sweep.role": "trial",
                        "sweep.trial_id": trial_id,
                        "mlflow.parentRunId": st["parent_run_id"],
                        "sweep.seed": str(flat.get("seed", "")),
                        "sweep.point": json.dumps(entry["point"], sort_keys=True),
                    }
                    self._new_trials.discard(trial_id)  # until the create is recorded
                    run_id = self._create_run(
                        store,
                        {"sweep.id": st["tags"]["sweep.id"], "sweep.trial_id": trial_id},
                        st["experiment_id"],
                        start_time=entry["start_ms"],
                        run_name=f"{st['run_prefix']}/{entry['name']}",
                        tags=tags,
                    )
                self._record(
                    lambda s, t=trial_id, r=run_id, p=params_logged: s["trials"][t].update(run_id=r, params_logged=p)
                )
                entry["run_id"] = run_id
            if not params_logged:
                # Where it runs, when already known, goes with its params (one call fewer).
                node = dict(entry["node_tags"]) if entry.get("node_tagged") is False else {}
                params = [_param(k, v) for k, v in sorted(flat.items())]
                for i in range(0, max(len(params), 1), MAX_PARAMS_PER_BATCH):
                    tags = [_tag(k, v) for k, v in node.items()] if i == 0 else []
                    store.log_batch(entry["run_id"], params=params[i : i + MAX_PARAMS_PER_BATCH], tags=tags)
                _log_dict(store, entry["run_id"], to_nested(flat), "cfg.yaml")

                def done(s: dict[str, Any], t: str = trial_id, n: dict[str, str] = node) -> None:
                    s["trials"][t]["params_logged"] = True
                    if n and s["trials"][t].get("node_tags") == n:  # not moved again meanwhile
                        s["trials"][t]["node_tagged"] = True

                self._record(done)

    def _create_run(self, store: _Store, match: Mapping[str, str], experiment_id: str, **create: Any) -> str:
        """Create a run; through a server, then delete its empty twins (runs with the same
        `match` tags and no params or metrics: made by a request the client sent again)."""
        run_id = store.create_run(experiment_id, **create).info.run_id
        if self._twins:
            for run in _runs_tagged(store, experiment_id, match, 100):
                if run.info.run_id != run_id and not run.data.params and not run.data.metrics:
                    log.warning(
                        "MLflow made run %s twice (a request sent again); deleting its empty twin %s",
                        create.get("run_name"),
                        run.info.run_id,
                    )
                    store.delete_run(run.info.run_id)
        return run_id

    def _sync_reopened(self, store: _Store) -> None:
        """Runs closed KILLED by an interrupt are RUNNING again once the sweep is resumed."""
        with self.lock:
            parent = self.state["parent_run_id"] if self.state.get("reopen") else None
            todo = [
                (tid, e["run_id"]) for tid, e in self.state["trials"].items() if e.get("reopen") and e["params_logged"]
            ]
        if parent is not None:
            store.set_tag(parent, "sweep.status", "running")
            store.update_run(parent, status="RUNNING")
            self._record(lambda s: s.update(reopen=False))
        for trial_id, run_id in todo:
            stale = self.state["trials"][trial_id].get("stale_tags") or []
            if stale:
                tags = store.get_run(run_id).data.tags
                for key in stale:
                    if key in tags:
                        store.delete_tag(run_id, key)
            store.set_tag(run_id, "sweep.status", "running")
            store.update_run(run_id, status="RUNNING")
            self._record(lambda s, t=trial_id: s["trials"][t].update(reopen=False))

    def _sync_nodes(self, store: _Store) -> None:
        with self.lock:
            todo = [
                (tid, e["run_id"], dict(e["node_tags"]))
                for tid, e in self.state["trials"].items()
                if e.get("node_tagged") is False and e["params_logged"]
            ]
        for trial_id, run_id, node in todo:
            _set_tags(store, run_id, node)  # one call and one transaction for all of them

            def done(s: dict[str, Any], t: str = trial_id, n: dict[str, str] = node) -> None:
                if s["trials"][t].get("node_tags") == n:  # not moved again meanwhile
                    s["trials"][t]["node_tagged"] = True

            self._record(done)

    def _sync_journal(self, store: _Store) -> None:
        offset = self.state["journal_offset"]
        try:
            size = self.journal.stat().st_size
        except FileNotFoundError:
            size = 0
        if offset > size:  # the journal was cut or replaced: send it all again (harmless)
            log.warning(
                "%s is shorter (%d bytes) than what was sent (%d); sending it again", self.journal, size, offset
            )
            offset = 0
        new = send_journal(store, self.journal, offset, self._run_of, self._bad_line)
        if new != self.state["journal_offset"]:
            self._record(lambda s: s.update(journal_offset=new))

    def _sync_trial_ends(self, store: _Store) -> None:
        with self.lock:
            todo = [
                (tid, json.loads(json.dumps(e)))
                for tid, e in self.state["trials"].items()
                if "status" in e and not e["ended"] and e["params_logged"]
            ]
        for trial_id, entry in todo:
            self._close_trial(store, entry)

            def done(s: dict[str, Any], t: str = trial_id, end_ms: int = entry["end_ms"]) -> None:
                if s["trials"][t].get("end_ms") == end_ms:  # not ended again meanwhile
                    s["trials"][t]["ended"] = True

            self._record(done)

    def _sync_sweep_end(self, store: _Store) -> None:
        with self.lock:
            end = json.loads(json.dumps(self.state["end"])) if self.state["end"] and not self.state["ended"] else None
        if end is None:
            return
        _set_tags(store, self.state["parent_run_id"], end["tags"])
        store.set_terminated(self.state["parent_run_id"], status=end.get("status", "FINISHED"), end_time=end["end_ms"])
        self._record(lambda s: s.update(ended=s["end"] == end or s["ended"]))

    def _run_of(self, trial_id: str) -> str | None:
        with self.lock:
            entry = self.state["trials"].get(trial_id)
            return entry["run_id"] if entry and entry.get("params_logged") else None

    def _close_trial(self, store: _Store, entry: dict[str, Any]) -> None:
        for path, subdir in entry.get("artifacts", []):
            folder = Path(path)
            if folder.is_dir() and any(folder.iterdir()):
                upload_folder(store, entry["run_id"], folder, subdir, link=subdir == "checkpoint")
            elif subdir == "checkpoint" and not folder.exists():
                log.warning("checkpoint %s is gone; the run %s is closed without it", path, entry["name"])
        _set_tags(store, entry["run_id"], entry.get("end_tags", {}))
        store.set_terminated(entry["run_id"], status=entry["status"], end_time=entry["end_ms"])


def _param(key: str, value: Any) -> Any:
    from mlflow.entities import Param

    return Param(key, str(value)[:MAX_PARAM_CHARS])


def _tag(key: str, value: Any) -> Any:
    from mlflow.entities import RunTag

    return RunTag(key, str(value))


def _set_tags(store: _Store, run_id: str, tags: Mapping[str, Any]) -> None:
    """Tags in as few calls as MLflow takes (one transaction each, not one per tag)."""
    items = [_tag(k, v) for k, v in tags.items()]
    for i in range(0, len(items), MAX_PARAMS_PER_BATCH):  # MLflow's limit is the same for tags
        store.log_batch(run_id, tags=items[i : i + MAX_PARAMS_PER_BATCH])


def _experiment_id(store: _Store, name: str, artifact_location: str | None) -> str:
    exp = store.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    try:
        return store.create_experiment(name, artifact_location=artifact_location)
    except Exception:
        exp = store.get_experiment_by_name(name)  # another sweep created it at the same moment
        if exp is None:
            raise
        return exp.experiment_id


def _runs_tagged(store: _Store, experiment_id: str, tags: Mapping[str, str], max_results: int) -> list[Any]:
    """The runs of this experiment carrying all of `tags`."""
    where = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
    return list(store.search_runs([experiment_id], filter_string=where, max_results=max_results))


def _find_run(store: _Store, experiment_id: str, tags: Mapping[str, str]) -> Any:
    """The run of this experiment carrying `tags` (a run created before the state said so)."""
    runs = _runs_tagged(store, experiment_id, tags, 1)
    return runs[0] if runs else None


def replay(client: Any, sweep_dir: Path) -> str:
    """Send what a sweep recorded but could not send (the server was down to the end).

    Returns what is still pending ('' when MLflow now holds everything)."""
    mirror = Mirror(sweep_dir, hold_s=0)
    try:
        if mirror.recovered:
            raise SweepFileError(
                f"{mirror.state_path} and its previous version are damaged; resume the sweep to rebuild them"
            )
        mirror.sync(client)
        return mirror.pending()
    finally:
        mirror.release()


def client_for(tracking_uri: str) -> Any:
    """An MLflow client for the tracking URI, its store created or checked first (store.py)."""
    return open_client(tracking_uri)


def probe(uri: str, timeout: float) -> bool:
    """Whether a tracking server answers at all (any HTTP status) within `timeout`."""
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout):
            return True
    except urllib.error.HTTPError:
        return True
    except (OSError, ValueError):
        return False


def _metric_values(result: Mapping[str, Any], keys: Sequence[str]) -> dict[str, float]:
    """The declared metrics of a result as floats (NaN and inf kept: MLflow stores them)."""
    out = {}
    for key in keys:
        value = result.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[key] = float(value)
    return out


class Syncer:
    """Runs Mirror.sync in a thread of its own: every `interval` seconds, when woken, and after
    a failure with a back-off that doubles up to RETRY_MAX_S. A store that hangs costs this
    thread's time, never Tune's event loop."""

    def __init__(self, mirror: Mirror, uri: str, interval: float) -> None:
        self.mirror, self.uri, self.interval = mirror, uri, interval
        self._cond = threading.Condition()
        self._due = 0.0  # when the next sync starts
        self._retry_at = 0.0  # no sync before this after a failure (0 when none)
        self._ending = False
        self._stopped = False
        self._client: Any = None
        self._db = sqlite_file(uri)
        self.failures = 0  # failed syncs in a row
        self.failing_since: float | None = None
        self.last_failure = ""
        self.last_progress = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="mlflow-sync", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wake(self, now: bool = False) -> None:
        """Sync soon: at once with `now` (unless backing off after a failure), else on schedule."""
        if not now:
            return
        with self._cond:
            self._due = min(self._due, max(time.monotonic(), self._retry_at))
            self._cond.notify_all()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopped and time.monotonic() < self._due:
                    self._cond.wait(self._due - time.monotonic())
                if self._stopped:
                    return
                self._due = float("inf")
            self._attempt()

    def _progressed(self) -> None:
        self.last_progress = time.monotonic()

    def _attempt(self) -> None:
        try:
            if self._client is None:
                try:
                    self._client = open_client(self.uri)
                except Exception as exc:
                    raise _mark_store(exc) from None
            if self._db is not None:
                drop_cached_pages(self._db)
            self.mirror.sync(self._client, self._progressed)
            self.mirror.flush(due_only=True)  # the file follows within a sync interval or so
        except Exception as exc:
            self._failed(exc)
        else:
            self._succeeded()

    def _failed(self, exc: Exception) -> None:
        now = time.monotonic()
        self.failures += 1
        self.last_failure = failure_line(exc, self.uri)
        if self.failing_since is None:
            self.failing_since = now
            log.warning("%s; results are kept in %s and sent when that is fixed", self.last_failure, self.mirror.dir)
            if not from_store(exc) and not isinstance(exc, (OSError, SweepFileError)):
                log.debug("the MLflow mirror failed", exc_info=exc)
        backoff = 1.0 if self._ending else min(RETRY_MAX_S, RETRY_FIRST_S * 2 ** (self.failures - 1))
        with self._cond:
            self._retry_at = self._due = now + backoff  # a wake meanwhile does not cut the back-off

    def _succeeded(self) -> None:
        now = time.monotonic()
        if self.failing_since is not None:
            log.warning(
                "MLflow at %s %s after %.0f s; everything kept meanwhile is sent",
                self.uri,
                "reachable again" if "unreachable" in self.last_failure else "works again",
                now - self.failing_since,
            )
        self.failures, self.failing_since = 0, None
        with self._cond:
            self._retry_at = 0.0
            self._due = min(self._due, now + self.interval)

    def finish(self, elapsed: float) -> str:
        """Wait (bounded, see END_*) until MLflow holds everything; '' then, else why not.

        `elapsed`: the sweep's time so far, of which a server's wait takes a share at most."""
        start = time.monotonic()
        if not self.mirror.pending():
            return ""
        budget, stall = END_WAIT_S, END_STALL_S
        if sqlite_file(self.uri) is None:
            if uri_scheme(self.uri) in ("http", "https") and not probe(self.uri, END_PROBE_S):
                return f"MLflow at {self.uri} did not answer within {END_PROBE_S:.0f} s at the end of the sweep"
            stall = min(END_STALL_S, max(END_SERVER_MIN_S, END_SERVER_SHARE * elapsed))
        with self._cond:
            self._ending = True
            self._retry_at = 0.0  # one more try at once, whatever the back-off
            self._due = time.monotonic()
            self._cond.notify_all()
        while self.mirror.pending():
            now = time.monotonic()
            last = f" ({self.last_failure})" if self.failing_since is not None else ""
            if now - start >= budget:
                return f"MLflow at {self.uri} was still taking the records after {budget:.0f} s at the end of the sweep{last}"
            if now - max(self.last_progress, start) >= stall:
                return f"MLflow at {self.uri} made no progress for {stall:.0f} s at the end of the sweep{last}"
            time.sleep(0.2)
        return ""

    def stop(self, wait_s: float = 1.0) -> bool:
        """Stop the thread after its current sync; whether it has stopped within `wait_s`."""
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        self._thread.join(wait_s)
        return not self._thread.is_alive()
