"""The training loop: config -> data -> model -> losses -> epochs, reporting through `ctx`.

Per epoch it reports (namespaced) train/total_loss, train/rec_tokens, train/rec_globals,
val/loss (= val/rec_tokens + val/rec_globals, unweighted: comparable across every beta and
bottleneck, the seed's `val_loss`), val/total_loss (the trial's own objective on val), and
for vq the codebook use. Per trial, under ctx.artifact_dir: model.pt (the epoch with the
best val/total_loss), facts/metrics.csv and facts/normalisation.json, figures/loss_curves.png,
and run.log whose lines read `[20/20] val_loss=0.123 rec_tokens=0.100 rec_globals=0.023 ...`.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import time
from pathlib import Path

import torch

from trainables.autoencoder.config import METRICS, Config
from trainables.autoencoder.data import EventSplit, Stats, resolve_path
from trainables.autoencoder.model import ParticleAutoencoder, losses
from trainables.autoencoder.vq import VectorQuantizer, usage
from trainables.common import TrialContext, atomic_file, pick_device


def build_model(cfg: Config) -> ParticleAutoencoder:
    return ParticleAutoencoder(cfg.model, cfg.vq, cfg.data.n_tokens)


def _vq(model: ParticleAutoencoder) -> VectorQuantizer | None:
    return model.bottleneck if isinstance(model.bottleneck, VectorQuantizer) else None


@torch.no_grad()
def evaluate(model: ParticleAutoencoder, split: EventSplit, stats: Stats, cfg: Config, device: torch.device) -> dict:
    """Losses over a whole split: squared errors summed, then divided by what they count."""
    model.eval()
    tok_se = tok_n = glob_se = glob_n = vq_sum = 0.0
    batches = 0
    vq = _vq(model)
    code_counts = torch.zeros(vq.codebook_size if vq else 1, device=device)
    for batch in split.batches(max(cfg.trainer.batch_size, 1024), stats):
        batch = batch.to(device)
        out = model(batch)
        tok_se += float(((out.tokens - out.target) ** 2).sum())
        tok_n += out.target.numel()
        glob_se += float(((out.globals - batch.globals) ** 2).sum())
        glob_n += batch.globals.numel()
        vq_sum, batches = vq_sum + float(out.vq_loss), batches + 1
        if out.codes is not None:
            code_counts += torch.bincount(out.codes, minlength=len(code_counts))
    model.train()
    rec_tokens, rec_globals = tok_se / max(tok_n, 1), glob_se / max(glob_n, 1)
    result = {
        "val/loss": rec_tokens + rec_globals,
        "val/total_loss": rec_tokens + cfg.model.globals_beta * rec_globals + vq_sum / max(batches, 1),
        "val/rec_tokens": rec_tokens,
        "val/rec_globals": rec_globals,
    }
    if vq is not None:
        result["vq/perplexity"], result["vq/code_usage"] = usage(code_counts.cpu())
    return result


class TrialFiles:
    """run.log and facts/metrics.csv; on resume, rows past the checkpoint's epoch are dropped."""

    def __init__(self, root: Path, start_epoch: int) -> None:
        self.log = root / "run.log"
        self.csv = root / "facts" / "metrics.csv"
        self.csv.parent.mkdir(parents=True, exist_ok=True)
        self.rows: list[dict[str, float]] = []
        if self.csv.exists():
            with open(self.csv) as f:
                self.rows = [
                    {k: float(v) for k, v in r.items() if v != ""}
                    for r in csv.DictReader(f)
                    if int(float(r["step"])) <= start_epoch
                ]
        if self.log.exists():
            keep = [line for line in self.log.read_text().splitlines() if _log_epoch(line) <= start_epoch]
            self.log.write_text("".join(f"{line}\n" for line in keep))
        self._rewrite_csv()

    def _rewrite_csv(self) -> None:
        keys = [m for m in METRICS if any(m in r for r in self.rows)] or ["step"]
        with open(self.csv, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=keys)
            w.writeheader()
            w.writerows(self.rows)

    def add(self, metrics: dict[str, float], epochs: int) -> None:
        self.rows.append(dict(metrics))
        self._rewrite_csv()
        with open(self.log, "a") as f:
            f.write(log_line(metrics, epochs) + "\n")


