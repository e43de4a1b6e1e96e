"""The training loop: config -> data -> model -> loss -> loop, reporting through `ctx`."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from trainables.common import TrialContext, pick_device
from trainables.phase1.baselines import all_baselines, lstsq_errors, oracle_errors, zero_errors
from trainables.phase1.config import Config
from trainables.phase1.data import Prompts, sample_eval_prompts, sample_prompts
from trainables.phase1.model import ICLTransformer

# What `train` reports; the sweep metric is checked against this before Ray starts.


def build_model(cfg: Config) -> ICLTransformer:
    return ICLTransformer(
        n_dims=cfg.data.n_dims,
        n_points=cfg.data.n_points,
        n_embd=cfg.model.n_embd,
        n_layer=cfg.model.n_layer,
        n_head=cfg.model.n_head,
        backbone=cfg.model.backbone,
    )


def _loss(model: ICLTransformer, prompts: Prompts, cfg: Config, device: torch.device) -> torch.Tensor:
    # Research logic: the model sees y / scale (unit variance); 'all' averages the squared
    # error over every x position, 'target' over the target block and the query (the points
    # whose component must be found among the context blocks), 'query' keeps the last one.
    xs, ys = prompts.xs.to(device), (prompts.ys / cfg.data.scale).to(device)
    pred = model(xs, ys)
    if cfg.trainer.loss_positions == "query":
        return ((pred[:, -1] - ys[:, -1]) ** 2).mean()
    if cfg.trainer.loss_positions == "target":
        tail = cfg.data.target_points + 1
        return ((pred[:, -tail:] - ys[:, -tail:]) ** 2).mean()
    return ((pred - ys) ** 2).mean()


@torch.no_grad()
def query_errors(model: ICLTransformer, prompts: Prompts, cfg: Config, device: torch.device) -> torch.Tensor:
    """Each prompt's squared error at the query over scale^2 * d (their mean is the nMSE), in
    batches so large evaluation sets fit anywhere."""
    model.eval()
    out = []
    for i in range(0, prompts.xs.shape[0], 512):
        xs = prompts.xs[i : i + 512].to(device)
        ys = (prompts.ys[i : i + 512] / cfg.data.scale).to(device)
        out.append(((model(xs, ys)[:, -1] - ys[:, -1]) ** 2).double().cpu())
    model.train()
    return torch.cat(out) / cfg.data.n_dims


def query_nmse(model: ICLTransformer, prompts: Prompts, cfg: Config, device: torch.device) -> float:
    return float(query_errors(model, prompts, cfg, device).mean())


# The evaluation prompts are the same rulers for every trial, whatever its seed (the seed varies
# training only: init and data stream). Seed 0's were seed + 1 and seed + 2 before; unchanged.
VAL_SEED, FINAL_EVAL_SEED = 1, 2


def _mean_se(errors: torch.Tensor) -> tuple[float, float]:
    return float(errors.mean()), float(errors.std() / math.sqrt(errors.numel()))


def final_evaluation(model: ICLTransformer, cfg: Config, device: torch.device) -> dict[str, float]:
    """The trained model and the baselines on `trainer.final_eval_prompts` held-out prompts
    (FINAL_EVAL_SEED, shared across K and seeds like the validation set), each with its standard error, and the
    model's difference to least squares paired prompt by prompt (its error is far smaller
    than either value's, since both are judged on the same prompts)."""
    prompts = sample_eval_prompts(cfg.data, cfg.trainer.final_eval_prompts, FINAL_EVAL_SEED)
    model_err = query_errors(model, prompts, cfg, device)
    errors = {
        "nmse": model_err,
        "zero_nmse": zero_errors(prompts, cfg.data),
        "lstsq_nmse": lstsq_errors(prompts, cfg.data),
        "oracle_nmse": oracle_errors(prompts, cfg.data),
        "nmse_minus_lstsq": model_err - lstsq_errors(prompts, cfg.data),
    }
    out: dict[str, float] = {}
    for name, err in errors.items():
        out[f"final/{name}"], out[f"final/{name}_se"] = _mean_se(err)
    return out


