"""Publish a sweep's MLflow runs from the store it ran against (a laptop's SQLite file) into
another store (a team's tracking server), as `python -m tune_jobs.publish` does.

What is copied: every run of the sweep's experiment tagged with its sweep id (the parent run and
one run per trial; the project makes no others there: a rerun of a trial is a sweep of its own,
in experiment `rerun-<experiment>`, published by its own id), each with its name, params, tags,
every metric point (step, timestamp, value), status, start and end time, and artifacts (same
paths). The destination experiment has the source's name, created if missing, and gets the
sweep's saved UI view (view.py).

Publishing again creates nothing twice. Each copy carries PUBLISHED_FROM (the source store and
the source run's id; MLflow run ids are random UUIDs, so the id alone finds the copy even when
the source file has moved) and, set last, PUBLISHED_FINGERPRINT: a summary of the source run as
it was copied. A copy whose fingerprint is the source's is left alone. Any other copy (the
source run changed since, e.g. an interrupted sweep later resumed; or a publish was killed
before the fingerprint was set) is brought up to date in place: what it lacks is added, tags
and status are set again. No copy is deleted to be made again (a tracking server lets only an
experiment's managers delete runs; EDIT is enough here), so the copies keep their ids and links
to them stay valid; only a second copy of one run (a create that the HTTP client sent twice)
is deleted, where the server allows it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from tune_jobs.core.commands import command_line
from tune_jobs.core.errors import ConfigError, one_line
from tune_jobs.core.tracking import store
from tune_jobs.core.tracking.client import open_client, probe
from tune_jobs.core.tracking.failures import failure_line, unreachable
from tune_jobs.core.tracking.login import LOGIN_FIX, check_login
from tune_jobs.core.tracking.shapes import read_state
from tune_jobs.core.tracking.state import STATE_FILE
from tune_jobs.core.tracking.sweep_file import SWEEP_FILE, SweepRecord
from tune_jobs.core.tracking.uri import artifact_location, sqlite_file, tracking_uri, uri_scheme
from tune_jobs.core.tracking.view import LOCAL_UI, VIEW_TAG, view_url

log = logging.getLogger(__name__)

PUBLISHED_FROM = "tune_jobs.published_from"
PUBLISHED_FINGERPRINT = "tune_jobs.published_fingerprint"
OWN_TAGS = (PUBLISHED_FROM, PUBLISHED_FINGERPRINT)
PARENT_TAG = "mlflow.parentRunId"
RUN_NAME_TAG = "mlflow.runName"  # set by create_run / update_run from the run's name
# Tags of the source that name things a copy cannot have: `mlflow.log-model.history` lists the
# models logged with the run, which live in the source store's model registry and are not
# copied (the project logs none; its checkpoints are plain artifacts, and those are copied).
DROPPED_TAGS = ("mlflow.log-model.history",)
SWEEP_FOLDER = "results/ray/<experiment>-<sweep id>"

MAX_METRICS_PER_BATCH = 1000  # MLflow's limit per log_batch
MAX_TAGS_PER_BATCH = 100  # MLflow's limit for params, and for tags, per log_batch
FOUND_PAGE = 1000
PROBE_S = 5.0


# -- the source: the sweep and its store ------------------------------------------------------


@dataclass(frozen=True)
class Source:
    """A sweep's runs where it ran them: the store, its parent run, the experiment's name."""

    client: Any
    uri: str
    parent: Any
    experiment: Any
    sweep_dir: Path | None = None

    @property
    def sweep_id(self) -> str:
        return self.parent.data.tags["sweep.id"]


def looks_like_path(ref: str) -> bool:
    """Whether a user meant `ref` as a folder rather than a sweep id or an experiment's name (a
    folder of that name that is no sweep's does not make `phase1` a path)."""
    return os.sep in ref or "/" in ref or ref.startswith((".", "~")) or (Path(ref) / SWEEP_FILE).is_file()