def log_line(m: dict[str, float], epochs: int) -> str:
    """`[20/20] val_loss=0.123 rec_tokens=0.100 rec_globals=0.023 total_loss=...` (val numbers)."""
    line = (
        f"[{int(m['step'])}/{epochs}] val_loss={m['val/loss']:.3f} rec_tokens={m['val/rec_tokens']:.3f} "
        f"rec_globals={m['val/rec_globals']:.3f} total_loss={m['val/total_loss']:.3f} "
        f"train_total_loss={m['train/total_loss']:.3f}"
    )
    if "vq/code_usage" in m:
        line += f" perplexity={m['vq/perplexity']:.1f} code_usage={m['vq/code_usage']:.2f}"
    return line


def _log_epoch(line: str) -> int:
    try:
        return int(line[1:].split("/", 1)[0])
    except ValueError:
        return 0


def _save_best(path: Path, model: ParticleAutoencoder, stats: Stats, cfg: Config, epoch: int, val: dict) -> None:
    with atomic_file(path) as tmp:
        torch.save(
            {
                "model": model.state_dict(),
                "normalisation": stats.state_dict(),
                "config": dataclasses.asdict(cfg),
                "epoch": epoch,
                "val": {k: float(v) for k, v in val.items()},
            },
            tmp,
        )


