"""The Ray a sweep runs on: the cluster at an address (or $RAY_ADDRESS), else one started here
for this driver alone, and shut down after the sweep when its output went to ray.log."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from tune_jobs.core.preflight import check_fits


def start_ray(address: str | None, per_trial: Mapping[str, Any]) -> None:
    """Connect to Ray at `address`, else start one here (none when Ray is up already)."""
    import ray

    if ray.is_initialized():
        return
    from tune_jobs.core.tracking.login import secrets_withheld

    local = address is None and not os.environ.get("RAY_ADDRESS")
    with secrets_withheld():  # Ray's processes, and so the trials, never see a tracking password
        if local:
            from tune_jobs.core import reaper

            reaper.watch()  # the Ray started here ends with this driver, however it ends
        ray.init(
            address=address,
            include_dashboard=False,
            configure_logging=True,
            logging_level=logging.WARNING,
            log_to_driver=True,
        )
    if local:
        # A Ray started here never grows: a trial asking for more than it has would wait
        # forever. Checked before anything is written.
        check_fits(per_trial, ray.cluster_resources())


@contextmanager
def ray_ended_after(output: Any) -> Iterator[None]:
    """Shut down, on the way out, a Ray that this block starts while `output` goes to ray.log:
    Ray's log thread prints the workers' last lines for a while after the sweep; they belong in
    ray.log, not on the terminal after the summary."""
    import ray

    started_here = not ray.is_initialized()
    try:
        yield
    finally:
        if started_here and output.redirect:
            ray.shutdown()
