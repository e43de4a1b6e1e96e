"""The batch-size profiler: its measurements, its pick and its markdown report."""

import json

from helpers import files_under, run_job

from trainables.denoising import Config
from trainables.denoising.profiler import BatchProfile, markdown, profile, recommend
from tune_jobs.core.config import build_config

TINY = {
    "data.d": 64,
    "model.hidden_size": 32,
    "data.n_train": 2048,
    "data.val_samples": 128,
    "trainer.device": "cpu",
}


def test_profiles_each_batch_size_and_writes_a_markdown_table_with_the_pick():
    cfg = build_config(Config, TINY)
    rows = profile(cfg, [64, 256], epochs=2, isolate=False)
    assert [r.batch_size for r in rows] == [64, 256]
    assert [r.steps_per_epoch for r in rows] == [32, 8]
    for r in rows:
        assert not r.error and r.epoch_s > 0 and r.samples_per_s > 0 and r.peak_memory_mib >= 0
        assert r.val_loss < 32.0
    text = markdown(rows, cfg, epochs=2, threads=1, title="tiny")
    lines = text.splitlines()
    assert lines[0] == "# Batch-size profile: tiny"
    table = [line for line in lines if line.startswith("| ") and line[2].isdigit()]
    assert len(table) == 2 and sum("**recommended**" in line for line in table) == 1
    assert "time/epoch (s)" in text and "samples/s" in text and "CPU peak RSS growth" in text
    pick, _ = recommend(rows)
    assert f"**Recommended batch size: {pick.batch_size}**" in text


def test_the_pick_is_the_smallest_size_within_ten_percent_of_the_best_throughput():
    rows = [
        BatchProfile(128, 80, epoch_s=2.0, samples_per_s=5_000),
        BatchProfile(256, 40, epoch_s=1.1, samples_per_s=9_300),
        BatchProfile(512, 20, epoch_s=1.0, samples_per_s=10_000),
        BatchProfile(1024, 10, error="CUDA out of memory"),
    ]
    pick, reason = recommend(rows)
    assert pick.batch_size == 256 and "within 10%" in reason and "2.0x the optimizer steps" in reason
    assert recommend(rows[2:])[0].batch_size == 512
    assert recommend(rows[3:])[0] is None


def test_the_command_writes_the_report_and_bad_input_is_one_line(workdir):
    out = run_job(
        [
            "denoising_profiler.py",
            "--batch-sizes",
            "128",
            "--epochs",
            "2",
            "--samples",
            "1024",
            "data.d=64",
            "model.hidden_size=32",
            "--out",
            "prof",
        ],
        workdir,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads((workdir / "prof" / "batch_size_profile.json").read_text())
    assert [r["batch_size"] for r in report["rows"]] == [128] and report["recommended"] == 128
    assert "Recommended batch size" in (workdir / "prof" / "batch_size_profile.md").read_text()

    bad = run_job(["denoising_profiler.py", "--out", "prof2", "model.hidden_size=0"], workdir, timeout=120)
    assert bad.returncode == 2 and bad.stderr.strip() == "error: model.hidden_size: must be >= 1, got 0"
    assert not (workdir / "prof2").exists()
    assert all("prof2" not in str(p) for p in files_under(workdir))
