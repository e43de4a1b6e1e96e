"""Fractional GPUs on logical GPUs: a Ray node started with `--num-gpus=2` on this CPU machine.

Ray schedules GPUs as a resource: `--num-gpus=2` gives the node two GPU ids (0 and 1) whether
or not CUDA is there, and a trial asking for `resources.gpu=0.25` gets a quarter of one id,
with CUDA_VISIBLE_DEVICES set to it. So the packing a GPU cluster would do is real here; only
the training falls back to the CPU (one log line per trial says so). The sweep: study A's 12
quick trials under ASHA, each asking for a quarter GPU and a quarter CPU (8 x 0.25 = the
node's 2 CPUs, so the 8 trials that fit the GPUs also fit the CPUs). Checked from what MLflow
holds (run start and end, the `ray.gpu_ids` tag): 8 trials run at once, never more than 4 on
one GPU id, and when ASHA stops a trial its slot goes to a waiting trial at once (ray issue
17939 reports a Tune that did not start new trials after ASHA stopped some). The MLflow UI
then shows the trials with their GPU ids (screenshot in $TEST_ARTIFACTS_DIR, default
tests/artifacts/mlflow_ui_gpu_ids.png).
"""

import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest
from cluster_helpers import (
    chromium,
    free_port,
    mlflow_server_at,
    own_ray_token,
    processes_mentioning,
    render,
    replay_if_told,
    shared_view,
    start_ray_node,
    stop_ray_node,
    wait_for_nodes,
)
from helpers import ROOT, run_job
from mlflow import MlflowClient

ARTIFACTS = Path(os.environ.get("TEST_ARTIFACTS_DIR", ROOT / "tests" / "artifacts"))
GPUS, SLOTS, PER_GPU = 2, 8, 4  # --num-gpus=2, 0.25 GPU per trial
K = list(range(1, 13))  # 12 trials: 8 run at once, 4 wait for a slot
REPORTS = 7  # a trial below reports at steps 0, 25, ..., 150
EXPERIMENT = f"""\
# python tune_jobs/phase1.py --experiment <this file> --quick --address <a node with --num-gpus>
study: phase1
description: component-count scaling, a quarter GPU per trial, stop-only ASHA
metric: val/nmse
mode: min
search: grid
# Tune's stop-only ASHA: a stopped trial's slot must go to a waiting trial at once (ray issue
# 17939). (The promoting ASHA pauses trials instead; tests/core/test_asha_sweep.py runs it.)
scheduler: {{kind: asha, promote: false, max_t: {REPORTS}, grace_period: 2, reduction_factor: 2}}
resources: {{cpu: 0.25, gpu: 0.25}}
max_failures: 0
fixed:
  data.n_dims: 5
  data.total_contexts: 24
  data.target_points: 3
  data.scale: 0.1
profiles:
  quick: {{trainer.steps: 151, trainer.eval_every: 25, trainer.checkpoint_every: 50}}
space:
  data.n_components: {{grid: {K}}}
"""
FALLBACK_LINE = "but CUDA is not available: training on the CPU"


@pytest.fixture
def gpu_node(monkeypatch):
    """One Ray head with 2 CPUs (this machine's) and 2 logical GPUs, stopped after the test."""
    own_ray_token(monkeypatch)
    temp = Path(tempfile.mkdtemp(prefix="rgpu-", dir="/tmp"))  # short: Ray's socket paths live here
    port = free_port()
    head = start_ray_node(temp / "head.log", temp_dir=temp, head_port=port, num_cpus="2", num_gpus=str(GPUS))
    try:
        (node,) = wait_for_nodes(f"127.0.0.1:{port}", 1, [head])
        yield f"127.0.0.1:{port}", temp, node
    finally:
        stop_ray_node(head)
        deadline = time.monotonic() + 30
        while processes_mentioning(str(temp)) and time.monotonic() < deadline:
            time.sleep(1)
        left = processes_mentioning(str(temp))
        shutil.rmtree(temp, ignore_errors=True)
        assert not left, f"Ray processes left behind: {left}"


def most_at_once(spans: list[tuple[int, int]]) -> int:
    """The most spans (start, end) open at one instant; a span ending when another starts
    does not overlap it."""
    events = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    open_, most = 0, 0
    for _, step in events:  # at equal times the end (-1) sorts first
        open_ += step
        most = max(most, open_)
    return most


