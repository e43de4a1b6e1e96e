"""What failed, in words: one of the sweep's own files, or the tracking store (a server that
does not answer apart from one that refuses). A store call's exception is marked as the store's
(`mark_store`) where it is raised, so a message never blames the wrong side."""

from __future__ import annotations

from tune_jobs.core.errors import one_line
from tune_jobs.core.tracking.uri import sqlite_file, uri_scheme


class SweepFileError(Exception):
    """One of the sweep's own files cannot be read or written (the message names it)."""


class SweepBusy(SweepFileError):
    """Another process writes this sweep's files (its driver, or a replay)."""


def mark_store(exc: BaseException) -> BaseException:
    exc.from_store = True  # type: ignore[attr-defined]
    return exc


def from_store(exc: BaseException) -> bool:
    """Whether `exc` was raised by a call to the tracking store (not by our own files)."""
    return bool(getattr(exc, "from_store", False))


def mark_if_from_store(exc: BaseException) -> bool:
    """Whether `exc` is an MLflow error (the store failed, as opposed to our code); if it is,
    it is marked so that failure_line says so."""
    from mlflow.exceptions import MlflowException

    if isinstance(exc, MlflowException):
        exc.from_store = True  # type: ignore[attr-defined]
        return True
    return False


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
