"""A trial's artifacts reach its MLflow run: temp files never do; a checkpoint reaches a local
artifact store as hard links, and is copied elsewhere."""

from __future__ import annotations

import os
from pathlib import Path

from mlflow import MlflowClient
from tracking_helpers import new_mirror

from tune_jobs.core.tracking.sync import sync


def test_temp_files_never_reach_a_runs_artifacts(tmp_path):
    sweep = tmp_path / "sweep"
    artifacts = tmp_path / "trial" / "artifacts"
    (artifacts / "figures").mkdir(parents=True)
    (artifacts / "run.log").write_text("done\n")
    (artifacts / "model.pt").write_bytes(b"weights")
    (artifacts / ".model.pt.k2j3h4g5.tmp").write_bytes(b"")  # atomic_file's, its writer killed
    (artifacts / "figures" / "loss.png").write_bytes(b"png")
    (artifacts / "figures" / ".loss.png.a1b2c3d4.png").write_bytes(b"p")
    (artifacts / "figures" / "big.bin.partial").write_bytes(b"half")
    mirror = new_mirror(sweep)
    mirror.add_trial("t1", {"data.n_components": 1})
    mirror.end_trial("t1", "FINISHED", {}, [(str(artifacts), None)])
    store = MlflowClient(f"sqlite:///{tmp_path / 'm.db'}")
    sync(mirror, store)
    run = mirror.state["trials"]["t1"]["run_id"]

    def files(path: str | None = None) -> set[str]:
        out = set()
        for a in store.list_artifacts(run, path):
            out |= files(a.path) if a.is_dir else {a.path}
        return out

    assert files() == {"cfg.yaml", "run.log", "model.pt", "figures/loss.png"}


def test_a_checkpoint_reaches_a_local_artifact_store_as_hard_links_and_is_copied_elsewhere(tmp_path, monkeypatch):
    import errno

    from tune_jobs.core.tracking import artifacts as store_mod
    from tune_jobs.core.tracking.artifacts import local_artifact_dir, upload_folder

    assert local_artifact_dir("file:///a/b%20c/artifacts") == Path("/a/b c/artifacts")
    assert local_artifact_dir("/a/b") == Path("/a/b")
    assert local_artifact_dir("mlflow-artifacts:/1/x/artifacts") is None
    assert local_artifact_dir("s3://bucket/x") is None

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.create_experiment("e", artifact_location=(tmp_path / "art").as_uri())
    ckpt = tmp_path / "trial" / "checkpoint_000004"
    (ckpt / "sub").mkdir(parents=True)
    (ckpt / "model.pt").write_bytes(b"weights" * 1000)
    (ckpt / "sub" / "rng.pt").write_bytes(b"rng")

    linked = client.create_run(exp).info.run_id
    assert upload_folder(client, linked, ckpt, "checkpoint", link=True) == []
    root = local_artifact_dir(client.get_run(linked).info.artifact_uri)
    for rel in ("model.pt", "sub/rng.pt"):
        assert os.path.samefile(root / "checkpoint" / rel, ckpt / rel)  # no bytes written
    assert {a.path for a in client.list_artifacts(linked, "checkpoint")} == {"checkpoint/model.pt", "checkpoint/sub"}
    upload_folder(client, linked, ckpt, "checkpoint", link=True)  # a close repeated after a crash: unchanged
    assert os.path.samefile(root / "checkpoint" / "model.pt", ckpt / "model.pt")
    # The sweep prunes its checkpoint later: the run's stays whole.
    (ckpt / "model.pt").unlink()
    assert (root / "checkpoint" / "model.pt").read_bytes() == b"weights" * 1000
    (ckpt / "model.pt").write_bytes(b"weights" * 1000)

    # Another file system (the link fails half-way): what was linked is undone, then copied.
    copied = client.create_run(exp).info.run_id
    calls = []

    def link_once(src, dst):
        calls.append(dst)
        if len(calls) > 1:
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        os.link(src, dst)

    monkeypatch.setattr(store_mod.os, "link", link_once)
    assert upload_folder(client, copied, ckpt, "checkpoint", link=True) == []
    croot = local_artifact_dir(client.get_run(copied).info.artifact_uri) / "checkpoint"
    assert len(calls) == 2
    for rel in ("model.pt", "sub/rng.pt"):
        assert (croot / rel).read_bytes() == (ckpt / rel).read_bytes()
        assert not os.path.samefile(croot / rel, ckpt / rel)