def plot_curves(rows: list[dict[str, float]], path: Path, title: str) -> None:
    """Loss curves of one trial (train and val objective; each val term; vq codebook use)."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    epochs = [r["step"] for r in rows]
    has_vq = any("vq/code_usage" in r for r in rows)
    fig = Figure(figsize=(13 if has_vq else 9, 3.8))
    axes = fig.subplots(1, 3 if has_vq else 2)
    a, b = axes[0], axes[1]
    for key, label, style in (
        ("train/total_loss", "train total (weighted objective)", "-"),
        ("val/total_loss", "val total (weighted objective)", "--"),
        ("val/loss", "val rec_tokens + rec_globals", ":"),
    ):
        a.plot(epochs, [r[key] for r in rows], style, marker="o", ms=3, label=label)
    a.set_yscale("log")
    a.set_title("objective")
    for key, label in (("val/rec_tokens", "val rec_tokens"), ("val/rec_globals", "val rec_globals")):
        b.plot(epochs, [r[key] for r in rows], marker="o", ms=3, label=label)
    b.set_yscale("log")
    b.set_title("reconstruction terms (unweighted)")
    for ax in (a, b):
        ax.set_xlabel("epoch")
        ax.set_ylabel("MSE (z-scored units)")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    if has_vq:
        c = axes[2]
        c.plot(
            epochs,
            [r.get("vq/code_usage", math.nan) for r in rows],
            marker="o",
            ms=3,
            label="fraction of codes used (val)",
        )
        c.set_ylim(0, 1.05)
        c.set_xlabel("epoch")
        c.set_ylabel("fraction of codes")
        c2 = c.twinx()
        c2.plot(epochs, [r.get("vq/perplexity", math.nan) for r in rows], color="tab:red", marker="s", ms=3)
        c2.set_ylabel("perplexity (red)")
        c.set_title("codebook use")
        c.grid(alpha=0.3)
        c.legend(fontsize=8, loc="lower right")
    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_file(path, suffix=path.suffix) as tmp:  # never a half-drawn PNG
        fig.savefig(tmp, dpi=120)


def train(cfg: Config, ctx: TrialContext) -> None:
    device = pick_device(cfg.trainer.device)
    torch.manual_seed(cfg.seed)
    path = resolve_path(cfg.data)
    train_split, val_split = EventSplit(path, "train", cfg.data), EventSplit(path, "val", cfg.data)
    stats = train_split.stats()  # train split only: val and test never leak into the scaling
    model = build_model(cfg).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.trainer.lr, weight_decay=cfg.trainer.weight_decay)
    beta, epochs = cfg.model.globals_beta, cfg.trainer.epochs

    start, best, best_epoch = 0, math.inf, 0
    state = ctx.restored_state()
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        start, best, best_epoch = int(state["epoch"]), float(state["best"]), int(state["best_epoch"])

    out_dir = ctx.artifact_dir
    files = TrialFiles(out_dir, start)
    (out_dir / "facts" / "normalisation.json").write_text(
        json.dumps({k: v.tolist() for k, v in stats.state_dict().items()} | {"file": str(path)}, indent=1)
    )
    vq = _vq(model)
    for epoch in range(start + 1, epochs + 1):
        t0 = time.perf_counter()
        # The batch order of an epoch depends on (seed, epoch) only: a resumed trial replays it.
        order = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)
        sums = {"total": 0.0, "tokens": 0.0, "globals": 0.0, "vq": 0.0}
        n_batches = 0
        train_codes = torch.zeros(vq.codebook_size if vq else 1, device=device)
        if vq is not None:
            vq.resets = 0
        for batch in train_split.batches(cfg.trainer.batch_size, stats, order):
            batch = batch.to(device)
            out = model(batch)
            rec_tokens, rec_globals = losses(out, batch)
            # Research logic: the globals head is weighted by beta; beta = 0 leaves it untrained
            # (rec_globals is still measured, unweighted, to show what beta buys).
            total = rec_tokens + beta * rec_globals + out.vq_loss
            if not math.isfinite(total.item()):
                raise FloatingPointError(f"train/total_loss became {total.item()} in epoch {epoch}; lower trainer.lr")
            opt.zero_grad(set_to_none=True)
            total.backward()
            opt.step()
            for key, value in (("total", total), ("tokens", rec_tokens), ("globals", rec_globals), ("vq", out.vq_loss)):
                sums[key] += float(value.detach())
            n_batches += 1
            if out.codes is not None:
                train_codes += torch.bincount(out.codes, minlength=len(train_codes))

        val = evaluate(model, val_split, stats, cfg, device)
        metrics = {
            "step": epoch,
            "train/total_loss": sums["total"] / n_batches,
            "train/rec_tokens": sums["tokens"] / n_batches,
            "train/rec_globals": sums["globals"] / n_batches,
            **val,
        }
        if vq is not None:
            metrics["train/vq_loss"] = sums["vq"] / n_batches
            metrics["vq/train_code_usage"] = usage(train_codes.cpu())[1]
            metrics["vq/dead_resets"] = vq.resets
        metrics["time/epoch_s"] = time.perf_counter() - t0
        if not math.isfinite(val["val/total_loss"]):
            raise FloatingPointError(
                f"val/total_loss became {val['val/total_loss']} in epoch {epoch}; lower trainer.lr"
            )
        if val["val/total_loss"] < best:
            best, best_epoch = val["val/total_loss"], epoch
            _save_best(out_dir / "model.pt", model, stats, cfg, epoch, val)
        files.add(metrics, epochs)
        if epoch == epochs:  # before the last report: files written after it may never be synced
            plot_curves(
                files.rows,
                out_dir / "figures" / "loss_curves.png",
                f"{cfg.model.latent_space}, globals_beta={beta:g} (best epoch {best_epoch})",
            )
        checkpoint = None
        if epoch == epochs or epoch % cfg.trainer.checkpoint_every == 0:
            checkpoint = {
                "model": model.state_dict(),
                "optimizer": opt.state_dict(),
                "torch_rng": torch.get_rng_state(),
                "epoch": epoch,
                "best": best,
                "best_epoch": best_epoch,
            }
        ctx.report(metrics, checkpoint)


def check(cfg: Config) -> None:
    """What the sweep service checks before Ray starts: a user's data file (raises ValueError)."""
    from trainables.autoencoder.data import check_file

    check_file(cfg.data)


def estimate(cfg: Config) -> dict[str, float]:
    """--dry-run estimate: parameters and training FLOPs (6 x params x tokens seen)."""
    params = sum(p.numel() for p in build_model(cfg).parameters())
    events = cfg.data.n_train
    if cfg.data.path:
        import h5py

        from trainables.common import user_path

        with h5py.File(user_path(cfg.data.path), "r") as f:
            events = f["X_train"].shape[0]
    tokens = events * cfg.data.n_tokens * 0.4 * cfg.trainer.epochs  # ~40% of the slots are real particles
    return {"params": params, "flops": 6 * params * tokens}
