"""The HDF5 events: synthetic file, checks, streaming reader, train-only normalisation, pads."""

import math

import h5py
import numpy as np
import pytest
import torch

from trainables.autoencoder import Config
from trainables.autoencoder.data import (
    DataFileError,
    EventSplit,
    check_file,
    n_columns,
    resolve_path,
    synthesize,
    synthetic_path,
    write_synthetic,
)
from tune_jobs.core.config import build_config

T = 18


def data_cfg(tmp_path, **kw):
    settings = {"data.cache_dir": str(tmp_path / "cache"), "data.n_train": 600, "data.n_val": 200}
    settings.update({f"data.{k}": v for k, v in kw.items()})
    return build_config(Config, settings).data


def test_layout_has_92_columns_and_the_thesis_keys(tmp_path):
    cfg = data_cfg(tmp_path)
    path = resolve_path(cfg)
    assert path == synthetic_path(cfg) and path.exists()
    with h5py.File(path, "r") as f:
        assert {"X_train", "X_val", "X_test", "Y_train", "y_val", "y_test"} <= set(f)
        assert f["X_train"].shape == (600, 92) and f["X_val"].shape == (200, 92) and f["X_test"].shape == (200, 92)
        assert f["Y_train"].shape == (600,)
    assert n_columns(18) == 92
    check_file(build_config(Config, {"data.path": str(path)}).data)  # the project's own file passes


def test_synthetic_events_are_physical():
    x, y = synthesize(2000, T, np.random.default_rng(0))
    ids, met, met_phi = x[:, :T], x[:, T], x[:, T + 1]
    tok = x[:, T + 2 :].reshape(-1, T, 4).astype(np.float64)
    energy, pt, eta, phi = tok[..., 0], tok[..., 1], tok[..., 2], tok[..., 3]
    real = ids > 0
    assert set(np.unique(ids)) <= set(range(8)) and set(np.unique(y)) == {0, 1}
    assert (real.sum(1) >= 2).all()
    # pads are trailing and all-zero; real particles are sorted by pT
    assert not (np.diff(real.astype(int), axis=1) > 0).any()
    assert (tok[~real] == 0).all()
    assert (np.diff(np.where(real, pt, -1), axis=1) <= 1e-3).all()
    assert (pt[real] > 0).all() and (np.abs(eta[real]) <= 2.5).all() and (np.abs(phi[real]) <= math.pi).all()
    np.testing.assert_allclose(energy[real], pt[real] * np.cosh(eta[real]), rtol=1e-4)
    assert abs(np.log(pt[ids == 1]).std() - 0.6) < 0.05  # jets: lognormal pT, sigma 0.6
    assert abs(eta[real].std() - 1.5) < 0.15
    # MET is the visible imbalance plus an invisible part: close to, not equal to, the visible sum
    vis = np.hypot((pt * np.cos(phi)).sum(1), (pt * np.sin(phi)).sum(1))
    assert (met >= 0).all() and (np.abs(met_phi) <= math.pi).all()
    assert 0.5 < np.corrcoef(vis, met)[0, 1] < 0.999


def test_reader_round_trip_and_streaming_equals_in_memory(tmp_path):
    cfg = data_cfg(tmp_path)
    path = resolve_path(cfg)
    with h5py.File(path, "r") as f:
        raw = f["X_train"][:]
    kept = EventSplit(path, "train", cfg)
    streamed = EventSplit(path, "train", data_cfg(tmp_path, chunk_events=128, in_memory_mb=0))
    assert kept._rows is not None and streamed._rows is None
    np.testing.assert_array_equal(np.concatenate(list(streamed.chunks())), raw)
    stats = kept.stats()
    a = list(kept.batches(100, stats))
    b = list(streamed.batches(100, stats))
    assert sum(len(x.ids) for x in a) == 600 == sum(len(x.ids) for x in b)
    for key in ("ids", "tokens", "globals", "mask"):
        torch.testing.assert_close(torch.cat([getattr(x, key) for x in a]), torch.cat([getattr(x, key) for x in b]))
    # ids survive the round trip, and log pT is undone exactly by the statistics
    batch = torch.cat([x.ids for x in a])
    assert torch.equal(batch, torch.from_numpy(raw[:, :T].astype(np.int64)))
    tokens = torch.cat([x.tokens for x in a])
    pt = torch.exp(tokens[..., 1] * stats.token_std[1] + stats.token_mean[1])
    real = batch > 0
    torch.testing.assert_close(
        pt[real], torch.from_numpy(raw[:, T + 2 :].reshape(-1, T, 4)[..., 1])[real], rtol=1e-4, atol=1e-3
    )


