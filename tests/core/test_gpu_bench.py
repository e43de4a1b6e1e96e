"""bench/gpu_full_profile.py, the script a GPU machine runs, checked on CPU at tiny sizes."""

import re
import subprocess
import sys

from helpers import ROOT


def test_the_gpu_bench_runs_end_to_end_with_smoke(tmp_path):
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu_full_profile.py"), "--smoke", "--json", str(tmp_path / "f.json")],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    text = out.stdout
    for k in (1, 4, 10):
        assert re.search(rf"study A, profile=full, K={k}: 20 steps in [\d.]+ s = [\d.]+ steps/s", text), text
    assert len(re.findall(r"held-out \(64 prompts\): model [\d.]+ ± [\d.]+", text)) == 3
    assert re.search(r"denoising reference .* one epoch [\d.]+ s = \d+ samples/s on cpu", text), text
    assert (tmp_path / "f.json").stat().st_size > 100
