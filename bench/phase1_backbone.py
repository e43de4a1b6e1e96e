"""Training steps per second of study A's transformer: transformers' GPT-2 against the lean
backbone (the same blocks on torch's fused attention), side by side in one run.

    python bench/phase1_backbone.py                 # the local profile's model, K = 1 and 10
    python bench/phase1_backbone.py profile=full    # the paper's model (on a GPU when present)

Each round times `--steps` optimizer steps of each backbone in turn (after a warm-up), at the
threads a trial gets (`--threads`, default 1), and prints the median steps/s of each and
their ratio. Rounds alternate so that other load on the machine falls on both alike.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from trainables.common import pick_device
from trainables.phase1 import PROFILES, Config
from trainables.phase1.data import sample_prompts
from trainables.phase1.train import _loss, build_model
from tune_jobs.core.config import build_config


def steps_per_s(cfg: Config, steps: int, device: torch.device) -> float:
    torch.manual_seed(0)
    model = build_model(cfg).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.trainer.lr)
    gen = torch.Generator().manual_seed(0)
    batches = [sample_prompts(cfg.data, cfg.trainer.batch_size, gen) for _ in range(4)]

    def step(i: int) -> None:
        loss = _loss(model, batches[i % 4], cfg, device)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for i in range(5):  # warm-up
        step(i)
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for i in range(steps):
        step(i)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps / (time.perf_counter() - start)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--k", type=int, nargs="+", default=[1, 10])
    p.add_argument("settings", nargs="*", metavar="key=value", help="profile=local|full and config overrides")
    args = p.parse_args()
    settings = dict(s.split("=", 1) for s in args.settings)
    profile = settings.pop("profile", "local")
    torch.set_num_threads(args.threads)
    print(f"profile {profile}, {args.threads} thread(s), {args.steps} steps x {args.rounds} rounds per backbone")
    print(f"{'K':>3} {'gpt2 steps/s':>13} {'lean steps/s':>13} {'lean/gpt2':>10}")
    for k in args.k:
        rates: dict[str, list[float]] = {"gpt2": [], "lean": []}
        for _ in range(args.rounds):
            for backbone in rates:
                cfg = build_config(
                    Config, PROFILES[profile], settings | {"data.n_components": k, "model.backbone": backbone}
                )
                rates[backbone].append(steps_per_s(cfg, args.steps, pick_device(cfg.trainer.device)))
        g, le = statistics.median(rates["gpt2"]), statistics.median(rates["lean"])
        print(f"{k:>3} {g:>13.1f} {le:>13.1f} {le / g:>9.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
