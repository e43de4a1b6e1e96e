"""Start an MLflow tracking server for sweeps to share: SQLite or PostgreSQL, served artifacts.

python -m tune_jobs.mlflow_server                                   # sqlite:///mlflow.db, 127.0.0.1:5000
python -m tune_jobs.mlflow_server --backend-store-uri sqlite:////shared/mlflow/mlflow.db \\
       --artifacts-destination /shared/mlflow/artifacts --host 10.0.0.12 --port 5000
python -m tune_jobs.mlflow_server --backend-store-uri postgresql://mlflow@db.internal/mlflow --auth
python -m tune_jobs.mlflow_server --host 10.0.0.12 --stop-with-ray 10.0.0.12:6379   # a Ray head's server

It binds 127.0.0.1 unless --host says otherwise: reach it from your laptop through an SSH
tunnel (`ssh -L 5000:127.0.0.1:5000 head-node`). Sweeps log to it with
`--mlflow-uri http://HOST:PORT`; artifacts go through the server to --artifacts-destination,
so workers and laptops need no access to the artifact folder. With --auth, everyone logs in
(MLflow's basic-auth app; see tune_jobs/core/tracking/server_auth.py and tune_jobs.mlflow_users).
A database password never goes in a URI: PostgreSQL reads it from ~/.pgpass or PGPASSWORD.
With --stop-with-ray, the server
stops when the Ray head at that address does (`ray stop`, `ray down`): the cluster YAMLs start
it that way, so nothing of a cluster outlives it.
"""

from __future__ import annotations

import errno
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from tune_jobs.core.cli import OneLineParser
from tune_jobs.core.errors import ConfigError, one_line
from tune_jobs.core.tracking import server_auth, uri_scheme
from tune_jobs.core.tracking.mounts import network_store_warning
from tune_jobs.core.tracking.uri import check_uri_has_no_password

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5000
BACKENDS = ("sqlite", "postgresql", "mysql")
# uvicorn kills a worker that does not answer its health check within 5 s (its default): on a
# busy node, workers still importing MLflow are killed and restarted for ever.
WORKER_HEALTHCHECK_S = 120


def _backend(uri: str) -> str:
    """Check a backend store URI; a relative SQLite path is made absolute."""
    scheme = uri_scheme(uri)
    if scheme not in BACKENDS:
        raise ConfigError(
            f"--backend-store-uri {uri!r} is not a database URI; use sqlite:///path/mlflow.db "
            "or postgresql://user@host/db"
        )
    if scheme == "sqlite":
        if not uri.startswith("sqlite:///"):
            raise ConfigError(f"--backend-store-uri {uri!r}: write a SQLite file as sqlite:///path/mlflow.db")
        path = Path(uri[len("sqlite:///") :]).expanduser().resolve()
        if not path.parent.is_dir():
            raise ConfigError(f"--backend-store-uri: folder {path.parent} does not exist; create it first")
        warning = network_store_warning(f"sqlite:///{path}")
        if warning:
            print(warning, file=sys.stderr, flush=True)
        return f"sqlite:///{path}"
    check_uri_has_no_password(uri, "--backend-store-uri")
    return uri


def check_database(uri: str, flag: str) -> None:
    """ConfigError unless the PostgreSQL database at `uri` takes a connection now (the server
    would otherwise die in a traceback, or its workers restart for ever)."""
    if uri_scheme(uri) != "postgresql":
        return
    try:
        import psycopg
    except ImportError:
        raise ConfigError("a PostgreSQL store needs the psycopg driver: pip install -r requirements.txt") from None
    dsn = "postgresql" + uri[uri.index("://") :]  # SQLAlchemy's postgresql+psycopg:// is libpq's postgresql://
    try:
        psycopg.connect(dsn, connect_timeout=10).close()
    except psycopg.Error as exc:
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise ConfigError(
            f"{flag} {uri}: PostgreSQL refused the connection ({reason.removeprefix('FATAL:  ')}); "
            "check the database exists and the user's password is in ~/.pgpass or PGPASSWORD"
        ) from None


