"""Security basics: servers bind 127.0.0.1 unless told otherwise, checkpoints cannot run
code, YAML cannot run code, and names from users cannot escape the results folder."""

from __future__ import annotations

import ast
import pickle
import socket
from pathlib import Path

import pytest
import torch
from helpers import ROOT, free_port
from hypothesis import given
from hypothesis import strategies as st

from trainables.common import load_state, save_state
from tune_jobs import mlflow_server
from tune_jobs.core.errors import ConfigError
from tune_jobs.core.paths import SEARCH_SPACES, experiment_file, safe_name

SOURCES = [
    p for d in ("tune_jobs", "trainables", "tests", "bench") for p in (ROOT / d).rglob("*.py") if ".venv" not in p.parts
]


def listening(port: int) -> set[str]:
    """The local addresses with a socket listening on `port` (from /proc/net/tcp{,6})."""
    found = set()
    for table, size in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            addr, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A = LISTEN
                raw = bytes.fromhex(addr)
                if size == 8:
                    found.add(socket.inet_ntop(socket.AF_INET, raw[::-1]))
                else:
                    words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
                    found.add(socket.inet_ntop(socket.AF_INET6, words))
    return found


def test_the_mlflow_server_helper_listens_on_loopback_only_by_default(tmp_path):
    port = free_port()
    proc = mlflow_server.start(
        backend_store_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        artifacts_destination=str(tmp_path / "artifacts"),
        port=port,
        log_file=tmp_path / "server.log",
        timeout=120,
    )
    try:
        assert listening(port) == {"127.0.0.1"}
    finally:
        mlflow_server.stop(proc)
    assert listening(port) == set()


def test_another_address_only_when_told(tmp_path):
    default = mlflow_server.server_command(backend_store_uri=f"sqlite:///{tmp_path / 'm.db'}")
    assert default[default.index("--host") + 1] == "127.0.0.1"
    told = mlflow_server.server_command(backend_store_uri=f"sqlite:///{tmp_path / 'm.db'}", host="10.0.0.5")
    assert told[told.index("--host") + 1] == "10.0.0.5"
    with pytest.raises(ConfigError, match="not a TCP port"):
        mlflow_server.server_command(backend_store_uri=f"sqlite:///{tmp_path / 'm.db'}", port=70000)
    with pytest.raises(ConfigError, match="does not exist"):
        mlflow_server.server_command(backend_store_uri=f"sqlite:///{tmp_path / 'nowhere' / 'm.db'}")


class Exploit:
    def __reduce__(self):
        return (exec, ("import tests_exploit_marker",))  # would raise ImportError if ever run


def test_a_checkpoint_holding_code_is_refused(tmp_path):
    path = tmp_path / "state.pt"
    torch.save({"step": 3, "payload": Exploit()}, path)
    with pytest.raises(pickle.UnpicklingError, match="refused: it holds code") as refused:
        load_state(path)
    assert "GLOBAL exec" in str(refused.value) and "weights_only" not in str(refused.value)  # no advice to turn it off
    # A state of tensors, numbers and RNG states loads as it was saved.
    state = {"step": 3, "w": torch.arange(4.0), "rng": torch.get_rng_state()}
    save_state(state, tmp_path / "good.pt")
    back = load_state(tmp_path / "good.pt")
    assert back["step"] == 3 and torch.equal(back["w"], state["w"]) and torch.equal(back["rng"], state["rng"])


def _calls(attr: str):
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == attr:
                yield path, node


def test_every_torch_load_in_the_project_is_weights_only():
    loads = list(_calls("load"))
    torch_loads = [(p, n) for p, n in loads if isinstance(n.func.value, ast.Name) and n.func.value.id == "torch"]
    assert torch_loads, "expected the checkpoint loader to be found"
    for path, node in torch_loads:
        kw = {k.arg: k.value for k in node.keywords}
        assert isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True, (
            f"{path}:{node.lineno} torch.load without weights_only=True"
        )


def test_the_experiment_reader_is_safe_load_with_a_duplicate_key_check():
    import yaml

    from tune_jobs.core.space import _UniqueKeyLoader, read_yaml

    assert issubclass(_UniqueKeyLoader, yaml.SafeLoader)
    with pytest.raises(yaml.constructor.ConstructorError):
        read_yaml("!!python/object/apply:os.system ['true']")
    assert read_yaml("a: 1\nb: {c: 2}\n") == {"a": 1, "b": {"c": 2}}


def test_yaml_is_only_ever_read_with_safe_load():
    for attr in ("load", "load_all", "unsafe_load", "full_load", "unsafe_load_all", "full_load_all"):
        for path, node in _calls(attr):
            if isinstance(node.func.value, ast.Name) and node.func.value.id == "yaml":
                raise AssertionError(f"{path}:{node.lineno} yaml.{attr}; use yaml.safe_load")


@given(st.text(max_size=200))
def test_a_user_given_name_is_one_safe_path_part(name):
    safe = safe_name(name)
    assert safe and len(safe) <= 120
    assert "/" not in safe and "\\" not in safe and "\x00" not in safe
    assert safe not in (".", "..") and not safe.startswith(".")
    assert (Path("/results") / safe).resolve().parent == Path("/results")


@pytest.mark.parametrize("name", ["../../etc/passwd", "..", "a/../../b", "~root", "/abs/path", "x\x00y"])
def test_an_experiment_name_stays_inside_search_spaces(name):
    assert experiment_file(name).parent == SEARCH_SPACES
