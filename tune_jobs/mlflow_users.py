"""Logins of a team's tracking server (started with `python -m tune_jobs.mlflow_server --auth`).

python -m tune_jobs.mlflow_users add alice                  # asks for alice's password twice
python -m tune_jobs.mlflow_users grant alice phase1 denoising  # alice may log runs to these experiments
python -m tune_jobs.mlflow_users grant bob phase1 --permission READ
python -m tune_jobs.mlflow_users passwd alice               # a new password for alice

Run by the server's admin: the admin's login comes as for any MLflow client, from
MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD or ~/.mlflow/credentials, and the server from
--mlflow-uri or MLFLOW_TRACKING_URI. A new password is read from the terminal (never an
argument, which `ps` and shell history would show), or from the first line of stdin when that
is not a terminal: `printf '%s\\n' "$PW" | python -m tune_jobs.mlflow_users add alice`. Every user
may read every experiment; logging runs to one needs EDIT (its creator has MANAGE).
"""

from __future__ import annotations

import getpass
import sys
from collections.abc import Sequence
from typing import Any

from tune_jobs.core.cli import OneLineParser
from tune_jobs.core.errors import ConfigError, one_line
from tune_jobs.core.tracking.login import LOGIN_FIX, check_uri_has_no_password, credentials
from tune_jobs.core.tracking.server_auth import MIN_PASSWORD, check_password

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


def _server(uri: str | None) -> str:
    import os

    uri = uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri or not uri.startswith(("http://", "https://")):
        raise ConfigError(
            f"--mlflow-uri {uri!r} is not a tracking server; give the server's address, e.g. --mlflow-uri http://127.0.0.1:5000"
            if uri
            else "which server? give --mlflow-uri http://HOST:PORT (or set MLFLOW_TRACKING_URI)"
        )
    check_uri_has_no_password(uri)
    return uri


def _call(uri: str, action: Any, *args: Any) -> Any:
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
                f"user {args[0]!r} exists already; a new password: python -m tune_jobs.mlflow_users passwd {args[0]}"
            ) from None
        if "not found" in text.lower() or "RESOURCE_DOES_NOT_EXIST" in text:
            raise ConfigError(
                f"no user {args[0]!r} on {uri}; create it: python -m tune_jobs.mlflow_users add {args[0]}"
            ) from None
        raise ConfigError(f"the MLflow server at {uri} refused: {text.splitlines()[0][:200]}") from None
    except OSError as exc:
        raise ConfigError(
            f"the MLflow server at {uri} does not answer ({exc}); start it, or check --mlflow-uri"
        ) from None


def _experiment_id(uri: str, name: str) -> str:
    """The experiment's id, created (owned by the admin) when it does not exist yet."""
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    found = _call(uri, client.get_experiment_by_name, name)
    return found.experiment_id if found is not None else _call(uri, client.create_experiment, name)


def main(argv: Sequence[str] | None = None) -> int:
    p = OneLineParser(prog="python -m tune_jobs.mlflow_users", description=__doc__.splitlines()[0])
    p.add_argument("--mlflow-uri", help="the server (default $MLFLOW_TRACKING_URI)")
    sub = p.add_subparsers(dest="command", required=True)
    add = sub.add_parser("add", help="create a user (password from the terminal or stdin)")
    add.add_argument("username")
    add.add_argument("--admin", action="store_true", help="make the user an admin too")
    passwd = sub.add_parser("passwd", help="give a user a new password")
    passwd.add_argument("username")
    grant = sub.add_parser("grant", help="let a user log runs to experiments (created if missing)")
    grant.add_argument("username")
    grant.add_argument("experiments", nargs="+", metavar="experiment")
    grant.add_argument("--permission", default="EDIT", choices=PERMISSIONS, help="default EDIT")
    args = p.parse_args(argv)
    try:
        import warnings

        with warnings.catch_warnings():  # the server's own modules warn about Starlette on import
            warnings.simplefilter("ignore")
            from mlflow.server import get_app_client
        uri = _server(args.mlflow_uri)
        users = get_app_client("basic-auth", tracking_uri=uri)
        if args.command == "add":
            _call(uri, users.get_user, credentials()[0] or "")  # the admin's login, before a password is asked
            password = read_password(args.username)
            _call(uri, users.create_user, args.username, password)
            if args.admin:
                _call(uri, users.update_user_admin, args.username, True)
            print(f"user {args.username} created on {uri}; they log in with MLFLOW_TRACKING_USERNAME={args.username}")
        elif args.command == "passwd":
            _call(uri, users.get_user, args.username)
            _call(uri, users.update_user_password, args.username, read_password(args.username))
            print(f"new password for {args.username} on {uri}")
        else:
            _call(uri, users.get_user, args.username)
            for experiment in args.experiments:
                experiment_id = _experiment_id(uri, experiment)
                _call(uri, users.grant_user_permission, args.username, "experiment", experiment_id, args.permission)
                print(f"{args.username} has {args.permission} on experiment {experiment} (id {experiment_id})")
    except ConfigError as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nstopped; nothing was changed after the last line printed", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