def find_source(ref: str, mlflow_uri: str | None) -> Source:
    """The sweep `ref` names: its folder (holding sweep.json, which names the store), or, as
    report.py takes it, a sweep id, parent run id, experiment or study name in `mlflow_uri`
    (default $MLFLOW_TRACKING_URI or ./mlflow.db). `mlflow_uri` also overrides a folder's
    store (a folder copied from another machine). ConfigError when it cannot be found."""
    from tune_jobs.core.sweep_data import find_parent

    sweep_dir = None
    sweep_id = ref
    if looks_like_path(ref):
        sweep_dir = Path(ref).expanduser().resolve()
        if not sweep_dir.is_dir():
            raise ConfigError(
                f"no folder {sweep_dir}; pass the sweep's folder ({SWEEP_FOLDER}, the one holding {SWEEP_FILE}) "
                "or its sweep id"
            )
        if not (sweep_dir / SWEEP_FILE).is_file():
            raise ConfigError(
                f"{sweep_dir} is not a sweep folder (no {SWEEP_FILE}); pass {SWEEP_FOLDER} or the sweep's id"
            )
        record = SweepRecord.read(sweep_dir)
        sweep_id = record.sweep_id
        uri = tracking_uri(mlflow_uri or record.tracking_uri)
    else:
        uri = tracking_uri(mlflow_uri)
    db = sqlite_file(uri)
    if db is not None and not db.exists():
        if mlflow_uri:
            where = "--mlflow-uri"
        elif sweep_dir:
            where = f"named in {sweep_dir / SWEEP_FILE}; a folder from another machine"
        else:
            where = "run from the folder holding mlflow.db"
        raise ConfigError(f"no MLflow store at {db} ({where}); pass the sweep's store as --mlflow-uri sqlite:///PATH")
    client = SideClient(source_client(uri), uri)
    try:
        parent = find_parent(client, sweep_id)
    except ConfigError as exc:
        if sweep_dir is None:
            raise
        replay = command_line("python", "tune_jobs/report.py", "--replay", sweep_dir)
        raise ConfigError(
            f"sweep {sweep_id} has no runs in {uri} ({exc}); if MLflow was down while it ran, send them first: {replay}"
        ) from None
    return Source(client, uri, parent, client.get_experiment(parent.info.experiment_id), sweep_dir)


def source_client(uri: str) -> Any:
    """The source store's client; a server that does not answer or refuses is a ConfigError."""
    if uri_scheme(uri) in ("http", "https") and not probe(uri, PROBE_S):
        raise ConfigError(f"MLflow at {uri} does not answer; start it, or pass --mlflow-uri with the sweep's store")
    try:
        return open_client(uri)
    except Exception as exc:
        raise refusal(exc, uri, "--mlflow-uri", "read it") or marked(exc, uri) from None


def unsent_note(sweep_dir: Path | None) -> str:
    """A warning when the sweep's folder holds results its store does not have yet (MLflow was
    down, or the driver was killed before its last sync); '' when not, or when it cannot tell.
    Read only: a running sweep is not disturbed."""
    if sweep_dir is None:
        return ""
    try:
        state, _ = read_state(sweep_dir / STATE_FILE)
        size = (sweep_dir / "mlflow_journal.jsonl").stat().st_size
    except Exception:
        return ""
    if not state or size <= state["journal_offset"]:
        return ""
    replay = command_line("python", "tune_jobs/report.py", "--replay", sweep_dir)
    return (
        f"the sweep's folder holds {size - state['journal_offset']} bytes of results its store does not have yet; "
        f"unless the sweep is still running, send them with {replay}, then publish again"
    )


def source_runs(client: Any, source: Source) -> list[Any]:
    """Every run of the sweep in its experiment, the parent first, then in the order they started."""
    sweep_id = source.sweep_id.replace("'", "")
    runs = list(_search(client, source.parent.info.experiment_id, f"tags.`sweep.id` = '{sweep_id}'"))
    parent_id = source.parent.info.run_id
    return sorted(runs, key=lambda r: (r.info.run_id != parent_id, r.info.start_time or 0, r.info.run_id))


def _search(client: Any, experiment_id: str, where: str) -> Iterator[Any]:
    """The active runs of an experiment matching `where`, page after page."""
    token = None
    while True:
        page = client.search_runs([experiment_id], filter_string=where, max_results=FOUND_PAGE, page_token=token)
        yield from page
        token = page.token
        if not token:
            return