def test_shuffled_batches_depend_only_on_the_generator(tmp_path):
    cfg = data_cfg(tmp_path, chunk_events=128)
    split = EventSplit(resolve_path(cfg), "train", cfg)
    stats = split.stats()
    one = [b.ids for b in split.batches(64, stats, torch.Generator().manual_seed(3))]
    two = [b.ids for b in split.batches(64, stats, torch.Generator().manual_seed(3))]
    other = [b.ids for b in split.batches(64, stats, torch.Generator().manual_seed(4))]
    assert all(torch.equal(x, y) for x, y in zip(one, two))
    assert not torch.equal(torch.cat(one), torch.cat(other))
    assert torch.cat(one).shape[0] == 600


def _write(path, train, val):
    with h5py.File(path, "w") as f:
        f["X_train"], f["X_val"] = train, val


def test_normalisation_uses_the_train_split_only(tmp_path):
    x, _ = synthesize(500, T, np.random.default_rng(1))
    val = x.copy()
    val[:, T + 2 :] *= 7.0  # a validation split on another scale must not move the statistics
    val[:, T] += 1000.0
    path = tmp_path / "events.h5"
    _write(path, x, val)
    cfg = build_config(Config, {"data.path": str(path)}).data
    train_split, val_split = EventSplit(path, "train", cfg), EventSplit(path, "val", cfg)
    stats = train_split.stats()
    assert torch.equal(stats.token_mean, EventSplit(path, "train", cfg).stats().token_mean)
    assert not torch.allclose(stats.token_mean, val_split.stats().token_mean)
    # the train split's real tokens come out at mean 0 and std 1 for every feature
    batch = next(train_split.batches(500, stats))
    real = batch.tokens[batch.mask]
    torch.testing.assert_close(real.mean(0), torch.zeros(4), atol=1e-4, rtol=0)
    torch.testing.assert_close(real.std(0, unbiased=False), torch.ones(4), atol=1e-3, rtol=0)
    torch.testing.assert_close(batch.globals.mean(0), torch.zeros(2), atol=1e-4, rtol=0)
    # ... and the shifted validation split does not
    vbatch = next(val_split.batches(500, stats))
    assert vbatch.globals[:, 0].mean() > 3


def test_pads_are_masked_and_zero(tmp_path):
    cfg = data_cfg(tmp_path)
    split = EventSplit(resolve_path(cfg), "val", cfg)
    batch = next(split.batches(200, split.stats()))
    assert torch.equal(batch.mask, batch.ids > 0)
    assert (batch.tokens[~batch.mask] == 0).all()
    assert batch.mask.any(1).all() and (~batch.mask).any()


def test_synthetic_file_is_written_once_and_atomically(tmp_path):
    cfg = data_cfg(tmp_path)
    path = resolve_path(cfg)
    stamp = path.stat().st_mtime_ns
    assert resolve_path(cfg) == path and path.stat().st_mtime_ns == stamp
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left
    write_synthetic(tmp_path / "again.h5", n_train=600, n_val=200, n_tokens=T, seed=cfg.synth_seed)
    with h5py.File(path, "r") as a, h5py.File(tmp_path / "again.h5", "r") as b:
        assert np.array_equal(a["X_val"][:], b["X_val"][:])  # the seed fixes the file


def _bad(tmp_path, kind):
    path = tmp_path / "bad.h5"
    x, _ = synthesize(40, T, np.random.default_rng(0))
    if kind == "missing_key":
        with h5py.File(path, "w") as f:
            f["X_train"] = x
    elif kind == "wrong_shape":
        _write(path, x[:, :90], x[:, :90])
    elif kind == "bad_id":
        y = x.copy()
        y[0, 0] = 9
        _write(path, y, x)
    elif kind == "not_hdf5":
        path.write_text("id,E,pT\n")
    elif kind == "strings":
        _write(path, x.astype(str).astype("S"), x)
    return path


@pytest.mark.parametrize(
    "kind,message",
    [
        ("absent", "no such file; point data.path at an HDF5 file"),
        ("missing_key", "no dataset 'X_val' (keys in the file: X_train)"),
        ("wrong_shape", "X_train has shape (40, 90); expected (N, 92)"),
        ("bad_id", "particle id 9 is not one of 0..7"),
        ("not_hdf5", "not an HDF5 file"),
        ("strings", "X_train holds |S"),
    ],
)
def test_bad_files_are_named_with_the_fix(tmp_path, kind, message):
    path = tmp_path / "absent.h5" if kind == "absent" else _bad(tmp_path, kind)
    with pytest.raises(DataFileError) as err:
        check_file(build_config(Config, {"data.path": str(path)}).data)
    assert message in str(err.value) and f"data.path={path}" in str(err.value)
