"""The key picture of the study: the weight pairs (W1[j, i], W2[i, j]) coloured by DBSCAN blob.

Used by the training loop (one PNG per trial, per epoch while it is cheap) and by the sweep
report (the best regimes side by side). Matplotlib only, headless.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from trainables.common import atomic_file  # noqa: E402

NOISE_COLOUR = "#b0b0b0"
BLOB_COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"]


def draw_pairs(ax, pairs: np.ndarray, labels: np.ndarray, title: str = "") -> None:
    """Scatter of the sampled pairs on `ax`, one colour per blob, noise in grey."""
    noise = labels < 0
    ax.scatter(pairs[noise, 0], pairs[noise, 1], s=3, c=NOISE_COLOUR, alpha=0.6, lw=0, label="noise")
    for blob in range(int(labels.max()) + 1 if (~noise).any() else 0):
        inside = labels == blob
        colour = BLOB_COLOURS[blob % len(BLOB_COLOURS)]
        ax.scatter(
            pairs[inside, 0],
            pairs[inside, 1],
            s=4,
            c=colour,
            alpha=0.7,
            lw=0,
            label=f"blob {blob + 1} ({inside.sum()})",
        )
    ax.set_xlabel("encoder weight W1[j, i]")
    ax.set_ylabel("decoder weight W2[i, j]")
    ax.axhline(0, color="k", lw=0.3)
    ax.axvline(0, color="k", lw=0.3)
    if title:
        ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, markerscale=3, loc="upper left")


def save_scatter(path: Path, pairs: np.ndarray, labels: np.ndarray, title: str, dpi: int = 90) -> Path:
    fig, ax = plt.subplots(figsize=(4.8, 4.2))
    draw_pairs(ax, pairs, labels, title)
    with atomic_file(path, suffix=path.suffix) as tmp:  # never a half-drawn PNG
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return path


def warm_up() -> None:
    """Draw one tiny figure in memory: the first figure of a process loads fonts (~1 s)."""
    import io

    fig, ax = plt.subplots(figsize=(1, 1))
    draw_pairs(ax, np.zeros((2, 2)), np.array([0, -1]))
    fig.savefig(io.BytesIO(), format="png", dpi=20)
    plt.close(fig)
