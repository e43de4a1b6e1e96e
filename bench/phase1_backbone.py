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
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from trainables.phase1 import PROFILES, Config
from tune_jobs.core.cli import OneLineParser
from tune_jobs.core.config import build_config
from tune_jobs.core.errors import ConfigError, one_line

if TYPE_CHECKING:
    import torch

BACKBONES = ("gpt2", "lean")


def steps_per_s(cfg: Config, steps: int, device: torch.device) -> float:
    import torch

    from trainables.phase1.data import sample_prompts
    from trainables.phase1.train import _loss, build_model

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


def configs(args: argparse.Namespace) -> tuple[str, dict[tuple[int, str], Config]]:
    """The profile and every (K, backbone) config the bench will time, all checked before the
    first is timed: a mistake is one ConfigError line, not a traceback minutes in."""
    for flag, value, example in (
        ("--steps", args.steps, "60"),
        ("--rounds", args.rounds, "3"),
        ("--threads", args.threads, "1"),
        ("--k", min(args.k), "1 10"),
    ):
        if value < 1:
            raise ConfigError(f"{flag} {value}: must be at least 1, e.g. {flag} {example}")
    for text in args.settings:
        if "=" not in text or not text.split("=", 1)[0]:
            raise ConfigError(f"setting {text!r} is not key=value; write e.g. trainer.lr=0.001 or profile=full")
    settings = dict(s.split("=", 1) for s in args.settings)
    profile = settings.pop("profile", "local")
    if profile not in PROFILES:
        raise ConfigError(f"profile={profile!r} is not one of {', '.join(PROFILES)}; use profile=local or profile=full")
    built = {
        (k, backbone): build_config(
            Config, PROFILES[profile], settings | {"data.n_components": k, "model.backbone": backbone}
        )
        for k in args.k
        for backbone in BACKBONES
    }
    device = next(iter(built.values())).trainer.device
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(f"trainer.device={device}, but torch sees no GPU here; use trainer.device=auto or cpu")
    return profile, built


def main(argv: Sequence[str] | None = None) -> int:
    p = OneLineParser(
        prog="python bench/phase1_backbone.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--steps", type=int, default=60, help="timed optimizer steps per backbone and round (default 60)")
    p.add_argument("--rounds", type=int, default=3, help="rounds; the median of each backbone's is printed (default 3)")
    p.add_argument("--threads", type=int, default=1, help="torch threads, as a trial gets (default 1)")
    p.add_argument("--k", type=int, nargs="+", default=[1, 10], help="the component counts to time (default 1 10)")
    p.add_argument("settings", nargs="*", metavar="key=value", help="profile=local|full and config overrides")
    args = p.parse_args(argv)
    try:
        profile, built = configs(args)
    except ConfigError as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 2
    import torch

    from trainables.common import pick_device

    torch.set_num_threads(args.threads)
    print(f"profile {profile}, {args.threads} thread(s), {args.steps} steps x {args.rounds} rounds per backbone")
    print(f"{'K':>3} {'gpt2 steps/s':>13} {'lean steps/s':>13} {'lean/gpt2':>10}")
    for k in args.k:
        rates: dict[str, list[float]] = {backbone: [] for backbone in BACKBONES}
        for _ in range(args.rounds):
            for backbone in rates:
                cfg = built[k, backbone]
                rates[backbone].append(steps_per_s(cfg, args.steps, pick_device(cfg.trainer.device)))
        g, le = statistics.median(rates["gpt2"]), statistics.median(rates["lean"])
        print(f"{k:>3} {g:>13.1f} {le:>13.1f} {le / g:>9.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