@pytest.mark.slow  # about 4 minutes on 2 shared cores
@pytest.mark.serial  # it times the machine's pace: run alone
def test_quarter_gpu_trials_pack_four_per_gpu_and_asha_frees_slots_at_once(gpu_node, workdir, tmp_path):
    address, ray_temp, node = gpu_node
    assert node["resources"]["GPU"] == GPUS and node["resources"]["CPU"] == 2
    experiment = tmp_path / "quarter_gpus.yaml"
    experiment.write_text(EXPERIMENT)
    (tmp_path / "mlflow").mkdir()

    with mlflow_server_at(tmp_path / "mlflow") as (uri, _):
        started = time.monotonic()
        out = run_job(
            ["phase1.py", "--quick", "--experiment", str(experiment), "--address", address, "--mlflow-uri", uri],
            workdir,
            timeout=900,
        )
        print(f"sweep: exit {out.returncode} after {time.monotonic() - started:.0f} s")
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        assert "resources per trial: cpu=0.25, gpu=0.25;" in out.stdout
        replay_if_told(out, workdir)  # 8 trials at once on 2 cores can slow the server

        client = MlflowClient(uri)
        exp = client.get_experiment_by_name("quarter_gpus")
        runs = client.search_runs([exp.experiment_id], max_results=100)
        trials = sorted((r for r in runs if r.data.tags.get("sweep.role") == "trial"), key=lambda r: r.info.start_time)
        assert sorted(int(r.data.params["data.n_components"]) for r in trials) == K
        assert all(r.info.status == "FINISHED" for r in trials)

        # Each trial's run names the GPU Ray gave it, as Ray gave it to the process.
        gpu = {r.info.run_id: r.data.tags.get("ray.gpu_ids") for r in trials}
        assert set(gpu.values()) == {"0", "1"}, gpu
        assert all(r.data.tags["ray.cuda_visible_devices"] == gpu[r.info.run_id] for r in trials)

        # The packing, from the runs' start and end: 8 trials at once, 4 on each GPU id.
        spans = {r.info.run_id: (r.info.start_time, r.info.end_time) for r in trials}
        assert most_at_once(list(spans.values())) == SLOTS
        for gpu_id in ("0", "1"):
            assert most_at_once([s for run, s in spans.items() if gpu[run] == gpu_id]) == PER_GPU

        # ASHA stopped some trials early, and each of the 4 waiting trials started as soon as a
        # slot was free: the gap from the last trial end before its start.
        reports = {r.info.run_id: len(client.get_metric_history(r.info.run_id, "val/nmse")) for r in trials}
        stopped = [run for run, n in reports.items() if n < REPORTS]
        assert stopped and all(reports[r.info.run_id] == REPORTS for r in trials if r.info.run_id not in stopped)
        waited = trials[SLOTS:]
        gaps = []
        for r in waited:
            freed = max(end for _, end in spans.values() if end <= r.info.start_time)
            gaps.append((r.info.start_time - freed) / 1000)
        print(
            f"ASHA stopped {len(stopped)} of {len(trials)} trials; waiting trials started {gaps} s after a slot freed"
        )
        assert len(gaps) == len(K) - SLOTS and max(gaps) < 10
        freed_by_asha = [
            run for run in stopped if any(0 <= (r.info.start_time - spans[run][1]) < 10_000 for r in waited)
        ]
        assert freed_by_asha, "no waiting trial took the slot of a trial ASHA stopped"

        # No CUDA here: every trial said so once, in its worker's log, and trained on the CPU.
        logs = [p for p in (ray_temp / "session_latest" / "logs").glob("worker-*") if p.suffix in (".out", ".err")]
        lines = [line for p in logs for line in p.read_text(errors="replace").splitlines() if FALLBACK_LINE in line]
        assert len(lines) == len(K), lines

        # The UI lists the trials with the GPU each ran on.
        browser = chromium()
        view = {
            "searchFilter": "tags.`sweep.role` = 'trial'",
            "selectedColumns": ["tags.`ray.gpu_ids`", "tags.`ray.cuda_visible_devices`", "metrics.`val/nmse`"],
            "orderByKey": "tags.`ray.gpu_ids`",
            "orderByAsc": True,
        }
        page = uri + shared_view(client, exp.experiment_id, "gpus", view)
        dom = render(browser, page, tmp_path / "chromium", "--dump-dom")
        assert dom.returncode == 0, dom.stderr[-2000:]
        assert "ray.gpu_ids" in dom.stdout and "ray.cuda_visible_devices" in dom.stdout
        missing = [r.info.run_name for r in trials if r.info.run_name not in dom.stdout]
        assert not missing, f"trial runs not in the UI page: {missing}"
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shot = ARTIFACTS / "mlflow_ui_gpu_ids.png"
        shot.unlink(missing_ok=True)
        png = render(browser, page, tmp_path / "chromium", f"--screenshot={shot}")
        assert png.returncode == 0 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png.stderr[-2000:]
        print(f"MLflow UI screenshot: {shot}")