def _run_log(ctx: TrialContext, start: int) -> Path:
    """The trial's human-readable log; on resume, lines past the checkpoint are dropped."""
    path = ctx.artifact_dir / "run.log"
    if path.exists():
        keep = [line for line in path.read_text().splitlines() if int(line[1:].split("/", 1)[0]) < start]
        path.write_text("".join(f"{line}\n" for line in keep))
    return path


def active_dims(cfg: Config, step: int) -> int:
    """Input dimensions in use at `step` (the curriculum; the validation set always uses all)."""
    start = cfg.trainer.curriculum_start_dims
    if not start:
        return cfg.data.n_dims
    return min(cfg.data.n_dims, start + step // cfg.trainer.curriculum_every)


def lr_factor(cfg: Config, step: int) -> float:
    """The learning rate at `step` as a fraction of trainer.lr: a linear warm-up, then constant
    or a cosine from 1 down to trainer.lr_final at the last step."""
    t = cfg.trainer
    if t.warmup_steps and step < t.warmup_steps:
        return (step + 1) / t.warmup_steps
    if t.lr_schedule == "constant":
        return 1.0
    progress = min(1.0, (step - t.warmup_steps) / max(1, t.steps - 1 - t.warmup_steps))
    return t.lr_final + (1 - t.lr_final) * 0.5 * (1 + math.cos(math.pi * progress))


def train(cfg: Config, ctx: TrialContext) -> None:
    device = pick_device(cfg.trainer.device)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.trainer.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(cfg, s))
    data_gen = torch.Generator().manual_seed(cfg.seed)
    val = sample_eval_prompts(cfg.data, cfg.trainer.eval_prompts, VAL_SEED)
    baselines = all_baselines(val, cfg.data)

    start = 0
    state = ctx.restored_state()
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        data_gen.set_state(state["data_rng"])
        torch.set_rng_state(state["torch_rng"])
        start = int(state["step"])

    log_path = _run_log(ctx, start)
    steps, loss_sum, loss_n = cfg.trainer.steps, 0.0, 0
    for step in range(start, steps):
        batch = sample_prompts(cfg.data, cfg.trainer.batch_size, data_gen, active_dims(cfg, step))
        loss = _loss(model, batch, cfg, device)
        if not math.isfinite(loss.item()):
            raise FloatingPointError(f"train/loss became {loss.item()} at step {step}; lower trainer.lr")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        loss_sum, loss_n = loss_sum + loss.item(), loss_n + 1

        last = step == steps - 1
        if step % cfg.trainer.eval_every and not last:
            continue
        nmse = query_nmse(model, val, cfg, device)
        metrics = {
            "step": step,
            "train/loss": loss_sum / loss_n,
            "val/nmse": nmse,
            "val/nmse_rel_oracle": nmse - baselines["baseline/oracle_nmse"],
        }
        if step == 0 or last:
            # Constants of the trial (its validation prompts are fixed): reported at its first
            # and last evaluation, which MLflow draws as the same flat line as at every one.
            # Each metric key a batch holds costs a SQLite store a page of its index per sync.
            metrics.update(baselines)
        if last:
            metrics.update(final_evaluation(model, cfg, device))
        loss_sum, loss_n = 0.0, 0
        with open(log_path, "a") as f:
            f.write(f"[{step}/{steps}] val/nmse={nmse:.4f} train/loss={metrics['train/loss']:.4f}\n")
        checkpoint = None
        if last or step % cfg.trainer.checkpoint_every == 0:
            checkpoint = {
                "model": model.state_dict(),
                "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(),
                "data_rng": data_gen.get_state(),
                "torch_rng": torch.get_rng_state(),
                "step": step + 1,
            }
        ctx.report(metrics, checkpoint)


def estimate(cfg: Config) -> dict[str, float]:
    """Compute estimate for --dry-run: parameters, tokens seen and training FLOPs (6 N T)."""
    width, layers = cfg.model.n_embd, cfg.model.n_layer
    seq = 2 * cfg.data.n_points
    params = layers * 12 * width**2 + seq * width + (cfg.data.n_dims + 2) * width
    tokens = cfg.trainer.steps * cfg.trainer.batch_size * seq
    attn = cfg.trainer.steps * cfg.trainer.batch_size * layers * 6 * seq**2 * width
    return {"params": params, "tokens": tokens, "flops": 6 * params * tokens + attn}
