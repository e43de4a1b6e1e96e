"""A tracking server with logins: MLflow's basic-auth app, set up so that it cannot start open.

Users, their passwords (hashed) and their permissions live in a database of their own (`--auth-db`:
beside a SQLite store, or the PostgreSQL database `<name>_auth` beside the store's). The app reads a
small settings file and needs a fixed secret for its login form; both are kept in a private
folder (`--auth-dir`). The first admin's password comes from MLFLOW_AUTH_ADMIN_PASSWORD at the
first start; the server refuses to start without it, with MLflow's well-known old default, or
while the admin still has that default. Every user may read every experiment; writing needs
EDIT, which the creator of an experiment has and an admin grants (python -m tune_jobs.mlflow_users).
"""

from __future__ import annotations

import configparser
import os
import secrets
import urllib.parse
from pathlib import Path

from tune_jobs.core.errors import ConfigError
from tune_jobs.core.tracking.uri import uri_scheme

ADMIN = "admin"
# The admin password MLflow shipped before 3.x; public, so never accepted.
OLD_DEFAULT_PASSWORD = "password1234"
MIN_PASSWORD = 12  # MLflow's own minimum
DEFAULT_AUTH_DIR = "~/.tune_jobs/mlflow_auth"
SECRET_FILE = "flask_secret"
CONFIG_FILE = "basic_auth.ini"
ADMIN_PASSWORD_ENV = "MLFLOW_AUTH_ADMIN_PASSWORD"
AUTH_CACHE_S = 60


def default_auth_db(backend: str) -> str:
    """Where users live when --auth-db is not given: beside the tracking store."""
    scheme = uri_scheme(backend)
    if scheme == "sqlite":
        return f"sqlite:///{Path(backend[len('sqlite:///') :]).parent / 'basic_auth.db'}"
    if scheme == "postgresql":
        parts = urllib.parse.urlsplit(backend)
        return urllib.parse.urlunsplit(parts._replace(path=f"{parts.path.rstrip('/')}_auth"))
    raise ConfigError(f"--auth with a {scheme} store needs --auth-db: the database for users and permissions")


def check_password(password: str, who: str, fix: str) -> None:
    """MLflow's rules for a password, as one line naming the fix."""
    if password == OLD_DEFAULT_PASSWORD:
        raise ConfigError(f"{who}: {OLD_DEFAULT_PASSWORD!r} is MLflow's old published default; {fix}")
    if len(password) < MIN_PASSWORD:
        raise ConfigError(f"{who} is shorter than {MIN_PASSWORD} characters; {fix}")


def check_admin(auth_db: str) -> None:
    """ConfigError unless the server's admin can log in with a password that is not public:
    the admin exists, or MLFLOW_AUTH_ADMIN_PASSWORD gives a sound one to create it with."""
    import warnings

    with warnings.catch_warnings():  # MLflow's server modules warn about Starlette on import
        warnings.simplefilter("ignore")
        from mlflow.server.auth.sqlalchemy_store import SqlAlchemyStore
    store = SqlAlchemyStore()
    try:
        store.init_db(auth_db)  # creates or upgrades the users' tables, as the server would
    except Exception as exc:
        raise ConfigError(
            f"--auth-db {_shown(auth_db)} cannot be opened ({_first_line(exc)}); create it first"
        ) from None
    given = os.environ.get(ADMIN_PASSWORD_ENV)
    fix = f"set {ADMIN_PASSWORD_ENV} to a new password of {MIN_PASSWORD} characters or more and start again"
    if not store.has_user(ADMIN):
        if not given:
            raise ConfigError(f"first start with logins: the admin needs a password; {fix}")
        check_password(given, ADMIN_PASSWORD_ENV, fix)
    elif store.authenticate_user(ADMIN, OLD_DEFAULT_PASSWORD) and (not given or given == OLD_DEFAULT_PASSWORD):
        raise ConfigError(f"the admin still has MLflow's old published default password; {fix} (it replaces it)")
    elif given:
        check_password(given, ADMIN_PASSWORD_ENV, fix)


def prepare(auth_dir: str | os.PathLike, auth_db: str) -> dict[str, str]:
    """The settings file and the form secret in `auth_dir` (made private), and the environment
    the server needs for them."""
    folder = Path(auth_dir).expanduser().resolve()
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        folder.chmod(0o700)
        secret = folder / SECRET_FILE
        if not secret.exists():  # fixed across restarts and workers, as the login form needs
            fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(secrets.token_hex(32))
        config = configparser.ConfigParser()
        config["mlflow"] = {
            "default_permission": "READ",
            "database_uri": auth_db,
            "admin_username": ADMIN,
            "authorization_function": "mlflow.server.auth:authenticate_request_basic_auth",
            # Checking a password hash (scrypt) costs a server worker 0.1-0.2 s of CPU: without this cache
            # every request of every sweep pays it, and four sweeps at once took minutes to log
            # what they logged in seconds. A new password (or a deleted user) reaches every worker
            # within this many seconds.
            "auth_cache_ttl_seconds": str(AUTH_CACHE_S),
        }
        settings = folder / CONFIG_FILE
        with open(settings, "w") as out:
            config.write(out)
    except OSError as exc:
        raise ConfigError(f"--auth-dir {folder}: {exc.strerror}; pick a folder this user may write") from None
    return {
        "MLFLOW_AUTH_CONFIG_PATH": str(settings),
        "MLFLOW_FLASK_SERVER_SECRET_KEY": secret.read_text().strip(),
    }


def _shown(uri: str) -> str:
    parts = urllib.parse.urlsplit(uri)
    if parts.password is None:
        return uri
    return urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@")))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__
