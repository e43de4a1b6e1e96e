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

import sys
from collections.abc import Sequence

from tune_jobs.core.cli import OneLineParser
from tune_jobs.core.errors import ConfigError, one_line
from tune_jobs.core.tracking.login import credentials
from tune_jobs.core.tracking.users import PERMISSIONS, admin_client, call, experiment_id, read_password, server


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
        uri = server(args.mlflow_uri)
        users = admin_client(uri)
        if args.command == "add":
            call(uri, users.get_user, credentials()[0] or "")  # the admin's login, before a password is asked
            password = read_password(args.username)
            call(uri, users.create_user, args.username, password)
            if args.admin:
                call(uri, users.update_user_admin, args.username, True)
            print(f"user {args.username} created on {uri}; they log in with MLFLOW_TRACKING_USERNAME={args.username}")
        elif args.command == "passwd":
            call(uri, users.get_user, args.username)
            call(uri, users.update_user_password, args.username, read_password(args.username))
            print(f"new password for {args.username} on {uri}")
        else:
            call(uri, users.get_user, args.username)
            for experiment in args.experiments:
                found = experiment_id(uri, experiment)
                call(uri, users.grant_user_permission, args.username, "experiment", found, args.permission)
                print(f"{args.username} has {args.permission} on experiment {experiment} (id {found})")
    except ConfigError as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nstopped; nothing was changed after the last line printed", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
