"""Events in the thesis HDF5 layout: the synthetic file, the checks, the streaming reader.

A file holds `X_train`, `X_val`, `X_test` of shape [N, 2 + 5 T] (T = 18 particle slots) and
labels `Y_train`, `y_val`, `y_test` of shape [N]. A row is
    T particle ids (0 pad, 1 jet, 2 b-jet, 3 e+, 4 e-, 5 mu+, 6 mu-, 7 photon),
    MET, METphi,
    T x (E, pT, eta, phi)      (particle-major: E0, pT0, eta0, phi0, E1, ...)
The reader streams a split in chunks of rows (a large file is never loaded whole), turns each
chunk into tensors, z-scores the continuous token features and the two globals with
statistics of the train split's real tokens only, and masks the pads.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from trainables.autoencoder.config import DataConfig
from trainables.common import atomic_file, user_path

N_TYPES = 8  # ids 0..7; 0 is a pad
TOKEN_FEATURES = ("E", "pT", "eta", "phi")
GLOBALS = ("MET", "METphi")
SPLITS = {"train": ("X_train", "Y_train"), "val": ("X_val", "y_val"), "test": ("X_test", "y_test")}
REQUIRED_KEYS = ("X_train", "X_val")  # what training reads; the labels and X_test are optional
SYNTH_VERSION = 1  # bump when the generator changes: the cache name changes with it


class DataFileError(ValueError):
    """A data file that cannot be used; the message names the file, the key and the fix."""


def n_columns(n_tokens: int) -> int:
    return 2 + 5 * n_tokens


# -- the synthetic file ---------------------------------------------------------------------
# Research logic: two processes, so that the labels mean something. Multijet events: 2+
# jets, few b-jets, a small invisible pT; semileptonic top pairs: 2 b-jets, 2+ light jets,
# one lepton and a neutrino (a larger invisible pT). pT ~ lognormal per particle type,
# eta ~ N(0, 1.5) clipped to |eta| <= 2.5, phi ~ U(-pi, pi), massless E = pT cosh(eta).
# MET is the negative vector sum of the visible pT plus the invisible part.
PT_LOGNORMAL = {1: (math.log(35), 0.6), 2: (math.log(45), 0.6), 3: (math.log(30), 0.5), 7: (math.log(20), 0.5)}
INVISIBLE_LOGNORMAL = {0: (math.log(10), 0.7), 1: (math.log(50), 0.6)}


def _pt_params(types: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mu, sigma = np.zeros(types.shape), np.ones(types.shape)
    for t in range(1, N_TYPES):
        key = 3 if 3 <= t <= 6 else t  # leptons share one spectrum
        mu[types == t], sigma[types == t] = PT_LOGNORMAL[key]
    return mu, sigma


def synthesize(n_events: int, n_tokens: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """`n_events` rows of the thesis layout and their process labels (0 multijet, 1 top pair)."""
    label = (rng.random(n_events) < 0.5).astype(np.int64)
    top = label == 1
    n_b = np.where(top, 2, rng.binomial(2, 0.1, n_events))
    n_light = 2 + rng.poisson(np.where(top, 1.5, 2.0))
    n_lep = np.where(top, 1, 0) + rng.binomial(1, 0.05, n_events)
    n_pho = rng.poisson(0.3, n_events)

    slot = np.arange(n_tokens)[None, :]
    ends = np.cumsum(np.stack([n_b, n_light, n_lep, n_pho], 1), 1)
    lepton = rng.integers(3, 7, (n_events, n_tokens))
    types = np.select(
        [slot < ends[:, :1], slot < ends[:, 1:2], slot < ends[:, 2:3], slot < ends[:, 3:4]],
        [2, 1, lepton, 7],
        0,
    )
    real = types > 0
    mu, sigma = _pt_params(types)
    pt = np.where(real, np.exp(mu + sigma * rng.standard_normal(types.shape)), 0.0)
    eta = np.where(real, np.clip(rng.normal(0.0, 1.5, types.shape), -2.5, 2.5), 0.0)
    phi = np.where(real, rng.uniform(-math.pi, math.pi, types.shape), 0.0)

    order = np.argsort(-pt, axis=1, kind="stable")  # leading particle first, pads last
    types, pt, eta, phi = (np.take_along_axis(a, order, 1) for a in (types, pt, eta, phi))
    energy = pt * np.cosh(eta)

    (mu0, s0), (mu1, s1) = INVISIBLE_LOGNORMAL[0], INVISIBLE_LOGNORMAL[1]
    inv_mu, inv_sigma = np.where(top, mu1, mu0), np.where(top, s1, s0)
    inv_pt = np.exp(inv_mu + inv_sigma * rng.standard_normal(n_events))
    inv_phi = rng.uniform(-math.pi, math.pi, n_events)
    mex = -(pt * np.cos(phi)).sum(1) + inv_pt * np.cos(inv_phi)
    mey = -(pt * np.sin(phi)).sum(1) + inv_pt * np.sin(inv_phi)
    met, met_phi = np.hypot(mex, mey), np.arctan2(mey, mex)

    tokens = np.stack([energy, pt, eta, phi], axis=2).reshape(n_events, 4 * n_tokens)
    x = np.concatenate([types.astype(np.float64), met[:, None], met_phi[:, None], tokens], axis=1)
    return x.astype(np.float32), label


def write_synthetic(path: Path, *, n_train: int, n_val: int, n_tokens: int, seed: int, chunk: int = 65536) -> None:
    """Write the three splits atomically (a half-written file is never seen by a reader)."""
    import h5py

    rng = np.random.default_rng(seed)
    with atomic_file(path) as tmp, h5py.File(tmp, "w") as f:
        f.attrs["layout"] = "ids[T], MET, METphi, T x (E, pT, eta, phi)"
        f.attrs["synthetic_version"] = SYNTH_VERSION
        for split, n in (("train", n_train), ("val", n_val), ("test", n_val)):
            xkey, ykey = SPLITS[split]
            xs = f.create_dataset(
                xkey, (n, n_columns(n_tokens)), dtype="f4", chunks=(min(n, 4096), n_columns(n_tokens))
            )
            ys = f.create_dataset(ykey, (n,), dtype="i8")
            for i in range(0, n, chunk):
                x, y = synthesize(min(chunk, n - i), n_tokens, rng)
                xs[i : i + len(x)], ys[i : i + len(y)] = x, y


def synthetic_path(cfg: DataConfig) -> Path:
    root = user_path(cfg.cache_dir) if cfg.cache_dir else None
    if root is None:
        root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tune-sweeps"
    name = f"particle_tokens-v{SYNTH_VERSION}-T{cfg.n_tokens}-n{cfg.n_train}-{cfg.n_val}-s{cfg.synth_seed}.h5"
    return root / "particle_ae" / name


def resolve_path(cfg: DataConfig) -> Path:
    """The file to train on: the user's `data.path`, or the synthetic one (written if missing)."""
    if cfg.path:
        return user_path(cfg.path)
    path = synthetic_path(cfg)
    if not path.exists():
        write_synthetic(path, n_train=cfg.n_train, n_val=cfg.n_val, n_tokens=cfg.n_tokens, seed=cfg.synth_seed)
    return path


