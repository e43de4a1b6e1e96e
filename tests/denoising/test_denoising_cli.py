"""The denoising entry script as a user types it: dry runs, and bad input is one line + exit 2."""

import pytest
from helpers import files_under, run_job


def test_dry_run_of_the_default_search_and_the_reference(workdir):
    out = run_job(["denoising.py", "--dry-run"], workdir, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "search optuna, scheduler kind=asha" in out.stdout and "metric blob/score (max, goal optimize)" in out.stdout
    for key in ("encoder_init_scale", "decoder_init_scale", "decoder_reg", "lambda_on", "trainer.lr", "noise_variance"):
        assert key in out.stdout
    out = run_job(
        ["denoising.py", "--dry-run", "--experiment", "reference_3blob", "profile=full"], workdir, timeout=120
    )
    assert out.returncode == 0 and "2 trials" in out.stdout
    assert "1024  512  0.005       16.0  0.02      20" in out.stdout
    assert files_under(workdir) == []


def test_what_the_yaml_says_is_what_runs_and_the_dry_run_says_where_each_value_came_from(workdir):
    full = run_job(["denoising.py", "--dry-run", "--experiment", "reference_3blob", "profile=full"], workdir)
    local = run_job(["denoising.py", "--dry-run", "--experiment", "reference_3blob", "trainer.lr=0.01"], workdir)
    quick = run_job(["denoising.py", "--dry-run", "--experiment", "reference_3blob", "--quick"], workdir)
    assert full.returncode == local.returncode == quick.returncode == 0, full.stderr + local.stderr + quick.stderr

    def source(out, key):
        (line,) = [line for line in out.stdout.splitlines() if line.strip().startswith(f"{key} = ")]
        value, where = line.split("   ", 1)[0].split(" = ")[1], line.rsplit("   ", 1)[1].strip()
        return value, where

    assert source(full, "data.d") == ("1024", "experiment")  # the YAML's fixed: over the study's full profile
    assert source(full, "trainer.batch_size") == ("1024", "profile full")  # the study's full profile
    # the YAML's profiles: local:
    assert source(local, "data.d") == ("512", "experiment, profile local (= the default)")
    assert source(local, "trainer.lr") == ("0.01", "override")
    assert not [line for line in local.stdout.splitlines() if "trainer.batch_size" in line]  # the default: not listed
    assert source(quick, "data.d") == ("256", "quick")  # --quick shrinks what the YAML gives


REF = ["--experiment", "reference_3blob"]
BAD = [
    ([*REF, "data.noise_variance=-0.1"], "data.noise_variance: must be >= 0, got -0.1"),
    (["model.hidden_size=0"], "model.hidden_size: must be >= 1, got 0"),
    (["trainer.optimizer=sgd"], "trainer.optimizer: 'sgd' is not one of ['adam']"),
    (["loss.lamda_on=3"], "unknown key 'loss.lamda_on'; did you mean 'loss.lambda_on'?"),
    (["loss.lambda_on=4"], "loss.lambda_on is searched by denoising_search.yaml; set its values with space.lambda_on"),
    (["space.noise_variance={loguniform: [-1, 1]}"], "loguniform needs low > 0"),
]


@pytest.mark.parametrize("args,message", BAD, ids=[a[0][-1].split("=")[0] for a in BAD])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(workdir, args, message):
    out = run_job(["denoising.py", *args], workdir, timeout=120)
    assert out.returncode == 2, (out.stdout, out.stderr)
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], out.stderr
    assert files_under(workdir) == [], "nothing is written on bad input"


def test_monitor_without_a_store_is_one_line(workdir):
    out = run_job(["denoising_monitor.py", "--once"], workdir, timeout=120)
    assert out.returncode == 2 and out.stderr.strip().startswith("error: no MLflow store at sqlite:///")
    assert files_under(workdir) == []
