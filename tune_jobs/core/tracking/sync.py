"""The sync of a sweep's outbox to MLflow (outbox.py): create the runs that do not exist yet
(with their real start times), send the journal's unsent tail with `log_batch`, close the runs
that have ended. Each step is recorded in the state as it succeeds and can be done twice
without harm (a run is looked up by its tags before it is created; MLflow keeps one row per
identical metric). `Syncer` runs it in a thread of its own, never on Tune's event loop; the end
of the sweep waits for it a bounded time (see END_*). No Ray here: `report.py --replay` sends
a sweep's outbox without starting Ray. Each trial run is tagged with where it ran
(`ray.node_id`, `ray.node_ip`, `ray.hostname`; with GPUs also `ray.gpu_ids` and
`ray.cuda_visible_devices`), updated if a restarted trial lands on another node."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from trainables.common.jsonl import complete_lines
from tune_jobs.core.config import to_nested
from tune_jobs.core.plan import SEED_KEY
from tune_jobs.core.provenance import DIFF_FILE, ENV_FILE
from tune_jobs.core.tracking.artifacts import log_dict, upload_folder
from tune_jobs.core.tracking.client import MarkedClient, open_client, probe
from tune_jobs.core.tracking.failures import SweepFileError, failure_line, from_store, mark_store
from tune_jobs.core.tracking.outbox import Outbox, warn_bad_line
from tune_jobs.core.tracking.shapes import parse_row
from tune_jobs.core.tracking.store import drop_cached_pages
from tune_jobs.core.tracking.uri import sqlite_file, uri_scheme

log = logging.getLogger(__name__)

MAX_METRICS_PER_BATCH = 1000
MAX_PARAMS_PER_BATCH = 100
MAX_PARAM_CHARS = 6000  # MLflow's limit on a param value


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
    bad_line = on_bad_line or (lambda at, size: warn_bad_line(journal, at, size))
    end = offset
    by_run: dict[str, list[Metric]] = defaultdict(list)
    try:
        lines = list(complete_lines(journal, offset))
    except OSError as exc:
        raise SweepFileError(f"cannot read {journal}: {exc.strerror or exc}") from None
    for at, line in lines:
        if line.strip():
            row = parse_row(line)
            if row is None:
                bad_line(at, len(line))
                end = at + len(line)
                continue
            run_id = row.get("run") or (run_of(row["trial"]) if run_of else None)
            if run_id is None:
                break
            by_run[run_id].extend(Metric(k, float(v), row["ts"], row["step"]) for k, v in row["metrics"].items())
        end = at + len(line)
    for run_id, metrics in by_run.items():
        for i in range(0, len(metrics), MAX_METRICS_PER_BATCH):
            client.log_batch(run_id, metrics=metrics[i : i + MAX_METRICS_PER_BATCH])
    return end


def sync(outbox: Outbox, client: Any, progress: Callable[[], None] | None = None) -> None:
    """Bring MLflow up to date with `outbox`; raises (keeping what succeeded) when it fails.

    A failure of the tracking store is marked (`from_store`); anything else is ours."""
    Sync(outbox, client, progress).run()


class Sync:
    """One sync of an outbox: its steps, in order."""

    def __init__(self, outbox: Outbox, client: Any, progress: Callable[[], None] | None = None) -> None:
        self.outbox = outbox
        self.lock = outbox.lock
        # MLflow's HTTP client retries a request whose answer did not come in time, and the
        # server may have made the run the first time: after a create, twins are looked for.
        self._twins = uri_scheme(str(getattr(client, "tracking_uri", "") or "")) in ("http", "https")
        self.store = MarkedClient(client, progress)

    @property
    def state(self) -> dict[str, Any]:
        return self.outbox.state

    def run(self) -> None:
        store = self.store
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
            self.outbox.save()

    def _sync_parent(self, store: MarkedClient) -> None:
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
            log_dict(store, st["parent_run_id"], to_nested(st["base"]), "cfg.yaml")
            for name in (ENV_FILE, DIFF_FILE):  # what a rerun of a trial needs to know
                if (self.outbox.dir / name).is_file():
                    store.log_artifact(st["parent_run_id"], str(self.outbox.dir / name))
            self._record(lambda s: s.update(parent_cfg_logged=True))

    def _sync_runs(self, store: MarkedClient) -> None:
        st = self.state
        with self.lock:
            todo = [(tid, dict(e)) for tid, e in st["trials"].items() if e["run_id"] is None or not e["params_logged"]]
        for trial_id, entry in todo:
            flat = {**st["base"], **entry["point"]}
            params_logged = False
            if entry["run_id"] is None:
                found = None
                if trial_id not in self.outbox.new_trials:
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
                        # The point less its seed: a point's seeds share it (group by it in the UI).
                        "sweep.point_group": json.dumps(
                            {k: v for k, v in entry["point"].items() if k != SEED_KEY}, sort_keys=True
                        ),
                    }
                    self.outbox.new_trials.discard(trial_id)  # until the create is recorded
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
                log_dict(store, entry["run_id"], to_nested(flat), "cfg.yaml")

                def done(s: dict[str, Any], t: str = trial_id, n: dict[str, str] = node) -> None:
                    s["trials"][t]["params_logged"] = True
                    if n and s["trials"][t].get("node_tags") == n:  # not moved again meanwhile
                        s["trials"][t]["node_tagged"] = True

                self._record(done)

    def _create_run(self, store: MarkedClient, match: Mapping[str, str], experiment_id: str, **create: Any) -> str:
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

    def _sync_reopened(self, store: MarkedClient) -> None:
        """Runs closed KILLED by an interrupt are RUNNING again once the sweep is resumed."""
        with self.lock:
            parent = self.state["parent_run_id"] if self.state.get("reopen") else None
            tags = {"sweep.status": "running", **self.state.get("reopen_tags", {})}  # an extension's settings
            todo = [
                (tid, e["run_id"]) for tid, e in self.state["trials"].items() if e.get("reopen") and e["params_logged"]
            ]
        if parent is not None:
            _set_tags(store, parent, tags)
            store.update_run(parent, status="RUNNING")
            self._record(lambda s: s.update(reopen=False, reopen_tags={}))
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

    def _sync_nodes(self, store: MarkedClient) -> None:
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

    def _sync_journal(self, store: MarkedClient) -> None:
        offset = self.state["journal_offset"]
        try:
            size = self.outbox.journal.stat().st_size
        except FileNotFoundError:
            size = 0
        if offset > size:  # the journal was cut or replaced: send it all again (harmless)
            log.warning(
                "%s is shorter (%d bytes) than what was sent (%d); sending it again", self.outbox.journal, size, offset
            )
            offset = 0
        new = send_journal(store, self.outbox.journal, offset, self._run_of, self.outbox.bad_line)
        if new != self.state["journal_offset"]:
            self._record(lambda s: s.update(journal_offset=new))

    def _sync_trial_ends(self, store: MarkedClient) -> None:
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

    def _sync_sweep_end(self, store: MarkedClient) -> None:
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

    def _close_trial(self, store: MarkedClient, entry: dict[str, Any]) -> None:
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


def _set_tags(store: MarkedClient, run_id: str, tags: Mapping[str, Any]) -> None:
    """Tags in as few calls as MLflow takes (one transaction each, not one per tag)."""
    items = [_tag(k, v) for k, v in tags.items()]
    for i in range(0, len(items), MAX_PARAMS_PER_BATCH):  # MLflow's limit is the same for tags
        store.log_batch(run_id, tags=items[i : i + MAX_PARAMS_PER_BATCH])


def _experiment_id(store: MarkedClient, name: str, artifact_location: str | None) -> str:
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


def _runs_tagged(store: MarkedClient, experiment_id: str, tags: Mapping[str, str], max_results: int) -> list[Any]:
    """The runs of this experiment carrying all of `tags`."""
    where = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
    return list(store.search_runs([experiment_id], filter_string=where, max_results=max_results))


def _find_run(store: MarkedClient, experiment_id: str, tags: Mapping[str, str]) -> Any:
    """The run of this experiment carrying `tags` (a run created before the state said so)."""
    runs = _runs_tagged(store, experiment_id, tags, 1)
    return runs[0] if runs else None


def replay(client: Any, sweep_dir: Path) -> str:
    """Send what a sweep recorded but could not send (the server was down to the end).

    Returns what is still pending ('' when MLflow now holds everything)."""
    mirror = Outbox(sweep_dir, lock_s=0)
    try:
        if mirror.recovered:
            raise SweepFileError(
                f"{mirror.state_path} and its previous version are damaged; resume the sweep to rebuild them"
            )
        sync(mirror, client)
        return mirror.pending()
    finally:
        mirror.release()


class Syncer:
    """Runs sync() in a thread of its own: every `interval` seconds, when woken, and after
    a failure with a back-off that doubles up to RETRY_MAX_S. A store that hangs costs this
    thread's time, never Tune's event loop."""

    def __init__(self, mirror: Outbox, uri: str, interval: float) -> None:
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
                    raise mark_store(exc) from None
            if self._db is not None:
                drop_cached_pages(self._db)
            sync(self.mirror, self._client, self._progressed)
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
