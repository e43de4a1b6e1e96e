"""Batch-size profiler: short runs of the same config at several batch sizes, side by side.

For each size: time per epoch, samples per second, peak memory (GPU memory allocated when on
a GPU, else the growth of the process's peak resident memory) and the validation loss after
the short run, then a recommendation and a markdown report. Diagnostics are switched off:
they do not depend on the batch size. On the CPU each size runs in a fresh process, so its
peak memory is its own.
"""

from __future__ import annotations

import dataclasses
import multiprocessing as mp
import resource
import statistics
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass

from trainables.common import LocalContext, pick_device
from trainables.denoising.config import Config
from trainables.denoising.train import train

TOLERANCE = 0.10  # batch sizes within 10% of the best throughput count as equally fast


@dataclass
class BatchProfile:
    batch_size: int
    steps_per_epoch: int
    epoch_s: float = float("nan")  # median over the epochs after the first (warm-up) one
    samples_per_s: float = float("nan")
    peak_memory_mib: float = float("nan")
    val_loss: float = float("nan")  # after the short run: fewer, larger steps learn less per epoch
    error: str = ""


def with_batch(cfg: Config, batch_size: int, epochs: int) -> Config:
    trainer = dataclasses.replace(cfg.trainer, batch_size=batch_size, epochs=epochs)
    diagnostics = dataclasses.replace(cfg.diagnostics, enabled=False)
    return dataclasses.replace(cfg, trainer=trainer, diagnostics=diagnostics)


def memory_kind(cfg: Config) -> str:
    return "GPU memory allocated" if pick_device(cfg.trainer.device).type == "cuda" else "CPU peak RSS growth"


def profile_one(cfg: Config, batch_size: int, epochs: int, threads: int = 1) -> BatchProfile:
    """Train `epochs` short epochs at `batch_size` in this process and measure them."""
    import torch

    torch.set_num_threads(threads)
    run = with_batch(cfg, batch_size, epochs)
    row = BatchProfile(batch_size=batch_size, steps_per_epoch=run.steps_per_epoch)
    device = pick_device(run.trainer.device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        with tempfile.TemporaryDirectory(prefix="bs-profile-") as tmp:
            ctx = LocalContext(tmp)
            train(run, ctx)
    except (RuntimeError, MemoryError) as exc:  # torch.cuda.OutOfMemoryError is a RuntimeError
        row.error = str(exc).strip().splitlines()[0][:200]
        return row
    timed = ctx.history[1:] or ctx.history
    row.epoch_s = statistics.median(h["perf/epoch_s"] for h in timed)
    row.samples_per_s = statistics.median(h["perf/samples_per_s"] for h in timed)
    row.val_loss = ctx.history[-1]["val/loss"]
    if device.type == "cuda":
        row.peak_memory_mib = torch.cuda.max_memory_allocated(device) / 2**20
    else:  # ru_maxrss is in KiB on Linux
        row.peak_memory_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    return row


def profile(
    cfg: Config, batch_sizes: Sequence[int], *, epochs: int = 2, threads: int = 1, isolate: bool = True
) -> list[BatchProfile]:
    """Profile each batch size, each in a fresh process when `isolate` (CPU peak memory)."""
    rows = []
    for size in batch_sizes:
        if not isolate:
            rows.append(profile_one(cfg, size, epochs, threads))
            continue
        with mp.get_context("spawn").Pool(1) as pool:
            rows.append(pool.apply(profile_one, (cfg, size, epochs, threads)))
    return rows


def recommend(rows: Sequence[BatchProfile], tolerance: float = TOLERANCE) -> tuple[BatchProfile | None, str]:
    """The smallest batch size within `tolerance` of the best throughput: as fast as it gets,
    with the most optimizer steps per epoch."""
    ok = [r for r in rows if not r.error]
    if not ok:
        return None, "every batch size failed; see the errors in the table"
    best = max(ok, key=lambda r: r.samples_per_s)
    pick = min((r for r in ok if r.samples_per_s >= (1 - tolerance) * best.samples_per_s), key=lambda r: r.batch_size)
    if pick is best:
        reason = f"the highest throughput ({best.samples_per_s:,.0f} samples/s)"
    else:
        reason = (
            f"within {tolerance:.0%} of the best throughput ({pick.samples_per_s:,.0f} vs {best.samples_per_s:,.0f} "
            f"samples/s at batch {best.batch_size}) with {pick.steps_per_epoch / best.steps_per_epoch:.1f}x the "
            "optimizer steps per epoch"
        )
    return pick, reason


def markdown(rows: Sequence[BatchProfile], cfg: Config, *, epochs: int, threads: int, title: str = "") -> str:
    pick, reason = recommend(rows)
    device = pick_device(cfg.trainer.device)
    lines = [
        f"# Batch-size profile{': ' + title if title else ''}",
        "",
        f"d={cfg.data.d}, h={cfg.model.hidden_size}, {cfg.data.n_train:,} samples per epoch, {epochs} epochs per "
        f"batch size, device {device.type}"
        + (f" ({threads} CPU thread{'s' if threads > 1 else ''})" if device.type == "cpu" else "")
        + ". Time per epoch and samples/s are medians over the epochs after the first; diagnostics off.",
        "",
        f"| batch size | steps/epoch | time/epoch (s) | samples/s | peak memory (MiB, {memory_kind(cfg)}) | val loss after {epochs} epochs | note |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        note = r.error or ("**recommended**" if pick is not None and r is pick else "")
        lines.append(
            f"| {r.batch_size} | {r.steps_per_epoch} | {r.epoch_s:.3f} | {r.samples_per_s:,.0f} | "
            f"{r.peak_memory_mib:.1f} | {r.val_loss:.4g} | {note} |"
        )
    lines.append("")
    if pick is None:
        lines.append(f"No recommendation: {reason}.")
    else:
        lines.append(
            f"**Recommended batch size: {pick.batch_size}**: {reason}. Set it with `trainer.batch_size={pick.batch_size}`."
        )
    lines.append(
        "A larger batch takes fewer optimizer steps per epoch; compare the validation losses before raising the "
        "learning rate or the epochs to make up for it."
    )
    return "\n".join(lines) + "\n"
