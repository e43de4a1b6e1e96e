"""bench/phase1_candidates.py, study A's candidates at equal wall time, at a few seconds a run."""

import csv
import re
import subprocess
import sys

from conftest import ROOT


def _bench(tmp_path, *args):
    return subprocess.run(
        [sys.executable, str(ROOT / "bench" / "phase1_candidates.py"), *args, "--out", str(tmp_path / "c.png")],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )


def test_each_candidate_runs_its_wall_time_and_gets_a_row_and_a_curve(tmp_path):
    out = _bench(
        tmp_path,
        "--minutes",
        "0.1",
        "--k",
        "1",
        "--candidate",
        "a:trainer.eval_every=20",
        "--candidate",
        "b:trainer.eval_every=20,trainer.batch_size=16",
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert re.search(r"K = 1: validation nMSE .* \(least squares [\d.]+, zero [\d.]+\)", out.stdout), out.stdout
    for name in ("a", "b"):
        assert re.search(rf"^  {name}\s+.*\s[\d.]+\s+\d+\s+[\d.]+$", out.stdout, re.M), out.stdout
    rows = list(csv.DictReader((tmp_path / "c.csv").open()))
    for name in ("a", "b"):
        mine = [r for r in rows if r["candidate"] == name]
        assert len(mine) >= 2 and float(mine[-1]["seconds"]) >= 6  # ran until its 6 s were spent
        assert [int(r["step"]) for r in mine] == sorted(int(r["step"]) for r in mine)
    assert (tmp_path / "c.png").stat().st_size > 10_000


def test_a_typo_in_a_candidate_is_one_line_before_anything_runs(tmp_path):
    out = _bench(tmp_path, "--candidate", "x:trainer.lrr=0.1")
    assert out.returncode != 0
    assert out.stderr.strip() == "candidate 'x': unknown key 'trainer.lrr'; did you mean 'trainer.lr'?"
    assert not (tmp_path / "c.csv").exists()