# -- checks (run by the sweep service before anything starts) -------------------------------
def check_file(cfg: DataConfig) -> None:
    """A user's file must exist, be HDF5, hold X_train and X_val of the layout's width, and
    start with valid rows. Raises DataFileError naming the file, the key and the fix."""
    if not cfg.path:
        return  # the synthetic file is made by the project and right by construction
    import h5py

    path = user_path(cfg.path)
    where = f"data.path={cfg.path}"
    if not path.is_file():
        raise DataFileError(
            f"{where}: no such file; point data.path at an HDF5 file, or leave it empty for synthetic data"
        )
    try:
        f = h5py.File(path, "r")
    except OSError:
        raise DataFileError(
            f"{where}: not an HDF5 file h5py can read; convert it or point data.path elsewhere"
        ) from None
    cols = n_columns(cfg.n_tokens)
    with f:
        for key in REQUIRED_KEYS:
            if key not in f:
                keys = ", ".join(sorted(f.keys())) or "none"
                raise DataFileError(
                    f"{where}: no dataset {key!r} (keys in the file: {keys}); the layout needs {', '.join(REQUIRED_KEYS)}"
                )
            ds = f[key]
            if not isinstance(ds, h5py.Dataset) or ds.ndim != 2 or ds.shape[1] != cols or ds.shape[0] < 1:
                shape = getattr(ds, "shape", "a group")
                raise DataFileError(
                    f"{where}: {key} has shape {shape}; expected (N, {cols}) = {cfg.n_tokens} ids, MET, METphi, "
                    f"{cfg.n_tokens} x (E, pT, eta, phi); set data.n_tokens if the file holds another count"
                )
            if ds.dtype.kind not in "biuf":
                raise DataFileError(
                    f"{where}: {key} holds {ds.dtype} values, not numbers; write it as floats (e.g. float32)"
                )
            head = np.asarray(ds[: min(ds.shape[0], 1024)], dtype=np.float64)
            _check_rows(head, cfg.n_tokens, f"{where}: {key}")


