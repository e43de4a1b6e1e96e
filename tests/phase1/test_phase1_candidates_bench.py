"""bench/phase1_candidates.py, study A's candidates at equal wall time, at a few seconds a run."""

import csv
import os
import re
import signal
import subprocess
import sys
import time

from helpers import ROOT, processes_in


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
    assert out.returncode == 2
    assert out.stderr.strip() == "error: candidate 'x': unknown key 'trainer.lrr'; did you mean 'trainer.lr'?"
    assert not (tmp_path / "c.csv").exists()


def test_impossible_settings_are_one_line_before_anything_runs(tmp_path):
    cases = {
        ("--minutes", "0"): "error: --minutes 0: each run needs a positive wall time, e.g. --minutes 4",
        ("--parallel", "0"): "error: --parallel 0: at least one run at a time, e.g. --parallel 2",
        ("--k", "0"): "error: candidate 'default' at K = 0: data.n_components: must be >= 1, got 0",
    }
    for args, line in cases.items():
        out = _bench(tmp_path, *args)
        assert out.returncode == 2 and out.stderr.strip() == line, out.stderr
    blocked = tmp_path / "blocked"
    blocked.write_text("a file, not a folder")
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "phase1_candidates.py"), "--out", str(blocked / "c.png")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2 and out.stderr.strip().startswith(
        f"error: --out {blocked / 'c.png'}: cannot write there"
    )
    assert not list(tmp_path.glob("*.csv"))


def test_ctrl_c_stops_every_run_with_one_line(tmp_path):
    bench = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "bench" / "phase1_candidates.py"),
            "--minutes",
            "1",
            "--k",
            "1",
            "--candidate",
            "a:seed=0",
            "--candidate",
            "b:seed=1",
            "--out",
            str(tmp_path / "c.png"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=tmp_path,
        start_new_session=True,
    )
    log = tmp_path / "c.jsonl"
    deadline = time.monotonic() + 120
    while not (log.exists() and log.stat().st_size) and time.monotonic() < deadline:
        time.sleep(0.2)  # both runs started and reported once
    os.killpg(bench.pid, signal.SIGINT)  # Ctrl-C in the terminal: the whole group
    out, _ = bench.communicate(timeout=60)
    assert bench.returncode == 130, out
    assert "Traceback" not in out and out.strip().endswith(f"interrupted; the evaluations so far are in {log}")
    assert processes_in(tmp_path) == []
