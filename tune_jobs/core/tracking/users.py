"""What an admin does to a team server's logins (tune_jobs/mlflow_users.py is the command):
create users, give them new passwords, grant them experiments, through MLflow's basic-auth
client; each refusal of the server as one line."""

from __future__ import annotations

import getpass
import sys
from typing import Any

from tune_jobs.core.commands import command_line
from tune_jobs.core.errors import ConfigError
from tune_jobs.core.tracking.login import LOGIN_FIX, USERS_TOOL, credentials
from tune_jobs.core.tracking.server_auth import MIN_PASSWORD, check_password
from tune_jobs.core.tracking.uri import check_uri_has_no_password

PERMISSIONS = ("READ", "EDIT", "MANAGE", "NO_PERMISSIONS")


def read_password(username: str) -> str:
    """The new password: typed twice at a terminal, else the first line of stdin."""
    fix = f"choose one of {MIN_PASSWORD} characters or more"
    if sys.stdin.isatty():
        password = getpass.getpass(f"new password for {username}: ")
        if getpass.getpass("again: ") != password:
            raise ConfigError("the two passwords differ; run the command again")
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        raise ConfigError(f"no password given for {username}; {fix}")
    check_password(password, f"the password for {username}", fix)
    return password


def server(uri: str | None) -> str:
    """The server's address, checked: an http(s) URI without a password, answering now."""
    import os

    from tune_jobs.core.tracking.client import CLIENT_DEFAULTS, probe

    uri = uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri or not uri.startswith(("http://", "https://")):
        raise ConfigError(
            f"--mlflow-uri {uri!r} is not a tracking server; give the server's address, e.g. --mlflow-uri http://127.0.0.1:5000"
            if uri
            else "which server? give --mlflow-uri http://HOST:PORT (or set MLFLOW_TRACKING_URI)"
        )
    check_uri_has_no_password(uri)
    if not probe(uri, 10):
        raise ConfigError(f"the MLflow server at {uri} does not answer; start it, or check --mlflow-uri")
    for key, value in CLIENT_DEFAULTS.items():  # a request that fails says so in seconds, not minutes
        os.environ.setdefault(key, value)
    return uri


def call(uri: str, action: Any, *args: Any) -> Any:
    """An admin request, its refusals as one line."""
    from mlflow.exceptions import MlflowException

    try:
        return action(*args)
    except MlflowException as exc:
        text = str(exc)
        user = credentials()[0]
        if "401" in text or "not authenticated" in text.lower():
            who = f"the login of {user!r}" if user else "a request without a login"
            raise ConfigError(f"the MLflow server at {uri} refused {who}; {LOGIN_FIX} for an admin") from None
        if "403" in text or "Permission denied" in text:
            raise ConfigError(f"{user!r} is not an admin of the MLflow server at {uri}; log in as its admin") from None
        if "already exists" in text:
            raise ConfigError(
                f"user {args[0]!r} exists already; a new password: {command_line(*USERS_TOOL, 'passwd', args[0])}"
            ) from None
        if "not found" in text.lower() or "RESOURCE_DOES_NOT_EXIST" in text:
            raise ConfigError(
                f"no user {args[0]!r} on {uri}; create it: {command_line(*USERS_TOOL, 'add', args[0])}"
            ) from None
        raise ConfigError(f"the MLflow server at {uri} refused: {text.splitlines()[0][:200]}") from None
    except OSError as exc:
        raise ConfigError(
            f"the MLflow server at {uri} does not answer ({exc}); start it, or check --mlflow-uri"
        ) from None


def experiment_id(uri: str, name: str) -> str:
    """The experiment's id, created (owned by the admin) when it does not exist yet."""
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    found = call(uri, client.get_experiment_by_name, name)
    return found.experiment_id if found is not None else call(uri, client.create_experiment, name)


def admin_client(uri: str) -> Any:
    """MLflow's client of the basic-auth app at `uri` (its server modules warn on import)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from mlflow.server import get_app_client

        return get_app_client("basic-auth", tracking_uri=uri)