# -- what a run holds, and its fingerprint ----------------------------------------------------


@dataclass
class Snapshot:
    """A source run as read now: what a copy must hold."""

    run: Any
    histories: dict[str, list[Any]]  # metric key -> every point (mlflow.entities.Metric)
    artifacts: dict[str, int]  # path -> size in bytes
    fingerprint: str = ""

    @property
    def run_id(self) -> str:
        return self.run.info.run_id


def artifact_files(client: Any, run_id: str, path: str | None = None) -> dict[str, int]:
    """Every artifact file of a run, by path, with its size."""
    files: dict[str, int] = {}
    for item in client.list_artifacts(run_id, path):
        if item.is_dir:
            files.update(artifact_files(client, run_id, item.path))
        else:
            files[item.path] = item.file_size or 0
    return files


def point_key(metric: Any) -> tuple[int, int, str]:
    """A metric point as one value to compare: NaN is never equal to itself, its text is."""
    value = metric.value
    return metric.step, metric.timestamp, "nan" if math.isnan(value) else repr(float(value))


def snapshot(client: Any, run: Any) -> Snapshot:
    run_id = run.info.run_id
    histories = {key: list(client.get_metric_history(run_id, key)) for key in sorted(run.data.metrics)}
    snap = Snapshot(run, histories, artifact_files(client, run_id))
    snap.fingerprint = fingerprint(snap)
    return snap


def fingerprint(snap: Snapshot) -> str:
    """What the source run held when it was copied, in words a person can read (status, end
    time, how many metric points, params, tags and artifact files), and a digest of all of it
    (each value, point and file size), so that a change that leaves the counts alone still shows."""
    info, data = snap.run.info, snap.run.data
    tags = {k: v for k, v in data.tags.items() if k not in OWN_TAGS}
    points = sum(len(h) for h in snap.histories.values())
    content = {
        "info": [info.run_name, info.status, info.start_time, info.end_time],
        "params": sorted(data.params.items()),
        "tags": sorted(tags.items()),
        "metrics": {k: sorted(point_key(m) for m in h) for k, h in snap.histories.items()},
        "artifacts": sorted(snap.artifacts.items()),
    }
    digest = hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return (
        f"{info.status} end={info.end_time} metric_points={points} params={len(data.params)} tags={len(tags)} "
        f"artifacts={len(snap.artifacts)} digest={digest}"
    )


# -- the destination: checked before anything is copied --------------------------------------


@dataclass(frozen=True)
class Destination:
    client: Any
    uri: str
    experiment_id: str


def refusal(
    exc: BaseException, uri: str, flag: str, what: str, fix: str = "ask an admin of that server for access"
) -> ConfigError | None:
    """The one line for a server that refuses the login (401) or the permission (403) to do
    `what` (`fix` says what to ask for), or does not answer; None for any other failure."""
    code = str(getattr(exc, "error_code", ""))
    where = f"MLflow at {uri}"
    if code == "UNAUTHENTICATED" or " 401" in str(exc):
        return ConfigError(f"{where} refused the login (HTTP 401); {LOGIN_FIX}")
    if code == "PERMISSION_DENIED" or " 403" in str(exc):
        return ConfigError(f"{where} refused the permission to {what} (HTTP 403); {fix}")
    if uri_scheme(uri) in ("http", "https") and unreachable(exc):
        return ConfigError(f"{where} does not answer ({one_line(exc)[:200]}); start it, or check {flag}")
    return None


