"""The phase1a_lora entry script as a user types it: the seed's 11 configs, its SAMPLES/EPOCHS
smoke sizes, and bad input (a missing model, a malformed SQuAD file, r = 0, layers beyond the
depth) as one line, exit 2, nothing written."""

import re
import subprocess
import sys

import pytest
from helpers import ROOT, files_under, job_env, run_job

SEED_GRID = [
    ("4", "8", "8"),
    ("4", "16", "8"),
    ("8", "8", "12"),
    ("8", "16", "12"),
    ("8", "32", "12"),
    ("16", "16", "16"),
    ("16", "32", "16"),
    ("8", "16", "32"),
    ("16", "32", "32"),
    ("32", "32", "16"),
]


def test_dry_run_lists_the_baseline_and_the_seeds_ten_lora_settings(workdir):
    out = run_job(["phase1a_lora.py", "--dry-run"], workdir, timeout=120)
    assert out.returncode == 0, out.stderr
    assert (
        "11 trials" in out.stdout
        and "scheduler kind=asha" in out.stdout
        and "metric val/f1 (max, goal optimize)" in out.stdout
    )
    assert re.search(r"^\s+1\s+enabled=False\s+tiny\s+off \(baseline\)", out.stdout, re.M)
    assert re.findall(r"^\s+\d+\s+r=(\d+),alpha=(\d+),layers=(\d+)\s", out.stdout, re.M) == SEED_GRID
    assert re.search(r"0\.01\s+0\.0\s+0\.0\s+5000\s+3\s", out.stdout)  # ce1 0.01, k_ce 0, kd 0, 5000 x 3
    assert files_under(workdir) == [], "a dry run writes nothing"


def test_the_seeds_smoke_sizes_as_environment_variables_or_overrides(workdir):
    env = job_env() | {"SAMPLES": "300", "EPOCHS": "1"}
    out = subprocess.run(
        [sys.executable, str(ROOT / "tune_jobs" / "phase1a_lora.py"), "--dry-run"],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "overrides: data.samples=300 trainer.epochs=1" in out.stdout
    assert len(re.findall(r"\s300\s+1\s", out.stdout)) == 11
    same = run_job(["phase1a_lora.py", "--dry-run", "data.samples=300", "trainer.epochs=1"], workdir, timeout=120)
    assert same.stdout.splitlines()[4:] == out.stdout.splitlines()[4:]


def _files(tmp_path):
    (tmp_path / "broken.json").write_text('{"data": [')
    for name, text in (("listed", "[]"), ("torn", '{"num_hidden_layers": '), ("narrow", '{"hidden_size": 64}')):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text(text)


BAD = [
    (["profile=full", "model.path=/no/such/llama"], "model.path=/no/such/llama: no such folder"),
    (["data.source=squad", "data.path={tmp}/broken.json"], "data.path={tmp}/broken.json: not valid JSON"),
    (["space.lora=[{r: 0, alpha: 8, layers: 8}]"], "lora.r: must be >= 1, got 0"),
    (["space.lora=[{r: 4, alpha: 8, layers: 40}]"], "lora.layers=40 is beyond the 32 layers it is counted on"),
    (["lora.of_layers=0", "space.lora=[{r: 4, alpha: 8, layers: 12}]"], "is beyond the tiny Llama's"),
    (["profile=full", "model.path={tmp}/listed"], "model.path={tmp}/listed: {tmp}/listed/config.json holds a list"),
    (["profile=full", "model.path={tmp}/torn"], "model.path={tmp}/torn: {tmp}/torn/config.json is not JSON"),
    (["compression.d_z=65"], "compression.d_z=65 is above the tiny Llama's width (model.tiny.hidden_size=64)"),
    (
        ["profile=full", "model.path={tmp}/narrow"],
        "compression.d_z=512 is above the width of {tmp}/narrow (hidden_size=64)",
    ),
]


@pytest.mark.parametrize(
    "args,message",
    BAD,
    ids=["model_path", "broken_squad", "r0", "layers", "depth", "config_list", "config_torn", "d_z_tiny", "d_z_model"],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(workdir, tmp_path, args, message):
    _files(tmp_path)
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    out = run_job(["phase1a_lora.py", *args], workdir, timeout=120)
    assert out.returncode == 2, (out.stdout, out.stderr)
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr
    assert message.replace("{tmp}", str(tmp_path)) in lines[0], lines[0]
    assert files_under(workdir) == [], "nothing is written on bad input"


def test_literal_layer_counts_are_checked_per_configuration_not_on_the_shared_defaults(workdir):
    # With lora.of_layers=0 the counts are literal; the default lora.layers (32) is never run
    # here, since every configuration sets its own, so only the configurations are checked.
    ok = run_job(
        ["phase1a_lora.py", "--dry-run", "space.lora=[{r: 4, alpha: 8, layers: 3}]", "lora.of_layers=0"], workdir
    )
    assert ok.returncode == 0, ok.stderr
    assert "1 trials" in ok.stdout and "layers=3/model" in ok.stdout
    bad = run_job(
        ["phase1a_lora.py", "--dry-run", "space.lora=[{r: 4, alpha: 8, layers: 9}]", "lora.of_layers=0"], workdir
    )
    assert bad.returncode == 2
    assert (
        bad.stderr.strip()
        == "error: space (r=4,alpha=8,layers=9): lora.layers=9 is beyond the tiny Llama's 4 layers; use 1..4"
    )
    assert files_under(workdir) == []
