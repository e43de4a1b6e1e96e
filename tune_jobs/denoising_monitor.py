"""Live monitor of a denoising sweep: the seed's four panels for every trial, from MLflow.

python tune_jobs/denoising_monitor.py                       # the newest denoising sweep, every 15 s
python tune_jobs/denoising_monitor.py 20261121-081500-ab12  # one sweep (id, experiment or parent run)
python tune_jobs/denoising_monitor.py --once                # draw once and exit (scripts, tests)

Run it from the folder holding mlflow.db (or pass --mlflow-uri) in a second terminal while the
sweep runs: it redraws OUT (a PNG; default results/denoising/monitor.png) from what the sweep
has logged so far (silhouette, DBSCAN blobs, correlation and loss per epoch) until the sweep
ends. Open the PNG in any viewer that reloads, or the MLflow UI for single runs.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path

from tune_jobs.core.cli import OneLineParser
from tune_jobs.core.errors import ConfigError, one_line
from tune_jobs.core.paths import tracking_uri

ENDED = ("FINISHED", "FAILED", "KILLED")


def draw(client, parent_run_id: str, out: Path) -> str:
    """Redraw the panels into `out` (atomically: a viewer never sees half a file); a status line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from trainables.common import atomic_file  # imports torch: only once the arguments are checked
    from trainables.denoising.report import SCORE, panel_figure
    from tune_jobs.core.reporting import SweepData

    parent = client.get_run(parent_run_id)
    sweep = SweepData(client, parent)
    fig = panel_figure(sweep, f"{sweep.experiment} (sweep {sweep.sweep_id}, {parent.info.status.lower()})")
    with atomic_file(out, suffix=".png") as tmp:  # a viewer never shows a half-written PNG
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
    running = sum(t.status == "RUNNING" for t in sweep.trials)
    scores = [(t.metrics[SCORE], t.name) for t in sweep.trials if SCORE in t.metrics]
    best = max(scores) if scores else None
    return (
        f"{time.strftime('%H:%M:%S')} sweep {sweep.sweep_id}: {len(sweep.trials)} trials, {running} running"
        + (f"; best blob score {best[0]:.3f} ({best[1]})" if best else "")
        + f" -> {out}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    p = OneLineParser(prog="python tune_jobs/denoising_monitor.py", description=__doc__.splitlines()[0])
    p.add_argument("sweep", nargs="?", default="denoising", help="sweep id, experiment or parent run (default: newest)")
    p.add_argument("--every", type=float, default=15.0, help="seconds between redraws (default 15)")
    p.add_argument("--once", action="store_true", help="draw once and exit")
    p.add_argument("--out", default="results/denoising/monitor.png", help="the PNG to (re)draw")
    p.add_argument(
        "--mlflow-uri", default=None, help="MLflow tracking URI (default $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)"
    )
    args = p.parse_args(argv)
    try:
        if not 0 < args.every <= 86400:  # NaN fails too
            raise ConfigError(
                f"--every {args.every:g}: must be a number of seconds above 0, at most a day; e.g. --every 15"
            )
        uri = tracking_uri(args.mlflow_uri)
        if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///") :]).exists():
            raise ConfigError(f"no MLflow store at {uri}; run from the folder holding mlflow.db or pass --mlflow-uri")
        from tune_jobs.core.reporting import find_parent
        from tune_jobs.core.tracking.client import open_client

        client = open_client(uri)  # under the store's lock: a sweep may be creating it
        parent_id = find_parent(client, args.sweep).info.run_id
    except ConfigError as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 2
    out = Path(args.out)
    while True:
        ended = client.get_run(parent_id).info.status in ENDED  # read first: the last draw sees it all
        print(draw(client, parent_id, out), flush=True)
        if args.once or ended:
            return 0
        try:
            time.sleep(args.every)
        except KeyboardInterrupt:
            return 0


if __name__ == "__main__":
    raise SystemExit(main())