def open_destination(uri: str, source: Source) -> Destination:
    """The destination store, checked before anything is copied: it answers, takes the login,
    and lets this user write to the sweep's experiment (created if missing). The first write is
    the sweep's saved UI view on that experiment, so a refusal comes before any run is made."""
    if uri == source.uri:
        raise ConfigError(f"--to names the store the sweep is in ({uri}); give the team's server or another store")
    if uri_scheme(uri) in ("http", "https") and not probe(uri, PROBE_S):
        raise ConfigError(
            f"MLflow at {uri} does not answer; start it, or check --to (from a laptop, a server on a "
            "cluster's head is reached through an SSH tunnel: ssh -L 5000:127.0.0.1:5000 HEAD)"
        )
    db = sqlite_file(uri)
    if db is not None and not db.parent.is_dir():
        raise ConfigError(f"--to: folder {db.parent} does not exist; create it first")
    check_login(uri, source.experiment.name)  # a team server's login and permission, as a sweep's
    # MLflow prints a "View run ... at" line per closed run on a server; the publish prints its own.
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    name = source.experiment.name
    step, fix = "read experiments", f"ask an admin of that server for EDIT on experiment {name!r}"
    try:
        store.prepare_store(uri, flag="--to")
        client = open_client(uri)
        experiment = client.get_experiment_by_name(name)
        if experiment is not None and experiment.lifecycle_stage != "active":
            raise ConfigError(
                f"experiment {name!r} is deleted in {uri}; restore it "
                f"(mlflow experiments restore --experiment-id {experiment.experiment_id}) and publish again"
            )
        if experiment is None:
            step = f"create experiment {name!r}"
            fix = "ask an admin of that server to create it and give you EDIT on it"
            experiment_id = client.create_experiment(name, artifact_location=artifact_location(uri))
        else:
            experiment_id = experiment.experiment_id
        step, fix = f"write to experiment {name!r}", "ask an admin of that server for EDIT on it"
        view = source.experiment.tags.get(VIEW_TAG)
        if view is not None:
            client.set_experiment_tag(experiment_id, VIEW_TAG, view)
        else:  # nothing of the sweep's to set: a tag of our own checks the permission instead
            client.set_experiment_tag(experiment_id, "tune_jobs.published", "true")
    except ConfigError:
        raise
    except Exception as exc:
        raise refusal(exc, uri, "--to", step, fix) or marked(exc, uri) from None
    return Destination(SideClient(client, uri), uri, experiment_id)


def browse_line(dest: Destination, has_view: bool) -> str:
    """How a person opens the published sweep: a server's page, or the UI on a SQLite store."""

    def page(base: str) -> str:
        return view_url(base, dest.experiment_id) if has_view else f"{base}/#/experiments/{dest.experiment_id}"

    if uri_scheme(dest.uri) in ("http", "https"):
        return page(dest.uri.rstrip("/"))
    if sqlite_file(dest.uri) is not None:
        return f"{command_line('mlflow', 'ui', '--backend-store-uri', dest.uri, '--port', '5000')}   then open {page(LOCAL_UI)}"
    return f"{dest.uri}, experiment {dest.experiment_id}"


# -- the copy ---------------------------------------------------------------------------------


@dataclass
class Published:
    """What a publish did, run by run."""

    copied: list[str] = field(default_factory=list)  # made, or finished after a publish that stopped half-way
    updated: list[str] = field(default_factory=list)  # a complete copy of an older state of the run
    already: list[str] = field(default_factory=list)  # the copy was the source's
    running: list[str] = field(default_factory=list)  # still RUNNING in the source
    ids: dict[str, str] = field(default_factory=dict)  # source run id -> the copy's


def wanted_tags(snap: Snapshot, ids: Mapping[str, str], sources: set[str], store_label: str) -> dict[str, str]:
    """The tags the copy of `snap` must hold: the source's, less those it cannot have, with the
    run ids of the sweep's runs (its parent's in `mlflow.parentRunId`, the best trial's in
    `sweep.best_run_id`) rewritten to the copies' ids; a run id not copied yet is left out
    (set when its copy exists). The name goes by create_run/update_run, the fingerprint last."""
    tags = {}
    for key, value in snap.run.data.tags.items():
        if key in DROPPED_TAGS or key in OWN_TAGS or key == RUN_NAME_TAG:
            continue
        if value in sources or key == PARENT_TAG:
            # A parent outside the sweep is not copied: the run is left un-nested rather than
            # pointing at an id the destination does not have.
            if value in ids:
                tags[key] = ids[value]
            continue
        tags[key] = value
    tags[PUBLISHED_FROM] = f"{store_label}#{snap.run_id}"
    return tags


