"""Extend a finished sweep: `--resume ID sweep.seeds=N` adds the missing seeds to every point of
a grid, `--resume ID sweep.num_samples=N` adds samples to a random or Optuna search (the Optuna
study goes on from its stored trials, so its sampler knows what ran).

What already ran is not run again: the new trials are a new Tune run in the sweep's folder, under
the sweep's MLflow parent run, and the summary and report are rebuilt over all the trials.
sweep.json then holds the extended settings (so a later `--resume` recomposes the whole sweep)
and `extension`, the newest Tune run's share of it (so an interrupted extension resumes as the
run it is)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from tune_jobs.core.errors import ConfigError
from tune_jobs.core.plan import SEED_KEY, Plan

EXTENDS = ("sweep.num_samples", "sweep.seeds")  # the settings `--resume` takes: they add trials


def override_key(override: str) -> str:
    return override.split("=", 1)[0].strip()


def extended_overrides(saved: list[str], more: list[str]) -> list[str]:
    """The sweep's overrides with `more` (sweep.num_samples / sweep.seeds) in place of its own."""
    keys = {override_key(o) for o in more}
    return [o for o in saved if override_key(o) not in keys] + list(more)


def extend(old: Plan, new: Plan, *, sweep_id: str, finished: bool, resume: str) -> tuple[Plan, dict[str, Any]]:
    """Sweep `sweep_id`, planned as `old`, extended to `new`: the whole extended plan (a grid
    keeps the points of its --start-from/--stop-at slice) and what it adds, as sweep.json keeps
    it: {"points": [...]} (a grid's new trials) or {"samples": N, "drawn": M} (a search's N new
    samples after its M); {} when nothing is added. ConfigError, in one line, where it cannot be
    done; `resume` is the command that finishes an unfinished sweep."""
    o, n = old.composed.experiment, new.composed.experiment
    if (n.seeds, n.num_samples) == (o.seeds, o.num_samples):
        return old, {}
    if n.seeds < o.seeds or n.num_samples < o.num_samples:
        raise ConfigError(
            f"sweep {sweep_id} ran sweep.num_samples={o.num_samples} sweep.seeds={o.seeds}; --resume adds trials "
            "and never drops any: ask for more, or start a new sweep"
        )
    kind = o.scheduler.get("kind", "fifo")
    if kind != "fifo":
        raise ConfigError(
            f"sweep {sweep_id} runs under {kind}, whose rungs were decided without the new trials; "
            "start a new sweep with the larger setting"
        )
    if not finished:
        raise ConfigError(f"sweep {sweep_id} has not finished; finish it first with: {resume}, then extend it")
    if o.search == "grid":
        if n.num_samples != o.num_samples:
            raise ConfigError(
                f"sweep.num_samples: sweep {sweep_id} is a grid, which runs each of its points; "
                "extend it with sweep.seeds=N, or add points in a new sweep"
            )
        kept = [_unseeded(t.point) for t in old.trials]
        wider = replace(new, trials=[t for t in new.trials if _unseeded(t.point) in kept])
        done = [t.point for t in old.trials]
        return wider, {"points": [t.point for t in wider.trials if t.point not in done]}
    if n.seeds != o.seeds:
        raise ConfigError(
            f"sweep.seeds: the Optuna study of sweep {sweep_id} was told each point's mean over {o.seeds} seeds; "
            "more seeds would leave it ranking the old means: start a new search with the new sweep.seeds"
        )
    return new, {"samples": n.num_samples - o.num_samples, "drawn": o.num_samples}


def _unseeded(point: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in point.items() if k != SEED_KEY}


def run_plan(plan: Plan, share: dict[str, Any]) -> Plan:
    """The part of the (extended) sweep's `plan` that its newest Tune run runs: the whole plan
    unless `share` (sweep.json's `extension`) names the new points or samples."""
    if "points" in share:
        return replace(plan, trials=[t for t in plan.trials if t.point in share["points"]])
    if "samples" in share:
        experiment = replace(plan.composed.experiment, num_samples=share["samples"])
        return replace(plan, composed=replace(plan.composed, experiment=experiment))
    return plan
