"""Logins to a team's tracking server (MLflow's basic-auth app), checked before Ray starts.

A sweep gives its login the way MLflow does: MLFLOW_TRACKING_USERNAME and
MLFLOW_TRACKING_PASSWORD, or ~/.mlflow/credentials. A wrong password or a user who may only read
the experiment would otherwise fail every trial's records one by one, long after the sweep
began; here it is one line. A server that does not answer is left to the sweep, which keeps
its records until the server is back. Passwords never leave this process: not in a URI, a
param, a tag, sweep.json, a log, or the environment of Ray's processes.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from base64 import b64encode
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tune_jobs.core.commands import command_line
from tune_jobs.core.errors import ConfigError

USERS_TOOL = ("python", "-m", "tune_jobs.mlflow_users")
LOGIN_FIX = "set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or write them to ~/.mlflow/credentials)"
WRITES = ("EDIT", "MANAGE")
# What a sweep's own processes may hold but Ray's processes (trials, workers) must not inherit.
SECRETS = ("MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_CLIENT_CERT_PATH", "PGPASSWORD")


def credentials() -> tuple[str | None, str | None]:
    """MLflow's own reading of the login: environment first, then ~/.mlflow/credentials."""
    from mlflow.utils.credentials import read_mlflow_creds

    creds = read_mlflow_creds()
    return creds.username, creds.password


# A server whose health check does not answer this fast is left to the sweep (which never waits
# on MLflow): a hung one would otherwise hold every sweep's start. The health check is cheap (no
# login, no database), so a busy server still answers it in time.
FIRST_ANSWER_S = 1.5


def _get(uri: str, path: str, login: tuple[str | None, str | None], **params: str) -> tuple[int, Any]:
    """(HTTP status, JSON body or None) of GET uri/path; status 0 when the server does not answer."""
    url = f"{uri.rstrip('/')}{path}" + (f"?{urllib.parse.urlencode(params)}" if params else "")
    request = urllib.request.Request(url)
    user, password = login
    if user is not None:
        token = b64encode(f"{user}:{password or ''}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status, body = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read()
    except (OSError, ValueError):
        return 0, None
    try:
        return status, json.loads(body)
    except ValueError:
        return status, None


def check_login(uri: str, experiment: str) -> None:
    """ConfigError unless the server at `uri` lets this login write runs to `experiment` (a
    server without logins, or one that does not answer now, passes)."""
    if urllib.parse.urlsplit(uri).scheme not in ("http", "https"):
        return
    from tune_jobs.core.tracking.client import probe

    if not probe(uri, FIRST_ANSWER_S):
        return
    login = credentials()
    status, me = _get(uri, "/api/2.0/mlflow/users/current", login)
    if status in (0, 404) or status >= 500:  # down, no logins, or failing: the sweep copes with those
        return
    if status == 401:
        if login[0] is None:
            raise ConfigError(f"the MLflow server at {uri} asks for a login; {LOGIN_FIX}")
        raise ConfigError(
            f"the MLflow server at {uri} refused the login of user {login[0]!r} (wrong password, or no such user); "
            f"check MLFLOW_TRACKING_PASSWORD (or ~/.mlflow/credentials), or ask the server's admin to create "
            f"the user: {command_line(*USERS_TOOL, 'add', login[0])}"
        )
    if status != 200 or not isinstance(me, dict):
        return
    user = me.get("user") or {}
    if user.get("is_admin"):
        return
    status, found = _get(uri, "/api/2.0/mlflow/experiments/get-by-name", login, experiment_name=experiment)
    if status != 200 or not isinstance(found, dict):
        return  # not there yet: the sweep creates it and its user may manage it
    experiment_id = found["experiment"]["experiment_id"]
    status, allowed = _get(
        uri,
        "/api/3.0/mlflow/users/permissions/get",
        login,
        username=user.get("username", login[0] or ""),
        resource_type="experiment",
        resource_id=experiment_id,
    )
    permission = allowed.get("permission") if status == 200 and isinstance(allowed, dict) else None
    if permission is not None and permission not in WRITES:
        raise ConfigError(
            f"user {user.get('username')!r} may only {permission} experiment {experiment!r} on {uri}, not log runs "
            f"to it; ask the server's admin to run: {command_line(*USERS_TOOL, 'grant', user.get('username', ''), experiment)}"
        )


@contextmanager
def secrets_withheld() -> Iterator[None]:
    """Processes started inside (Ray's, and through them every trial) do not inherit the
    sweep's passwords; this process has them back afterwards (its MLflow client reads them)."""
    kept = {key: os.environ.pop(key) for key in SECRETS if key in os.environ}
    try:
        yield
    finally:
        os.environ.update(kept)
