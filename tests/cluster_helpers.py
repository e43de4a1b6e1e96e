"""Helpers for the cluster tests: free ports, Ray nodes started (and stopped) by the test itself,
an MLflow server, and headless Chromium for its UI.

Nothing here runs `ray stop`: that would stop every Ray on the machine, other users' included.
Each node is one `ray start --block` process in its own session; SIGTERM makes it stop the
processes it started, and only those.
"""

from __future__ import annotations

import ctypes
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest
from helpers import free_port, job_env

from tune_jobs import mlflow_server

RAY = str(Path(sys.executable).parent / "ray")


def own_ray_token(monkeypatch: pytest.MonkeyPatch) -> None:
    """One Ray auth token of the test's own for its nodes and drivers: Ray 2.60 turns token auth
    on for a head when ~/.ray/auth_token exists, but for a joining node or driver only with
    RAY_AUTH_MODE=token."""
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.setenv("RAY_AUTH_TOKEN", secrets.token_hex(32))


def start_ray_node(
    log: Path, *, temp_dir: Path, head_port: int | None = None, address: str | None = None, **options: str
) -> subprocess.Popen:
    """`ray start --block` as a head (head_port) or a worker joining `address`, on 127.0.0.1."""
    cmd = [RAY, "start", "--block", "--node-ip-address=127.0.0.1", f"--temp-dir={temp_dir}", "--disable-usage-stats"]
    if head_port is not None:
        cmd += ["--head", f"--port={head_port}", "--include-dashboard=false"]
    else:
        cmd += [f"--address={address}"]
    cmd += [f"--dashboard-agent-listen-port={free_port()}", f"--metrics-export-port={free_port()}"]
    cmd += [f"--{k.replace('_', '-')}={v}" for k, v in options.items()]
    out = open(log, "ab")  # noqa: SIM115 (the child owns it)
    return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=job_env(), start_new_session=True)


def stop_ray_node(proc: subprocess.Popen, timeout: float = 60) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)  # `ray start --block` stops its own processes
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def alive_nodes(address: str) -> list[dict]:
    """The alive nodes of the cluster at `address`, asked by a short-lived driver."""
    code = (
        f"import json, ray; ray.init(address={address!r}, logging_level='ERROR', log_to_driver=False);"
        "print(json.dumps([{'id': n['NodeID'], 'resources': n['Resources']} for n in ray.nodes() if n['Alive']]))"
    )
    try:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=job_env(), timeout=60)
    except subprocess.TimeoutExpired:
        return []
    if out.returncode != 0:
        return []
    return json.loads(out.stdout.strip().splitlines()[-1])


def wait_for_nodes(address: str, count: int, procs: list[subprocess.Popen], timeout: float = 120) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for p in procs:
            if p.poll() is not None:
                raise RuntimeError(f"ray start exited with code {p.returncode}; see its log")
        nodes = alive_nodes(address)
        if len(nodes) >= count:
            return nodes
        time.sleep(2)
    raise TimeoutError(f"the Ray cluster at {address} did not reach {count} nodes in {timeout:.0f} s")


def processes_mentioning(text: str) -> list[int]:
    """PIDs whose command line mentions `text` (to check a test left nothing behind)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if text in (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


@contextmanager
def mlflow_server_at(folder: Path) -> Iterator[tuple[str, int]]:
    """tune_jobs.mlflow_server on 127.0.0.1 and a free port, its store and artifacts in `folder`."""
    port = free_port()
    proc = mlflow_server.start(
        host="127.0.0.1",
        port=port,
        backend_store_uri=f"sqlite:///{folder / 'mlflow.db'}",
        artifacts_destination=str(folder / "artifacts"),
        log_file=folder / "server.log",
        timeout=300,  # minutes, not seconds, on a loaded 2-core machine
    )
    try:
        yield mlflow_server.url("127.0.0.1", port), port
    finally:
        mlflow_server.stop(proc)


def chromium() -> str:
    """The headless browser for the UI checks; skipped without one, except in CI (CI=1)."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    if os.environ.get("CI"):
        pytest.fail("CI must run the MLflow UI tests: chromium is not installed (.ci/run installs it)")
    pytest.skip("chromium is not installed (apt-get install chromium)")


def render(browser: str, url: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    """Headless Chromium on `url` with its own profile folder, after the page's scripts ran."""
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars"]
    cmd += [f"--user-data-dir={profile}", "--window-size=1600,1000", "--virtual-time-budget=20000", *args, url]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180)


def shared_view(client, experiment_id: str, name: str, view: dict) -> str:
    """A saved view of the runs page (the UI's own "share" feature: an experiment tag the URL
    names); returns the page's path, to append to the server's URL."""
    client.set_experiment_tag(experiment_id, f"mlflow.sharedViewState.{name}", json.dumps(view))
    return f"/#/experiments/{experiment_id}/runs?viewStateShareKey={name}"


# Machines of the test's own on this one machine: each a network, PID, mount and UTS namespace
# (unshare), with its own address, sshd, /tmp, /run and home folder, on a LAN that exists only
# between the test's namespaces. `ray stop` on one sees only its own processes; Ray's and
# MLflow's fixed ports (6379, 8265, 5000) are its own; nothing else on this machine is touched.

