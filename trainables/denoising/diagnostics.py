"""Blob diagnostics of the weight pairs (W1[j, i], W2[i, j]), cheap enough to run every epoch.

On a random sample of pairs, each axis scaled by its own standard deviation (the decoder
weights are an order of magnitude smaller than the encoder weights, and DBSCAN's eps must
mean the same thing along both):
- DBSCAN blob count (eps in units of that spread; clusters below min_blob_fraction of the
  sample count as noise, not blobs),
- the silhouette of the DBSCAN blobs (noise points left out),
- the Pearson correlation of the pairs (on every pair: it costs one pass over the weights),
- the number of components of a Gaussian mixture picked by BIC among 1-5,
- the blob score the search maximises: silhouette * exp(-|blobs - target|) once two or more
  blobs have separated (the silhouette when the count is right, falling by e for every blob
  too many or few); before that, PRECURSOR * max(correlation, 0), at most 0.02, so that ASHA
  can still rank trials whose blobs have not separated yet (measured here: without it, every
  trial of a small search scored 0 at the first rungs and ASHA could stop none).
Each diagnostic's wall time is measured by the training loop (trainables/denoising/train.py).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch

GMM_COMPONENTS = range(1, 6)
PRECURSOR = 0.02  # weight of the correlation in the score while fewer than two blobs exist


@dataclass
class BlobReport:
    n_blobs: int  # DBSCAN clusters large enough to count
    silhouette: float  # of the DBSCAN blobs; 0 when fewer than two
    correlation: float  # Pearson, over every pair
    gmm_components: int  # BIC-selected, 1-5
    noise_fraction: float  # sampled pairs DBSCAN left out of every blob
    score: float
    pairs: np.ndarray = field(repr=False)  # [n, 2] the sampled (W1, W2) pairs, unscaled
    labels: np.ndarray = field(repr=False)  # [n] DBSCAN blob per pair, -1 = noise
    seconds: float = 0.0

    def metrics(self) -> dict[str, float]:
        return {
            "blob/score": self.score,
            "blob/n_clusters": float(self.n_blobs),
            "blob/silhouette": self.silhouette,
            "blob/correlation": self.correlation,
            "blob/gmm_components": float(self.gmm_components),
            "blob/noise_fraction": self.noise_fraction,
        }


def sample_pairs(w1t: torch.Tensor, w2: torch.Tensor, n: int, gen: torch.Generator) -> np.ndarray:
    """`n` pairs drawn without replacement from the [d, h] matrices W1.T and W2, as [n, 2]."""
    total = w1t.numel()
    n = min(n, total)
    idx = torch.randperm(total, generator=gen)[:n].to(w1t.device)
    return torch.stack([w1t.reshape(-1)[idx], w2.reshape(-1)[idx]], dim=1).float().cpu().numpy()


def pearson(w1t: torch.Tensor, w2: torch.Tensor) -> float:
    a, b = w1t.reshape(-1).double(), w2.reshape(-1).double()
    a, b = a - a.mean(), b - b.mean()
    denom = float(a.norm() * b.norm())
    return float(a @ b) / denom if denom > 0 else 0.0


def standardise(pairs: np.ndarray) -> np.ndarray:
    """Each axis divided by its standard deviation (kept at 1 for a constant axis)."""
    scale = pairs.std(axis=0)
    scale[scale == 0] = 1.0
    return (pairs - pairs.mean(axis=0)) / scale


def dbscan_blobs(z: np.ndarray, eps: float, min_samples: int, min_fraction: float) -> np.ndarray:
    """DBSCAN labels with clusters smaller than min_fraction of the points relabelled -1."""
    from sklearn.cluster import DBSCAN  # imported when used: the CLI's error paths stay fast

    labels = DBSCAN(eps=eps, min_samples=min_samples).fit_predict(z)
    keep = [c for c in np.unique(labels) if c >= 0 and (labels == c).mean() >= min_fraction]
    out = np.full_like(labels, -1)
    for new, c in enumerate(keep):
        out[labels == c] = new
    return out


def silhouette(z: np.ndarray, labels: np.ndarray, max_points: int, rng: np.random.Generator) -> float:
    """Silhouette of the blobs (noise left out) on at most max_points points, drawn so every
    blob keeps a share: a plain random subsample would leave the small outer blobs empty."""
    from sklearn.metrics import silhouette_score

    inside = labels >= 0
    z, labels = z[inside], labels[inside]
    blobs = np.unique(labels)
    if len(blobs) < 2:
        return 0.0
    if len(labels) > max_points:
        per_blob = max(2, max_points // len(blobs))
        chosen = []
        for c in blobs:
            members = np.flatnonzero(labels == c)
            chosen.append(rng.choice(members, min(per_blob, len(members)), replace=False))
        idx = np.concatenate(chosen)
        z, labels = z[idx], labels[idx]
    return float(silhouette_score(z, labels))


def gmm_components(z: np.ndarray, max_points: int, rng: np.random.Generator, seed: int) -> int:
    """The component count (1-5) whose Gaussian mixture has the lowest BIC.

    In float64 with a covariance floor: a tight outer blob of a few identical-looking pairs
    made a component's covariance singular (float32, sklearn's default floor) and crashed a
    trial in a search here. A count whose fit still fails is skipped.
    """
    from sklearn.mixture import GaussianMixture

    z = np.asarray(z, dtype=np.float64)
    if len(z) > max_points:
        z = z[rng.choice(len(z), max_points, replace=False)]
    bics = {}
    for k in GMM_COMPONENTS:
        if k > len(z):
            break
        gmm = GaussianMixture(
            n_components=k, covariance_type="full", n_init=1, max_iter=100, reg_covar=1e-4, random_state=seed
        )
        try:
            bics[k] = gmm.fit(z).bic(z)
        except ValueError:  # still ill-defined: this count cannot describe the sample
            continue
    return min(bics, key=bics.get) if bics else 1


def blob_score(n_blobs: int, sil: float, target: int, correlation: float = 0.0) -> float:
    if n_blobs >= 2 and sil > 0:
        return sil * math.exp(-abs(n_blobs - target))
    return PRECURSOR * max(correlation, 0.0)


def diagnose(
    w1t: torch.Tensor,
    w2: torch.Tensor,
    *,
    sample_size: int,
    eps: float,
    min_samples: int,
    min_blob_fraction: float,
    silhouette_sample: int,
    gmm_sample: int,
    target_blobs: int,
    gen: torch.Generator,
    seed: int = 0,
) -> BlobReport:
    """All diagnostics of one snapshot of the weights (W1.T and W2, both [d, h])."""
    start = time.perf_counter()
    rng = np.random.default_rng(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
    pairs = sample_pairs(w1t, w2, sample_size, gen)
    z = standardise(pairs)
    labels = dbscan_blobs(z, eps, min_samples, min_blob_fraction)
    n_blobs = int(labels.max()) + 1 if (labels >= 0).any() else 0
    sil = silhouette(z, labels, silhouette_sample, rng)
    corr = pearson(w1t, w2)
    report = BlobReport(
        n_blobs=n_blobs,
        silhouette=sil,
        correlation=corr,
        gmm_components=gmm_components(z, gmm_sample, rng, seed),
        noise_fraction=float((labels < 0).mean()),
        score=blob_score(n_blobs, sil, target_blobs, corr),
        pairs=pairs,
        labels=labels,
    )
    report.seconds = time.perf_counter() - start
    return report


def warm_up() -> None:
    """Run every diagnostic once on a few synthetic pairs: the first calls in a process pay
    one-off costs (~2 s measured here) that are start-up, not per-epoch overhead."""
    w = torch.linspace(-1, 1, 400).reshape(20, 20)
    diagnose(
        w,
        w.flip(0),
        sample_size=200,
        eps=0.5,
        min_samples=5,
        min_blob_fraction=0.0,
        silhouette_sample=100,
        gmm_sample=100,
        target_blobs=3,
        gen=torch.Generator().manual_seed(0),
    )
