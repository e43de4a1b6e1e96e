"""Open an MLflow tracking store safely from any number of processes at once.

MLflow creates a SQLite store's schema (its Alembic migrations) the first time a process
opens the file, with nothing that keeps two processes apart: two sweeps started at once in a
new folder (two terminals, a SLURM array) run the same migrations over each other, both die,
and the file is left half-migrated, unusable by every later command. So every process of ours
that opens a SQLite store (the sweep driver, report.py, --replay, the MLflow server helper)
opens it through `open_client` / `prepare_store` (once per process): under an exclusive lock on a file beside the
database (`mlflow.db.lock`, filelock), it checks the store, repairs what can be repaired without
losing anything, lets MLflow create or open it, and only then lets the next process in. A new
store is created on a temporary file and renamed into place once complete (`_create_store`).

What the check does with a store that is not at this MLflow's schema:
- it holds no runs, experiments, models or traces (a creation that died half-way, e.g. the race
  above on an older version of this code): it is moved aside (`mlflow.db.unusable-<time>`, kept,
  not deleted) and created afresh;
- it is complete but a migration left Alembic's scratch tables (`_alembic_tmp_*`) behind: they
  are dropped;
- it holds data and an older MLflow's schema: one line naming the file and the fix
  (`mlflow db upgrade`, after a backup), never a migration behind the user's back;
- it holds data and was left half-migrated: one line naming the file; it cannot be repaired
  safely here.
Servers (http://, https://) and other databases are left to MLflow.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from tune_jobs.core.errors import ConfigError, one_line
from tune_jobs.core.tracking.uri import sqlite_file

log = logging.getLogger(__name__)

LOCK_WAIT_S = 600.0  # long enough for a slow creation; a stuck holder is named after it
# Tables whose rows are a user's data; a store with none of them holds nothing to lose.
DATA_TABLES = ("runs", "registered_models", "logged_models", "trace_info", "evaluation_datasets")


@contextlib.contextmanager
def store_lock(db: Path, wait_s: float = LOCK_WAIT_S) -> Iterator[None]:
    """Hold the exclusive lock of the SQLite store `db` (a `.lock` file beside it)."""
    db.parent.mkdir(parents=True, exist_ok=True)
    lock_path = db.with_name(db.name + ".lock")
    try:
        with FileLock(lock_path, timeout=wait_s, preserve_lock_file=True):
            yield
    except Timeout:
        raise ConfigError(
            f"another process has held {lock_path} for over {wait_s:.0f} s while opening the MLflow "
            "store; if none of ours is running, delete that file and run again"
        ) from None


def _mlflow_schema() -> tuple[str, set[str], set[str]] | None:
    """(head revision, every revision MLflow knows, the tables it expects), None if unknown.

    These are MLflow internals (mlflow.store.db.utils); if a later MLflow moves them the check
    is skipped and MLflow's own opening (still under the lock) decides."""
    try:
        from alembic.script import ScriptDirectory
        from mlflow.store.db import utils

        script = ScriptDirectory.from_config(utils._get_alembic_config(db_url=""))
        known = {rev.revision for rev in script.walk_revisions()}
        return utils._get_latest_schema_revision(), known, set(utils.Base.metadata.tables)
    except (ImportError, AttributeError):
        return None


def _holds_data(conn: sqlite3.Connection, tables: set[str]) -> bool:
    for table in DATA_TABLES:
        if table in tables and conn.execute(f'SELECT 1 FROM "{table}" LIMIT 1').fetchone():
            return True
    if "experiments" in tables:  # anything besides MLflow's own 'Default' experiment
        return conn.execute("SELECT 1 FROM experiments WHERE name != 'Default' LIMIT 1").fetchone() is not None
    return False


def _not_a_database(db: Path, exc: Exception, flag: str) -> ConfigError:
    return ConfigError(
        f"{db} is not a usable SQLite database ({one_line(exc)}); restore it from a backup or point "
        f"{flag} at another store"
    )


def readable_sqlite(db: Path, flag: str = "--mlflow-uri") -> None:
    """ConfigError when an existing store file is not an SQLite database, found read-only (so
    before its lock file or anything else is made beside it); `check_sqlite_store` decides the rest."""
    try:
        conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=20)
        try:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        finally:
            conn.close()
    except sqlite3.OperationalError:
        return  # locked, or a journal to roll back first: the check under the store's lock decides
    except sqlite3.DatabaseError as exc:  # not a database, or a malformed one
        raise _not_a_database(db, exc, flag) from None