LAN = "10.213.0"  # a /24 that exists only inside the test's network namespaces
MACHINE_INIT = r"""
# PID 1 of a test machine: private /tmp and /run, root's home in the machine's folder, its
# address on eth0 (which the test moves in), then sshd in the foreground (it reaps orphans).
set -eu
name=$1 address=$2 gateway=$3 dir=$4
shift 4
hostname "$name"
# The folders the machine image's Python needs that lie under /tmp (this test run's venv when
# the checkout was cloned there) stay where they are, bound into the machine's own /tmp.
for keep in "$@"; do
    mkdir -p "$dir/tmp/${keep#/tmp/}"
    mount --bind "$keep" "$dir/tmp/${keep#/tmp/}"
done
mount --rbind "$dir/tmp" /tmp
mount -t tmpfs -o mode=755 tmpfs /run
mkdir -p /run/sshd
for f in passwd shadow hosts; do mount --bind "$dir/etc/$f" "/etc/$f"; done
[ -L /etc/resolv.conf ] || mount --bind "$dir/etc/resolv.conf" /etc/resolv.conf
until ip link show eth0 > /dev/null 2>&1; do sleep 0.1; done
ip link set lo up
ip addr add "$address/24" dev eth0
ip link set eth0 up
# A default route, as a real machine has, so that Ray finds its address the way it does there
# (a UDP connect(), which sends nothing); the gateway is the LAN's bridge, which routes nowhere.
ip route add default via "$gateway"
exec /usr/sbin/sshd -D -e -f "$dir/sshd_config"
"""
SSHD_CONFIG = """\
ListenAddress {address}:22
HostKey {dir}/ssh_host_ed25519_key
AuthorizedKeysFile {authorized_keys}
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PrintMotd no
"""


def namespace_tools() -> list[str]:
    """What the machines need that is not installed (Debian: openssh-server, rsync, iproute2)."""
    tools = ("unshare", "nsenter", "ip", "sshd", "ssh", "ssh-keygen", "rsync", "curl")
    return [
        t for t in tools if shutil.which(t, path=os.pathsep.join([os.environ["PATH"], "/usr/sbin", "/sbin"])) is None
    ]


def pid_namespace(pid: int) -> str:
    return os.readlink(f"/proc/{pid}/ns/pid")


