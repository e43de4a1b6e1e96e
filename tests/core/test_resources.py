"""Resources per trial: fractional GPUs and custom resources, from the YAML or an override."""

import pytest
import torch
from helpers import files_under, run_job

from tune_jobs.core.errors import ConfigError
from tune_jobs.core.plan import compose, plan
from tune_jobs.core.preflight import check_fits
from tune_jobs.core.space import load_experiment, ray_resources
from tune_jobs.core.study import load_study
from tune_jobs.core.tuner import trainable_for

GOOD = """study: phase1
metric: val/nmse
space:
  data.n_components: {grid: [1, 2]}
"""


def experiment(tmp_path, resources=""):
    path = tmp_path / "exp.yaml"
    path.write_text(GOOD + resources)
    return load_experiment(path)


def composed(tmp_path, resources="", overrides=()):
    return compose(load_study("phase1"), experiment(tmp_path, resources), overrides=list(overrides))


def asked(c):
    """What Tune will ask Ray for, per trial (the trainable's resource request)."""
    return trainable_for(c)._resources.required_resources


def test_defaults_are_one_cpu_no_gpu(tmp_path):
    c = composed(tmp_path)
    assert ray_resources(c.experiment.resources) == {"cpu": 1, "gpu": 0}
    assert asked(c) == {"CPU": 1.0}


@pytest.mark.parametrize(
    "resources,overrides",
    [
        ("resources: {cpu: 1, gpu: 0.25}\n", []),
        ("", ["resources.gpu=0.25"]),
        ("resources: {gpu: 1}\n", ["resources.gpu=0.25"]),  # the override wins
    ],
)
def test_a_quarter_gpu_reaches_the_trainable(tmp_path, resources, overrides):
    c = composed(tmp_path, resources, overrides)
    assert c.experiment.resources["gpu"] == 0.25
    assert asked(c) == {"CPU": 1.0, "GPU": 0.25}


def test_custom_resources_from_the_yaml_and_overrides(tmp_path):
    c = composed(tmp_path, "resources: {cpu: 1, custom: {worker_slot: 1}}\n")
    assert asked(c) == {"CPU": 1.0, "worker_slot": 1.0}
    c = composed(tmp_path, overrides=["resources.custom.worker_slot=1", "resources.custom.big_mem=0.5"])
    assert ray_resources(c.experiment.resources) == {"cpu": 1, "gpu": 0, "worker_slot": 1, "big_mem": 0.5}
    c = composed(tmp_path, "resources: {custom: {worker_slot: 1}}\n", ["resources.custom={}"])
    assert asked(c) == {"CPU": 1.0}


@pytest.mark.parametrize(
    "resources,message",
    [
        ("resources: {gpu: 1.5}\n", "resources.gpu: 1.5 is a fraction above 1; Ray shares a unit only below 1"),
        ("resources: {gpu: -1}\n", "resources.gpu: expected a number >= 0, got -1"),
        ("resources: {gpu: half}\n", "resources.gpu: expected a number >= 0, got 'half'"),
        ("resources: {cpu: 0}\n", "resources.cpu: expected a number > 0, got 0"),
        ("resources: {cpu: -1}\n", "resources.cpu: expected a number > 0, got -1"),
        ("resources: {gpus: 1}\n", "resources.gpus: unknown resource; did you mean resources.gpu?"),
        ("resources: {custom: [worker_slot]}\n", "resources.custom: expected a mapping of Ray custom resources"),
        ("resources: {custom: {GPU: 1}}\n", "resources.custom.GPU: not a custom resource name"),
        ("resources: {custom: {worker_slot: 0}}\n", "resources.custom.worker_slot: expected a number > 0"),
    ],
)
def test_bad_resources_in_the_yaml_name_the_file_and_the_key(tmp_path, resources, message):
    with pytest.raises(ConfigError) as err:
        experiment(tmp_path, resources)
    assert str(err.value).startswith(str(tmp_path / "exp.yaml"))
    assert message in str(err.value)


@pytest.mark.parametrize(
    "override,message",
    [
        ("resources.gpu=2.5", "resources.gpu: 2.5 is a fraction above 1"),
        ("resources.cpu=0", "resources.cpu: expected a number > 0"),
        ("resources.custom.memory=1", "resources.custom.memory: not a custom resource name"),
        ("resources.tpu=1", "resources.tpu: unknown resource"),
    ],
)
def test_bad_resource_overrides(tmp_path, override, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        plan(composed(tmp_path, overrides=[override]))


def test_whole_gpus_above_one_are_fine(tmp_path):
    assert asked(composed(tmp_path, overrides=["resources.gpu=2", "resources.cpu=4"])) == {"CPU": 4.0, "GPU": 2.0}


def test_a_local_ray_without_the_resource_fails_before_waiting_forever():
    check_fits({"cpu": 1, "gpu": 0.25}, {"CPU": 2.0, "GPU": 1.0})
    with pytest.raises(
        ConfigError, match=r"resources\.gpu=0\.25 per trial, but this machine's Ray has 0; set resources\.gpu=0"
    ):
        check_fits({"cpu": 1, "gpu": 0.25}, {"CPU": 2.0})
    with pytest.raises(ConfigError, match=r"resources\.custom\.worker_slot=1 per trial, but this machine's Ray has 0"):
        check_fits({"cpu": 1, "gpu": 0, "worker_slot": 1}, {"CPU": 2.0})


def test_dry_run_shows_the_resources(workdir):
    out = run_job(
        ["phase1.py", "--quick", "--dry-run", "resources.gpu=0.25", "resources.custom.worker_slot=1"], workdir
    )
    assert out.returncode == 0, out.stderr
    assert "resources per trial: cpu=1, gpu=0.25, worker_slot=1;" in out.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_gpus_asked_of_a_machine_without_one_is_one_line_exit_2_and_writes_nothing(workdir):
    out = run_job(["phase1.py", "--quick", "resources.gpu=0.25"], workdir, timeout=300)
    assert out.returncode == 2, out.stdout[-2000:] + out.stderr[-2000:]
    error = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert error == [
        "error: resources.gpu=0.25 per trial, but this machine's Ray has 0; "
        "set resources.gpu=0 to train on CPU, or join a GPU cluster with --address"
    ]
    assert files_under(workdir) == []