def check_sqlite_store(db: Path, flag: str = "--mlflow-uri") -> None:
    """Make `db` fit for MLflow to open, or raise ConfigError naming it and `flag` (the option
    that points at another store). Call under store_lock."""
    if not db.exists() or db.stat().st_size == 0:
        return  # new: MLflow creates it
    schema = _mlflow_schema()
    if schema is None:
        return
    head, known, expected = schema
    try:
        # Opening rolls back a transaction a killed process left in the journal.
        with contextlib.closing(sqlite3.connect(db, timeout=60)) as conn:
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            rows = (
                conn.execute("SELECT version_num FROM alembic_version").fetchall()
                if "alembic_version" in tables
                else []
            )
            revision = rows[0][0] if len(rows) == 1 else None
            scratch = sorted(t for t in tables if t.startswith("_alembic_tmp_"))
            complete = revision == head and expected <= tables
            if complete and not scratch:
                return
            has_data = _holds_data(conn, tables)
            if complete and scratch:
                for table in scratch:
                    conn.execute(f'DROP TABLE "{table}"')
                conn.commit()
                log.warning(
                    "MLflow store %s: dropped %s left behind by an interrupted migration", db, ", ".join(scratch)
                )
                return
    except sqlite3.DatabaseError as exc:
        raise _not_a_database(db, exc, flag) from None
    if not has_data:
        aside = db.with_name(f"{db.name}.unusable-{time.strftime('%Y%m%d-%H%M%S')}")
        os.replace(db, aside)
        log.warning(
            "MLflow store %s was left half-created (schema %s) by an interrupted creation and held no runs; "
            "it is kept as %s and a new store is created",
            db,
            revision,
            aside,
        )
        return
    if revision in known and not scratch and revision != head:
        raise ConfigError(
            f"MLflow store {db} has the schema of an older MLflow (revision {revision}; this one needs {head}); "
            f"back it up, then run: mlflow db upgrade sqlite:///{db}"
        )
    if revision is not None and revision not in known:
        raise ConfigError(
            f"MLflow store {db} was written by a newer MLflow (schema revision {revision} is unknown here); "
            f"open it with that MLflow version, or point {flag} at another store"
        )
    leftovers = f", leftover tables {', '.join(scratch)}" if scratch else ""
    raise ConfigError(
        f"MLflow store {db} holds runs but was left half-migrated (schema revision {revision}{leftovers}) and cannot "
        f"be repaired safely here; restore it from a backup, or point {flag} at another store"
    )


# The stores this process has prepared, by file identity: the driver's preflight, its sync
# thread and its report open the same store once, while a store replaced meanwhile is checked.
_prepared: set[tuple[Path, int, int]] = set()


def _identity(db: Path) -> tuple[Path, int, int] | None:
    try:
        st = db.stat()
    except OSError:
        return None
    return (db, st.st_dev, st.st_ino) if st.st_size else None


def prepare_store(uri: str, flag: str = "--mlflow-uri") -> None:
    """Create, check or repair the store at `uri` once per process, under its lock (SQLite);
    nothing otherwise (a server, another database).

    Raises ConfigError (one line naming the file, and `flag` as the way to another store) when
    the store cannot be used as it is."""
    db = sqlite_file(uri)
    if db is None or _identity(db) in _prepared:
        return
    from mlflow import MlflowClient

    with store_lock(db), _quiet_migration():
        check_sqlite_store(db, flag)
        try:
            if not db.exists() or db.stat().st_size == 0:
                _create_store(db)
            MlflowClient(uri)  # checks the schema; the store stays cached
        except Exception as exc:
            raise ConfigError(f"cannot open the MLflow store {db}: {one_line(exc)[:300]}") from None
    prepared = _identity(db)
    if prepared is not None:
        _prepared.add(prepared)


def _create_store(db: Path) -> None:
    """Have MLflow create a new store at `db`, as a whole. Call under store_lock.

    MLflow's schema migrations are each a transaction, each synced to the disk on its own. They
    run instead on a temporary file beside `db` without a sync per transaction (SQLite's
    synchronous=OFF, for the connections to that file only), which is synced once and then
    renamed to `db` (bench/store_bytes.py measures the bytes saved): the store is either absent
    or complete, even after the machine crashed half-way. A temporary file a killed process left
    is removed first."""
    import uuid

    from mlflow import MlflowClient
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    for stale in db.parent.glob(f".{db.name}.creating-*"):
        stale.unlink(missing_ok=True)
    tmp = db.with_name(f".{db.name}.creating-{uuid.uuid4().hex[:12]}")

    def no_sync(dbapi_connection: Any, record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            files = [row[2] for row in cursor.execute("PRAGMA database_list")]
            if str(tmp) in files:
                cursor.execute("PRAGMA synchronous=OFF")
        except Exception:
            pass  # not SQLite
        finally:
            cursor.close()

    event.listen(Engine, "connect", no_sync)
    try:
        client = MlflowClient(f"sqlite:///{tmp}")
        client.search_experiments(max_results=1)  # the store exists (MLflow creates it on first use)
        engine = getattr(getattr(getattr(client, "_tracking_client", None), "store", None), "engine", None)
        if engine is not None:
            engine.dispose()  # its connections are of the temporary file, which becomes the store
        _fsync(tmp)
        os.replace(tmp, db)
        _fsync(db.parent)  # the rename itself
    finally:
        event.remove(Engine, "connect", no_sync)
        for leftover in (tmp, tmp.with_name(tmp.name + "-journal")):
            leftover.unlink(missing_ok=True)


@contextlib.contextmanager
def _quiet_migration() -> Iterator[None]:
    """MLflow's "Creating initial MLflow database tables..." and alembic's migration steps are
    INFO lines on the terminal before a sweep's first line; they say nothing a user acts on."""
    loggers = [logging.getLogger(name) for name in ("mlflow.store.db.utils", "alembic")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def _fsync(path: Path) -> None:
    """Have the disk hold what is written of `path` (a file, or a folder's entries)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def drop_cached_pages(db: Path) -> None:
    """Evict the store file's pages from the kernel's page cache (clean ones only: what is
    written stays). Linux may cache a file in large folios when it was written (or read ahead)
    in large pieces, e.g. a copy of the store, and a folio is dirtied and written back whole:
    each page SQLite rewrites in a transaction then costs the disk the folio around it
    (bench/store_bytes.py measures it). Evicted, the pages SQLite reads back come in small folios. The
    MLflow sync thread calls this before each sync of a SQLite store; it costs one open and
    one fadvise, and nothing where fadvise does not exist."""
    advise = getattr(os, "posix_fadvise", None)
    if advise is None:
        return
    try:
        fd = os.open(db, os.O_RDONLY)
    except OSError:
        return  # not there yet: MLflow creates it
    try:
        advise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    except OSError:
        pass
    finally:
        os.close(fd)