def source_of(run: Any) -> str:
    """The source run id a copy names in PUBLISHED_FROM ('' for a run not published)."""
    return run.data.tags.get(PUBLISHED_FROM, "").rpartition("#")[2]


def existing_copies(dest: Destination, sweep_id: str, sources: set[str]) -> dict[str, Any]:
    """The destination's copies of the sweep's runs, by source run id. Two copies of one run
    (a create the HTTP client sent twice, two publishes at once) are one too many: the complete
    one, else the first made, is kept and the other deleted, if the server lets this user."""
    found: dict[str, list[Any]] = {}
    for run in _search(dest.client, dest.experiment_id, f"tags.`sweep.id` = '{sweep_id.replace(chr(39), '')}'"):
        if source_of(run) in sources:
            found.setdefault(source_of(run), []).append(run)
    kept = {}
    for source_id, runs in found.items():
        runs.sort(key=lambda r: (PUBLISHED_FINGERPRINT not in r.data.tags, r.info.start_time or 0, r.info.run_id))
        kept[source_id] = runs[0]
        for twin in runs[1:]:
            try:
                dest.client.delete_run(twin.info.run_id)
            except Exception as exc:
                log.warning("run %s is copied twice on %s; %s", twin.info.run_name, dest.uri, one_line(exc)[:200])
    return kept


def publish(source: Source, dest: Destination, say: Callable[[str], None] = lambda line: None) -> Published:
    """Copy the sweep's runs from `source` to `dest` (see the module's docstring); `say` gets a
    line per run as it is done. A store's failure is raised as it comes: what is done stays
    done, and the next publish goes on from there."""
    label = source.uri  # holds no password: tracking_uri refuses one
    snaps = [snapshot(source.client, run) for run in source_runs(source.client, source)]
    sources = {s.run_id for s in snaps}
    copies = existing_copies(dest, source.sweep_id, sources)
    done = Published(ids={sid: run.info.run_id for sid, run in copies.items()})
    # Every copy is made first, the parent's before its trials', so that each is nested from
    # the start and every id a tag names is known when the runs are filled.
    for snap in snaps:
        if snap.run_id not in done.ids:
            tags = wanted_tags(snap, done.ids, sources, label)
            run = dest.client.create_run(
                dest.experiment_id, start_time=snap.run.info.start_time, tags=tags, run_name=snap.run.info.run_name
            )
            done.ids[snap.run_id] = run.info.run_id
    # The parent is filled last: a parent marked complete means its trials are.
    for snap in [*snaps[1:], snaps[0]]:
        copy = copies.get(snap.run_id)
        name = snap.run.info.run_name
        if snap.run.info.status == "RUNNING":
            done.running.append(name)
        want = wanted_tags(snap, done.ids, sources, label)
        if copy is not None and copy.data.tags.get(PUBLISHED_FINGERPRINT) == snap.fingerprint:
            # Up to date; only the ids it names may have moved (a copy deleted by hand and made again).
            _set_tags(dest.client, done.ids[snap.run_id], _changed(copy.data.tags, want))
            done.already.append(name)
            continue
        fill(source.client, dest.client, snap, done.ids[snap.run_id], copy, want)
        complete = copy is not None and PUBLISHED_FINGERPRINT in copy.data.tags
        (done.updated if complete else done.copied).append(name)
        say(f"{'updated' if complete else 'copied'} {name}")
    return done


def _changed(have: Mapping[str, str], want: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in want.items() if have.get(k) != v}


def _set_tags(client: Any, run_id: str, tags: Mapping[str, str]) -> None:
    from mlflow.entities import RunTag

    items = [RunTag(k, v) for k, v in tags.items()]
    for i in range(0, len(items), MAX_TAGS_PER_BATCH):
        client.log_batch(run_id, tags=items[i : i + MAX_TAGS_PER_BATCH])