def _check_rows(x: np.ndarray, n_tokens: int, where: str) -> None:
    ids = x[:, :n_tokens]
    if not np.isfinite(x).all():
        raise DataFileError(f"{where}: holds NaN or inf values; clean the file")
    if (ids != np.round(ids)).any() or ids.min() < 0 or ids.max() >= N_TYPES:
        bad = ids[(ids != np.round(ids)) | (ids < 0) | (ids >= N_TYPES)][0]
        raise DataFileError(f"{where}: particle id {bad:g} is not one of 0..{N_TYPES - 1}; check the column layout")


# -- reading --------------------------------------------------------------------------------
@dataclass
class Batch:
    ids: torch.Tensor  # [B, T] long, 0 = pad
    tokens: torch.Tensor  # [B, T, 4] z-scored (E, pT, eta, phi); 0 at pads
    globals: torch.Tensor  # [B, 2] z-scored (MET, METphi)
    mask: torch.Tensor  # [B, T] bool, True for real particles

    def to(self, device: torch.device) -> Batch:
        return Batch(*(t.to(device) for t in (self.ids, self.tokens, self.globals, self.mask)))


@dataclass
class Stats:
    """Means and stds of the (transformed) features, from the train split's real tokens."""

    token_mean: torch.Tensor  # [4]
    token_std: torch.Tensor  # [4]
    globals_mean: torch.Tensor  # [2]
    globals_std: torch.Tensor  # [2]

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(self.__dict__)


def _split_columns(x: np.ndarray, n_tokens: int, log_momenta: bool) -> tuple[np.ndarray, ...]:
    """Rows -> ids [N, T], token features [N, T, 4], globals [N, 2], mask [N, T]."""
    x = x.astype(np.float64, copy=False)
    ids = np.rint(x[:, :n_tokens]).astype(np.int64)
    glob = x[:, n_tokens : n_tokens + 2].copy()
    tokens = x[:, n_tokens + 2 :].reshape(len(x), n_tokens, 4).copy()
    mask = ids > 0
    if log_momenta:  # E and pT are lognormal-like: z-scoring GeV lets a few hard jets dominate
        tokens[..., :2] = np.log(np.maximum(tokens[..., :2], 1e-3))
        glob[:, 0] = np.log1p(np.maximum(glob[:, 0], 0.0))
    return ids, tokens, glob, mask


