"""Study A's full profile and one epoch of the denoising reference, on one GPU, in minutes.

    python bench/gpu_full_profile.py             # on a GPU machine (under 8 minutes on one GPU)
    python bench/gpu_full_profile.py --smoke     # a CPU check of this script (tiny sizes)

Study A (profile=full: GPT-2 256 wide, 12 layers, 8 heads, batch 64) at K = 1, 4 and 10 for
`--steps` steps each: steps/s (evaluations included), peak GPU memory, and the validation nMSE
trajectory against the zero, least-squares and oracle baselines of the same prompts, then the
held-out evaluation at the last step. Then one epoch of the denoising study's reference
config (reference_3blob.yaml's fixed settings, profile=full) with its samples/s. Everything
runs in this process through the studies' own `train` (no Ray, no MLflow), in a temporary
folder.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from trainables.common import LocalContext, pick_device
from tune_jobs.core.config import build_config

ROOT = Path(__file__).resolve().parents[1]

ICL_SMOKE = {
    "model.n_embd": 16,
    "model.n_layer": 1,
    "model.n_head": 2,
    "trainer.batch_size": 8,
    "trainer.eval_prompts": 32,
    "trainer.final_eval_prompts": 64,
    "trainer.warmup_steps": 2,
    "trainer.device": "cpu",
}
DENOISING_SMOKE = {
    "data.d": 64,
    "model.hidden_size": 32,
    "data.n_train": 2048,
    "data.val_samples": 256,
    "trainer.batch_size": 256,
    "diagnostics.sample_size": 600,
    "diagnostics.silhouette_sample": 200,
    "diagnostics.gmm_sample": 200,
    "trainer.device": "cpu",
}


def peak_memory(device: torch.device) -> str:
    if device.type != "cuda":
        return "n/a (CPU)"
    return f"{torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB"


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def icl(k: int, steps: int, smoke: bool, work: Path) -> dict:
    from trainables.phase1 import PROFILES, Config
    from trainables.phase1.train import train

    every = max(1, steps // 10)
    settings = {
        "data.n_components": k,
        "trainer.steps": steps,
        "trainer.eval_every": every,
        "trainer.checkpoint_every": every * 10,
    }
    cfg = build_config(Config, PROFILES["full"], ICL_SMOKE if smoke else {}, settings)
    device = pick_device(cfg.trainer.device)
    reset_peak(device)
    ctx = LocalContext(work / f"icl_k{k}")
    start = time.perf_counter()
    train(cfg, ctx)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    wall = time.perf_counter() - start
    last = ctx.history[-1]
    print(
        f"\nstudy A, profile=full, K={k}: {steps} steps in {wall:.1f} s = {steps / wall:.1f} steps/s "
        f"(evaluations included) on {device}; peak memory {peak_memory(device)}"
    )
    print(
        f"  baselines (validation prompts): zero {last['baseline/zero_nmse']:.3f}  "
        f"least squares {last['baseline/lstsq_nmse']:.3f}  oracle {last['baseline/oracle_nmse']:.3f}"
    )
    print("  step   val nMSE")
    for row in ctx.history:
        print(f"  {int(row['step']):>5}  {row['val/nmse']:.4f}")
    print(
        f"  held-out ({cfg.trainer.final_eval_prompts} prompts): model {last['final/nmse']:.4f} ± {last['final/nmse_se']:.4f}, "
        f"least squares {last['final/lstsq_nmse']:.4f}, zero {last['final/zero_nmse']:.4f}, "
        f"oracle {last['final/oracle_nmse']:.4f}; model - least squares {last['final/nmse_minus_lstsq']:+.4f} "
        f"± {last['final/nmse_minus_lstsq_se']:.4f}"
    )
    return {"k": k, "steps": steps, "wall_s": wall, "steps_per_s": steps / wall, "final": last}


def denoising(smoke: bool, work: Path) -> dict:
    import yaml

    from trainables.denoising import PROFILES, Config
    from trainables.denoising.train import train

    fixed = yaml.safe_load((ROOT / "search_spaces" / "reference_3blob.yaml").read_text()).get("fixed", {})
    cfg = build_config(Config, PROFILES["full"], fixed, DENOISING_SMOKE if smoke else {}, {"trainer.epochs": 1})
    device = pick_device(cfg.trainer.device)
    reset_peak(device)
    ctx = LocalContext(work / "denoising")
    start = time.perf_counter()
    train(cfg, ctx)
    wall = time.perf_counter() - start
    last = ctx.history[-1]
    print(
        f"\ndenoising reference (reference_3blob.yaml, profile=full: d={cfg.data.d}, h={cfg.model.hidden_size}, "
        f"{cfg.data.n_train} samples/epoch): one epoch {last['perf/epoch_s']:.1f} s = "
        f"{last['perf/samples_per_s']:.0f} samples/s on {device} ({wall:.1f} s with the diagnostics); "
        f"peak memory {peak_memory(device)}; val/loss {last['val/loss']:.4f} "
        f"({last['val/loss_vs_zero']:.3f} of the zero predictor's)"
    )
    return {"wall_s": wall, "metrics": last}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="tiny sizes, on CPU: a check of this script")
    p.add_argument("--steps", type=int, default=None, help="study A steps per K (default 3000; 20 with --smoke)")
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = p.parse_args()
    steps = args.steps or (20 if args.smoke else 3000)
    if not args.smoke and not torch.cuda.is_available():
        print("no GPU here: this bench is for a GPU machine; --smoke checks it on CPU", file=sys.stderr)
        return 2
    print(
        f"torch {torch.__version__}; device {torch.cuda.get_device_name(0) if torch.cuda.is_available() and not args.smoke else 'cpu'}"
    )
    with tempfile.TemporaryDirectory(prefix="gpu_full_profile-") as tmp:
        work = Path(tmp)
        out = {"icl": [icl(k, steps, args.smoke, work) for k in (1, 4, 10)], "denoising": denoising(args.smoke, work)}
    if args.json:
        args.json.write_text(json.dumps(out, indent=1, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