def fill(src: Any, dst: Any, snap: Snapshot, copy_id: str, copy: Any, want: Mapping[str, str]) -> None:
    """Bring the copy `copy_id` (its run as found, None when just made) up to `snap`: params,
    tags, metric points and artifact files it lacks, then its name, status and end time, and
    last the fingerprint that marks it complete. Each step adds only what is missing, so a fill
    cut off half-way is finished by the next."""
    from mlflow.entities import Metric, Param

    info = snap.run.info
    have_params = copy.data.params if copy is not None else {}
    for key, value in snap.run.data.params.items():
        if key in have_params and have_params[key] != value:  # MLflow never changes a param's value
            log.warning(
                "run %s: param %s is %r on the destination, %r in the source",
                info.run_name,
                key,
                have_params[key],
                value,
            )
    params = [Param(k, v) for k, v in sorted(snap.run.data.params.items()) if k not in have_params]
    for i in range(0, len(params), MAX_TAGS_PER_BATCH):
        dst.log_batch(copy_id, params=params[i : i + MAX_TAGS_PER_BATCH])

    have_tags = copy.data.tags if copy is not None else {}
    _set_tags(dst, copy_id, _changed(have_tags, want))
    for key in have_tags:
        # Tags the source no longer has (a resumed sweep clears an interrupted trial's); MLflow's
        # own (mlflow.user, mlflow.runName, ...) are the server's to keep.
        if key not in want and not key.startswith("mlflow.") and key not in OWN_TAGS:
            dst.delete_tag(copy_id, key)

    points: list[Any] = []
    for key, history in snap.histories.items():
        have = Counter(point_key(m) for m in dst.get_metric_history(copy_id, key)) if copy is not None else Counter()
        for metric in history:
            if have[point_key(metric)] > 0:
                have[point_key(metric)] -= 1
            else:
                points.append(Metric(key, metric.value, metric.timestamp, metric.step))
    for i in range(0, len(points), MAX_METRICS_PER_BATCH):
        dst.log_batch(copy_id, metrics=points[i : i + MAX_METRICS_PER_BATCH])

    have_files = artifact_files(dst, copy_id) if copy is not None else {}
    missing = [p for p, size in sorted(snap.artifacts.items()) if have_files.get(p) != size]
    copy_artifacts(src, dst, snap.run_id, copy_id, missing)

    now = dst.get_run(copy_id).info
    if now.run_name != info.run_name:
        dst.update_run(copy_id, name=info.run_name)
    if (now.status, now.end_time) != (info.status, info.end_time):
        if info.end_time is None:  # still running: MLflow keeps the copy's end time (none)
            dst.update_run(copy_id, status=info.status)
        else:
            dst.set_terminated(copy_id, status=info.status, end_time=info.end_time)
    dst.set_tag(copy_id, PUBLISHED_FINGERPRINT, snap.fingerprint)


def copy_artifacts(src: Any, dst: Any, source_id: str, copy_id: str, paths: list[str]) -> None:
    """Copy artifact files one at a time through a temporary folder (a checkpoint may be large:
    only one is on the disk at once), each to the same path in the copy."""
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"  # a bar per file is noise
    for path in paths:
        with tempfile.TemporaryDirectory(prefix="publish-") as tmp:
            local = src.download_artifacts(source_id, path, tmp)
            folder = PurePosixPath(path).parent.as_posix()
            dst.log_artifact(copy_id, local, None if folder == "." else folder)


def store_failure(exc: BaseException) -> str | None:
    """One line for a store that failed (a call through SideClient), naming the store that
    did; None for a failure of anything else."""
    uri = getattr(exc, "store_uri", None)
    return None if uri is None else failure_line(exc, uri)


def marked(exc: BaseException, uri: str) -> BaseException:
    """`exc`, marked as the failure of the store at `uri`."""
    exc.from_store = True  # type: ignore[attr-defined]
    exc.store_uri = uri  # type: ignore[attr-defined]
    return exc


class SideClient:
    """An MLflow client whose every failure is marked as its store's (failures.py), with the
    store's URI, so that the one line says which of the two failed."""

    def __init__(self, client: Any, uri: str) -> None:
        self._client, self._uri = client, uri

    @property
    def tracking_uri(self) -> str:
        return self._uri

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._client, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                return method(*args, **kwargs)
            except Exception as exc:
                raise marked(exc, self._uri) from None

        return call