def processes_in(namespace: str) -> list[tuple[int, str]]:
    """(PID, command line) of the live processes of a PID namespace, zombies left out."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.readlink(entry / "ns" / "pid") != namespace or "\nState:\tZ" in (entry / "status").read_text():
                continue
            found.append((int(entry.name), (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()))
        except OSError:
            continue
    return found


def die_with_test() -> None:
    """For Popen's preexec_fn: the child gets its own session and is SIGKILLed when the test
    process dies, so that a test killed mid-run (SIGTERM skips its teardown) leaves no machine."""
    os.setsid()
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _kill(proc: subprocess.Popen) -> None:
    """SIGKILL an `unshare --fork --kill-child`: its child, the namespace's PID 1, goes with it,
    and with PID 1 every process of the namespace."""
    if proc.poll() is None:
        proc.kill()
    proc.wait()


class Lan:
    """A network namespace of the test's own holding a bridge (10.213.0.1): "the laptop", where
    `ray up`, `ray dashboard` and `ray job submit` run, and where the machines are plugged in."""

    address = f"{LAN}.1"

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            ["unshare", "--net", "--fork", "--kill-child", "--", "sleep", "infinity"], preexec_fn=die_with_test
        )
        time.sleep(0.2)  # unshare(2) happens before its fork
        for cmd in (
            "ip link set lo up",
            "ip link add br0 type bridge",
            f"ip addr add {self.address}/24 dev br0",
            "ip link set br0 up",
        ):
            self.run(cmd.split(), check=True)

    def command(self, cmd: list[str]) -> list[str]:
        return ["nsenter", "-t", str(self.proc.pid), "-n", "--", *cmd]

    def run(self, cmd: list[str], **kw) -> subprocess.CompletedProcess:
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        kw.setdefault("timeout", 120)
        return subprocess.run(self.command(cmd), **kw)

    def plug(self, pid: int, name: str) -> None:
        """A veth pair: `eth0` in the network namespace of `pid`, its peer on the bridge."""
        self.run(["ip", "link", "add", name, "type", "veth", "peer", "name", "eth0", "netns", str(pid)], check=True)
        self.run(["ip", "link", "set", name, "master", "br0", "up"], check=True)

    def close(self) -> None:
        _kill(self.proc)


class Machine:
    """One test machine on the LAN: `root@<address>` over SSH with the test's key, its home in
    `<dir>/home` (a fresh /etc/skel), its /tmp in `<dir>/tmp`; the rest of the file system is
    this machine's, as an NFS mount would be (the test's "shared" folder is seen by all)."""

    def __init__(self, lan: Lan, name: str, address: str, folder: Path, authorized_keys: Path) -> None:
        self.name, self.address, self.dir = name, address, folder
        self.home = folder / "home"
        (folder / "tmp").mkdir(parents=True)
        (folder / "tmp").chmod(0o1777)
        shutil.copytree("/etc/skel", self.home)
        etc = folder / "etc"
        etc.mkdir()
        home = str(self.home)
        (etc / "passwd").write_text(
            "".join(
                ":".join(f[:5] + [home] + f[6:]) + "\n" if f[0] == "root" else ":".join(f) + "\n"
                for f in (line.split(":") for line in Path("/etc/passwd").read_text().splitlines())
            )
        )
        shadow = [line.split(":") for line in Path("/etc/shadow").read_text().splitlines()]
        # root's password field "*": no password, not locked (sshd without PAM refuses a locked
        # account even for a key).
        (etc / "shadow").write_text(
            "".join(":".join(f[:1] + ["*" if f[0] == "root" else f[1]] + f[2:]) + "\n" for f in shadow)
        )
        (etc / "shadow").chmod(0o600)
        (etc / "hosts").write_text(f"127.0.0.1 localhost\n{address} {name}\n")
        (etc / "resolv.conf").write_text("")  # no name server: nothing here is looked up
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(folder / "ssh_host_ed25519_key")], check=True
        )
        (folder / "sshd_config").write_text(
            SSHD_CONFIG.format(address=address, dir=folder, authorized_keys=authorized_keys)
        )
        self.log = folder / "machine.log"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                ["unshare", "--net", "--mount", "--pid", "--uts", "--fork", "--kill-child", "--mount-proc", "--"]
                + ["bash", "-c", MACHINE_INIT, "init", name, address, lan.address, str(folder), *python_under_tmp()],
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=die_with_test,
            )
        time.sleep(0.2)  # unshare(2) happens before its fork
        lan.plug(self.proc.pid, f"v{name}"[:15])
        deadline = time.monotonic() + 60
        while "Server listening on" not in self.log.read_text():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"machine {name} did not start sshd:\n{self.log.read_text()}")
            time.sleep(0.2)
        self.namespace = pid_namespace(psutil.Process(self.proc.pid).children()[0].pid)

    def processes(self) -> list[tuple[int, str]]:
        """What runs on the machine besides its sshd (the daemon and its sessions)."""
        return [
            (pid, cmd) for pid, cmd in processes_in(self.namespace) if not cmd.startswith(("sshd:", "/usr/sbin/sshd"))
        ]

    def close(self) -> None:
        _kill(self.proc)


def python_under_tmp() -> list[str]:
    """This test run's venv and the Python it was made from, where they lie under /tmp (a
    checkout cloned there with its .venv, as CI does): a machine's own /tmp would hide them
    from the machine image's Python (provision_python)."""
    found = sorted({os.path.normpath(p) for p in (sys.prefix, sys.base_prefix)})
    under = [p for p in found if p.startswith("/tmp/")]
    return [p for p in under if not any(p.startswith(f"{q}/") for q in under)]


def provision_python(home: Path) -> None:
    """The machine image's Python: `~/venv` with this test run's packages already installed (a
    .pth to this venv's site-packages) and its commands (`ray`, `mlflow`, `pip`, ...), and a pip
    set up for a machine without network (every requirement must be installed already; the
    project's build uses the installed setuptools). The cluster YAML's own setup commands then
    run as written: `test -d ~/venv` finds it, pip installs the project from the rsynced copy."""
    venv = home / "venv"
    subprocess.run([sys._base_executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = venv / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    ours = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (site / "tune_sweeps_test_image.pth").write_text("".join(f"{p}\n" for p in sorted(ours)))
    bin_ = Path(sys.executable).parent
    for script in bin_.iterdir():
        target = venv / "bin" / script.name
        if target.exists() or not script.is_file():
            continue
        text = script.read_bytes()
        if text.startswith(f"#!{bin_}/python".encode()):
            target.write_bytes(b"#!" + str(venv / "bin" / "python").encode() + text[text.index(b"\n") :])
            target.chmod(0o755)
    pip_conf = home / ".config" / "pip" / "pip.conf"
    pip_conf.parent.mkdir(parents=True)
    # `no-build-isolation = false` is pip's spelling of --no-build-isolation in a config file.
    pip_conf.write_text("[global]\nno-index = true\n\n[install]\nno-build-isolation = false\n")


def replay_if_told(out: subprocess.CompletedProcess, workdir: Path) -> None:
    """A sweep through a server on a loaded machine may end before the server took every record
    (it waits for a slow server a tenth of its time at most) and then prints the replay command:
    run it, as its user would, so the test reads what the service promises, every record."""
    import re

    from helpers import run_job

    told = re.search(r"did not take everything.*?\n\s+\S+ \S+ --replay (\S+)", out.stdout, re.S)
    if told:
        replay = run_job(["report.py", "--replay", told.group(1)], workdir, timeout=600)
        assert replay.returncode == 0, replay.stdout[-3000:] + replay.stderr[-3000:]
