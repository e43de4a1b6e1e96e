"""Where a sweep's records go: the MLflow tracking URI, its SQLite file, its artifacts, and how
often results are sent there."""

from __future__ import annotations

import math
import os
import urllib.parse
from pathlib import Path

from tune_jobs.core.errors import ConfigError


def uri_scheme(uri: str) -> str:
    """`postgresql+psycopg2://...` -> `postgresql`; '' when there is none."""
    return uri.split(":", 1)[0].split("+", 1)[0] if ":" in uri else ""


TRACKING_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql", "http", "https", "file", "databricks")


def tracking_uri(given: str | None) -> str:
    """The MLflow tracking URI: --mlflow-uri, else $MLFLOW_TRACKING_URI, else ./mlflow.db.

    A relative SQLite path is made absolute so that the store is the same from every process.
    """
    uri = given or os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:///mlflow.db"
    scheme = uri_scheme(uri)
    if scheme not in TRACKING_SCHEMES:
        raise ConfigError(
            f"MLflow tracking URI {uri!r} is not understood; use sqlite:///path.db, "
            "http://host:port or postgresql://..."
        )
    check_uri_has_no_password(uri, "--mlflow-uri" if given else "MLFLOW_TRACKING_URI")
    if scheme == "sqlite" and uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        uri = "sqlite:///" + str(Path(uri[len("sqlite:///") :]).resolve())
    return uri


def check_uri_has_no_password(uri: str, flag: str = "--mlflow-uri") -> None:
    """A password inside a URI ends up in sweep.json, logs and `ps`: refuse it, naming where it goes."""
    parts = urllib.parse.urlsplit(uri)
    if parts.password is None:
        return
    where = (
        "MLFLOW_TRACKING_PASSWORD (or ~/.mlflow/credentials)"
        if parts.scheme in ("http", "https")
        else "PGPASSWORD or ~/.pgpass (PostgreSQL's own password file)"
    )
    shown = parts._replace(netloc=f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else ""))
    raise ConfigError(f"{flag} {urllib.parse.urlunsplit(shown)} holds a password; leave it out and give it in {where}")


MLFLOW_EVERY_ENV = "TUNE_JOBS_MLFLOW_EVERY_S"


def mlflow_every(given: str | None = None) -> float | None:
    """Seconds between the batches of results a sweep sends MLflow: `given` (--mlflow-every),
    else $TUNE_JOBS_MLFLOW_EVERY_S, else None (the tracker's default). Raises ConfigError for
    anything but a number of seconds from 1 to 3600."""
    where = "--mlflow-every" if given is not None else MLFLOW_EVERY_ENV
    text = given if given is not None else os.environ.get(MLFLOW_EVERY_ENV, "")
    if not text.strip():
        return None
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not 1 <= seconds <= 3600:  # NaN fails too
        raise ConfigError(f"{where} {text!r} is not a number of seconds from 1 to 3600; use e.g. --mlflow-every 10")
    return seconds


def sqlite_file(uri: str) -> Path | None:
    """The database file of a `sqlite:///...` URI, else None (a server or another database)."""
    if uri_scheme(uri) != "sqlite" or not uri.startswith("sqlite:///"):
        return None
    path = uri[len("sqlite:///") :].split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


def artifact_location(uri: str) -> str | None:
    """Artifacts of a local store go to ./mlartifacts beside it; a server chooses its own."""
    if uri.startswith("sqlite:///"):
        return (Path(uri[len("sqlite:///") :]).parent / "mlartifacts").as_uri()
    return None