def server_command(
    *,
    backend_store_uri: str = "sqlite:///mlflow.db",
    artifacts_destination: str = "mlartifacts",
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    workers: int = 2,
    auth: bool = False,
) -> list[str]:
    """The `mlflow server` command line for these settings, checked."""
    if not 0 < port < 65536:
        raise ConfigError(f"--port {port} is not a TCP port; use 1..65535 (5000 is MLflow's usual)")
    if workers < 1:
        raise ConfigError(f"--workers {workers} must be at least 1")
    if not host or any(c.isspace() for c in host):
        raise ConfigError(f"--host {host!r} is not an address; use 127.0.0.1 or the node's private IP")
    backend = _backend(backend_store_uri)
    if "://" not in artifacts_destination:  # a local folder (s3://, gs:// ... pass through)
        artifacts_destination = str(Path(artifacts_destination).expanduser().resolve())
    mlflow = shutil.which("mlflow", path=str(Path(sys.executable).parent)) or shutil.which("mlflow")
    if mlflow is None:
        raise ConfigError("the mlflow command is not installed here; pip install -r requirements.txt")
    return [
        mlflow,
        "server",
        *(["--app-name", "basic-auth"] if auth else []),
        "--backend-store-uri",
        backend,
        "--artifacts-destination",
        artifacts_destination,
        "--serve-artifacts",
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--uvicorn-opts",
        f"--timeout-worker-healthcheck {WORKER_HEALTHCHECK_S}",
    ]


