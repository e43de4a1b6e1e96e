"""The autoencoder entry script as a user types it: the seed's grid order, and bad inputs."""

import re

import h5py
import numpy as np
import pytest
from helpers import files_under, run_job

from trainables.autoencoder.data import synthesize

# The seed's run matrix: run N (0-based) is trial N + 1; beta outer, latent space inner.
SEED_ORDER = [(b, x) for b in ("0", "1", "10") for x in ("none", "linear", "vq")]


def test_dry_run_lists_the_9_trials_in_the_seeds_order(workdir):
    out = run_job(["autoencoder.py", "--experiment", "compare_globals_heads", "--dry-run"], workdir, timeout=120)
    assert out.returncode == 0, out.stderr
    rows = re.findall(r"^\s+(\d+)\s+globals_beta=(\w+),latent_space=(\w+)\s", out.stdout, re.M)
    assert [int(r[0]) for r in rows] == list(range(1, 10))
    assert [(r[1], r[2]) for r in rows] == SEED_ORDER
    assert "9 trials" in out.stdout and "epochs" in out.stdout
    assert files_under(workdir) == [], "a dry run writes nothing"


def test_the_default_experiment_and_the_three_run_comparison(workdir):
    out = run_job(["autoencoder.py", "--dry-run"], workdir, timeout=120)
    assert out.returncode == 0 and "compare_globals_heads" in out.stdout and "9 trials" in out.stdout
    out = run_job(
        ["autoencoder.py", "--experiment", "compare_latent_spaces", "--dry-run", "trainer.epochs=50"], workdir
    )
    assert out.returncode == 0 and "3 trials" in out.stdout
    assert re.findall(r"latent_space=(\w+)", out.stdout) == ["none", "linear", "vq"]
    assert " 50 " in out.stdout  # the seed's `trainer.epochs=50` override


def _files(tmp_path):
    x, y = synthesize(50, 18, np.random.default_rng(0))
    with h5py.File(tmp_path / "no_val.h5", "w") as f:
        f["X_train"], f["Y_train"] = x, y
    with h5py.File(tmp_path / "narrow.h5", "w") as f:
        f["X_train"], f["X_val"] = x[:, :80], x[:, :80]


BAD = [
    (["data.path={tmp}/nosuch.h5"], "data.path={tmp}/nosuch.h5: no such file"),
    (["data.path={tmp}/no_val.h5"], "no dataset 'X_val' (keys in the file: X_train, Y_train)"),
    (["data.path={tmp}/narrow.h5"], "X_train has shape (50, 80); expected (N, 92)"),
    (["space.latent_space=[none,vae]"], "model.latent_space: 'vae' is not one of ['none', 'linear', 'vq']"),
    (["space.globals_beta=[-1]"], "model.globals_beta: must be >= 0, got -1.0"),
    (["model.latent_spcae=vq"], "did you mean 'model.latent_space'?"),
]


@pytest.mark.parametrize(
    "args,message", BAD, ids=["missing_file", "missing_key", "wrong_shape", "latent", "beta", "typo"]
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(workdir, tmp_path, args, message):
    _files(tmp_path)
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    out = run_job(["autoencoder.py", "--experiment", "compare_globals_heads", *args], workdir, timeout=120)
    assert out.returncode == 2, (out.stdout, out.stderr)
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr
    assert message.replace("{tmp}", str(tmp_path)) in lines[0], lines[0]
    assert files_under(workdir) == [], "nothing is written on bad input"