class EventSplit:
    """One split of a file, read in chunks of rows; small splits are read once and kept."""

    def __init__(self, path: Path, split: str, cfg: DataConfig) -> None:
        import h5py

        self.path, self.key, self.cfg = Path(path), SPLITS[split][0], cfg
        with h5py.File(self.path, "r") as f:
            ds = f[self.key]
            self.n = int(ds.shape[0])
            small = ds.size * 4 <= cfg.in_memory_mb * 2**20
            self._rows = np.asarray(ds[:], dtype=np.float32) if small else None

    def __len__(self) -> int:
        return self.n

    def chunks(self, order: torch.Tensor | None = None) -> Iterator[np.ndarray]:
        """Row chunks of at most chunk_events, in `order` of chunk index (file order if None)."""
        size = self.cfg.chunk_events
        starts = list(range(0, self.n, size))
        if order is not None:
            starts = [starts[i] for i in order.tolist()]
        if self._rows is not None:
            for s in starts:
                yield self._rows[s : s + size]
            return
        import h5py

        with h5py.File(self.path, "r") as f:
            ds = f[self.key]
            for s in starts:
                yield ds[s : s + size]

    def stats(self) -> Stats:
        """Mean and std of each transformed feature over real tokens (and of the globals)."""
        t_sum, t_sq, t_n = np.zeros(4), np.zeros(4), 0
        g_sum, g_sq, g_n = np.zeros(2), np.zeros(2), 0
        for rows in self.chunks():
            _, tokens, glob, mask = _split_columns(rows, self.cfg.n_tokens, self.cfg.log_momenta)
            real = tokens[mask]
            t_sum, t_sq, t_n = t_sum + real.sum(0), t_sq + (real**2).sum(0), t_n + len(real)
            g_sum, g_sq, g_n = g_sum + glob.sum(0), g_sq + (glob**2).sum(0), g_n + len(glob)
        if t_n == 0:
            raise DataFileError(f"{self.path}: {self.key} holds no real particle (every id is 0)")
        t_mean, g_mean = t_sum / t_n, g_sum / g_n
        t_std = np.sqrt(np.maximum(t_sq / t_n - t_mean**2, 0.0))
        g_std = np.sqrt(np.maximum(g_sq / g_n - g_mean**2, 0.0))
        as_t = lambda a: torch.tensor(a, dtype=torch.float32)
        return Stats(as_t(t_mean), as_t(np.maximum(t_std, 1e-6)), as_t(g_mean), as_t(np.maximum(g_std, 1e-6)))

    def batches(self, batch_size: int, stats: Stats, generator: torch.Generator | None = None) -> Iterator[Batch]:
        """Normalised batches; with a generator, chunks and the rows in each are shuffled."""
        n_chunks = -(-self.n // self.cfg.chunk_events)
        order = torch.randperm(n_chunks, generator=generator) if generator is not None else None
        for rows in self.chunks(order):
            if generator is not None:
                rows = rows[torch.randperm(len(rows), generator=generator).numpy()]
            for i in range(0, len(rows), batch_size):
                yield make_batch(rows[i : i + batch_size], stats, self.cfg)


def make_batch(rows: np.ndarray, stats: Stats, cfg: DataConfig) -> Batch:
    ids, tokens, glob, mask = _split_columns(rows, cfg.n_tokens, cfg.log_momenta)
    if ids.min() < 0 or ids.max() >= N_TYPES:
        raise DataFileError(f"particle id {ids.max() if ids.max() >= N_TYPES else ids.min()} is not one of 0..7")
    tok = (torch.from_numpy(tokens).float() - stats.token_mean) / stats.token_std
    mask_t = torch.from_numpy(mask)
    tok = tok * mask_t.unsqueeze(-1)  # pads carry zeros, never statistics
    glob_t = (torch.from_numpy(glob).float() - stats.globals_mean) / stats.globals_std
    return Batch(ids=torch.from_numpy(ids), tokens=tok, globals=glob_t, mask=mask_t)