def url(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> str:
    """The tracking URI clients use (a server bound to every interface is reached locally)."""
    return f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"


def wait_until_up(tracking_uri: str, timeout: float = 60.0, proc: subprocess.Popen | None = None) -> None:
    """Block until the server answers its health check; raise if it does not in time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the MLflow server exited with code {proc.returncode} before it came up")
        try:
            with urllib.request.urlopen(f"{tracking_uri}/health", timeout=2) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    raise TimeoutError(f"the MLflow server at {tracking_uri} did not answer within {timeout:.0f} s")


def start(
    *,
    log_file: str | os.PathLike | None = None,
    timeout: float = 60.0,
    auth_dir: str | os.PathLike | None = None,
    auth_db: str | None = None,
    **settings,
) -> subprocess.Popen:
    """Start the server in the background and wait until it answers. Stop it with stop().
    With `auth_dir`, everyone logs in (see prepare_auth)."""
    cmd = server_command(auth=auth_dir is not None, **settings)
    env = dict(os.environ)
    if auth_dir is not None:
        env.update(prepare_auth(cmd, auth_dir, auth_db))
    else:
        check_database(_store_of(cmd), "--backend-store-uri")
    _prepare(cmd)
    out = open(log_file, "ab") if log_file else subprocess.DEVNULL  # noqa: SIM115 (the child owns it)
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    try:
        wait_until_up(url(settings.get("host", DEFAULT_HOST), settings.get("port", DEFAULT_PORT)), timeout, proc)
    except BaseException:
        stop(proc)
        raise
    return proc


def _store_of(cmd: list[str]) -> str:
    return cmd[cmd.index("--backend-store-uri") + 1]


def prepare_auth(cmd: list[str], auth_dir: str | os.PathLike, auth_db: str | None) -> dict[str, str]:
    """Check the databases and the admin's password for a server with logins; the environment
    the server needs (its settings file and form secret, kept in `auth_dir`)."""
    store = _store_of(cmd)
    auth_db = auth_db or server_auth.default_auth_db(store)
    check_uri_has_no_password(auth_db, "--auth-db")
    check_database(store, "--backend-store-uri")
    check_database(auth_db, "--auth-db")
    server_auth.check_admin(auth_db)
    return server_auth.prepare(auth_dir, auth_db)


def _prepare(cmd: list[str]) -> None:
    """Create or check a SQLite backend under its lock first (tune_jobs.core.tracking.store), so that the
    server never migrates a store at the same moment as a sweep or another server."""
    from tune_jobs.core.tracking.store import prepare_store

    prepare_store(cmd[cmd.index("--backend-store-uri") + 1], flag="--backend-store-uri")


def check_listen(host: str, port: int) -> None:
    """ConfigError unless the server can listen on host:port now: `host` is an address (or a
    name) of this machine and nothing listens on the port. Tried for real, with a socket bound
    and closed again before the server starts (uvicorn would only print the failure and hang)."""
    fix = "use 127.0.0.1 (this machine only), 0.0.0.0 (every interface) or this node's private IP"
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except (socket.gaierror, UnicodeError) as exc:
        reason = exc.strerror if isinstance(exc, socket.gaierror) else "not a valid name"
        raise ConfigError(f"--host {host!r} is not an address of this machine ({reason}); {fix}") from None
    try:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
            probe.bind(address)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(
                f"--port {port}: something already listens on {host}:{port}; stop it or pick another --port"
            ) from None
        if exc.errno == errno.EADDRNOTAVAIL:
            raise ConfigError(f"--host {host!r} is not an address of this machine ({exc.strerror}); {fix}") from None
        if exc.errno == errno.EACCES:
            raise ConfigError(
                f"--port {port}: not allowed to listen on {host}:{port} ({exc.strerror}); "
                "ports below 1024 need root, use e.g. --port 5000"
            ) from None
        raise ConfigError(
            f"cannot listen on {host}:{port} ({exc.strerror or exc}); pick another --host or --port"
        ) from None


def stop(proc: subprocess.Popen, timeout: float = 20.0) -> None:
    """Stop a server started with start(), workers included."""
    import signal

    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        except ProcessLookupError:
            pass


def ray_address(text: str) -> tuple[str, int]:
    """HOST:PORT of a Ray head's GCS (what `ray start --head --port` listens on)."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"--stop-with-ray {text!r} is not HOST:PORT; use the Ray head's address, e.g. 10.0.0.10:6379")
    return host, int(port)


def ray_is_up(address: tuple[str, int]) -> bool | None:
    """True when the Ray head's GCS port accepts a connection, False when it is refused (the
    head stopped), None when this cannot be told now (a timeout on a busy node)."""
    try:
        with socket.create_connection(address, timeout=5):
            return True
    except ConnectionRefusedError:
        return False
    except OSError:
        return None


def serve_while_ray_is_up(cmd: Sequence[str], address: tuple[str, int], poll_s: float = 1.0) -> int:
    """Run the server until the Ray head at `address` stops (or the server exits, or this
    process is told to stop), then stop the server and its workers."""
    import signal

    proc = subprocess.Popen(cmd, start_new_session=True)
    stopping = []
    for sig in (signal.SIGTERM, signal.SIGINT):  # not SIGHUP: `nohup` keeps it ignored
        signal.signal(sig, lambda *_: stopping.append(True))
    try:
        while proc.poll() is None and not stopping:
            if ray_is_up(address) is False:
                print(f"the Ray head at {address[0]}:{address[1]} stopped: stopping the MLflow server", flush=True)
                break
            time.sleep(poll_s)
    finally:
        stop(proc)
    return proc.returncode if proc.returncode and proc.returncode > 0 else 0


def main(argv: Sequence[str] | None = None) -> int:
    p = OneLineParser(prog="python -m tune_jobs.mlflow_server", description=__doc__.splitlines()[0])
    p.add_argument("--backend-store-uri", default="sqlite:///mlflow.db", help="sqlite:///path.db or postgresql://...")
    p.add_argument("--artifacts-destination", default="mlartifacts", help="folder (or s3://...) for artifacts")
    p.add_argument("--host", default=DEFAULT_HOST, help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="port (default 5000)")
    p.add_argument("--workers", type=int, default=2, help="server worker processes (default 2)")
    p.add_argument("--auth", action="store_true", help="everyone logs in (MLflow's basic-auth app)")
    p.add_argument(
        "--auth-db",
        help="database for users and permissions (default: basic_auth.db beside a SQLite store, "
        "the database NAME_auth beside a PostgreSQL one)",
    )
    p.add_argument(
        "--auth-dir",
        default=server_auth.DEFAULT_AUTH_DIR,
        help=f"private folder for the login settings and secret (default {server_auth.DEFAULT_AUTH_DIR})",
    )
    p.add_argument(
        "--stop-with-ray",
        metavar="HOST:PORT",
        help="stop the server when the Ray head at this address stops (ray stop, ray down)",
    )
    args = p.parse_args(argv)
    try:
        cmd = server_command(
            backend_store_uri=args.backend_store_uri,
            artifacts_destination=args.artifacts_destination,
            host=args.host,
            port=args.port,
            workers=args.workers,
            auth=args.auth,
        )
        if args.auth_db and not args.auth:
            raise ConfigError("--auth-db is for a server with logins; add --auth")
        ray_head = ray_address(args.stop_with_ray) if args.stop_with_ray else None
        if ray_head is not None and not ray_is_up(ray_head):  # checked before the store is made
            raise ConfigError(
                f"--stop-with-ray: no Ray head answers at {ray_head[0]}:{ray_head[1]}; start it first (ray start --head)"
            )
        check_listen(args.host, args.port)  # before the store is made
        if args.auth:
            os.environ.update(prepare_auth(cmd, args.auth_dir, args.auth_db))
        else:
            check_database(_store_of(cmd), "--backend-store-uri")
        _prepare(cmd)
        print(f"MLflow server: sweeps log with --mlflow-uri {url(args.host, args.port)}", flush=True)
        if ray_head is not None:
            return serve_while_ray_is_up(cmd, ray_head)
    except ConfigError as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 2
    os.execv(cmd[0], cmd)  # the server replaces this process: signals and exit codes are its own


if __name__ == "__main__":
    raise SystemExit(main())
