"""A setting the chosen mode would ignore is an error naming the switch that uses it.

Every field that declares `used_when` in any study's config is tried: set to a non-default
value with its switch off it fails with one line naming the switch; with the switch on it
passes. Then the case a user met, through the command line: nothing starts, nothing is written.
"""

from __future__ import annotations

import pytest
from helpers import files_under, run_job

from tune_jobs.core.config import _conditions, iter_fields, to_flat, unused_settings
from tune_jobs.core.errors import ConfigError
from tune_jobs.core.study import load_study, shipped_studies


def _configs() -> list[type]:
    return [load_study(name).config for name in shipped_studies()]


def _other(tp: type, meta: dict, value):
    """A valid value of a field other than `value`."""
    if meta.get("choices"):
        return next(c for c in meta["choices"] if c != value)
    if tp is bool:
        return not value
    if tp is str:
        return "" if value else "somewhere/file.h5"
    if tp is int:
        return value + 1 if meta.get("le") is None or value + 1 <= meta["le"] else value - 1
    if tp is float:
        hi = meta.get("lt") if meta.get("lt") is not None else meta.get("le")
        return value / 2 if hi is not None and value * 1.5 >= hi else value * 1.5 + 0.1
    raise AssertionError(f"no other value for {tp}")


def _pairs():
    for cls in _configs():
        fields = {key: (tp, f) for key, tp, f in iter_fields(cls)}
        for key, (_, f) in fields.items():
            if f.metadata.get("used_when"):
                yield pytest.param(cls, fields, key, id=f"{cls.__module__.split('.')[1]}:{key}")


def test_every_study_declares_what_its_switches_use():
    keys = [p.values[2] for p in _pairs()]
    assert {"data.path", "model.path", "lora.r", "vq.codebook_size", "diagnostics.eps"} <= set(keys)
    assert {"loss.k_tokens", "diagnostics.overhead_budget"} <= set(keys)  # switched by two settings


def _on_off(fields, part):
    """(switch, a value that turns it on, one that turns it off) for one condition."""
    switch, op, text = part
    s_tp, s_f = fields[switch]
    on = float(text) + 1 if op == ">" else (text.lower() == "true" if s_tp is bool else s_tp(text) if text else "")
    off = 0 if op == ">" else _other(s_tp, s_f.metadata, on)
    return switch, on, off


@pytest.mark.parametrize(("cls", "fields", "key"), list(_pairs()))
def test_a_setting_whose_switch_is_off_is_refused_with_the_switch_named(cls, fields, key):
    joiner, parts = _conditions(fields[key][1].metadata["used_when"])
    states = [_on_off(fields, part) for part in parts]
    flat = to_flat(cls())
    tp, f = fields[key]
    flat[key] = _other(tp, f.metadata, flat[key])
    if joiner == "or":  # off only when every switch is off
        offs = [{s: off for s, _, off in states}]
    else:  # off when any one is off, the others on
        offs = [{s: off if i == j else on for j, (s, on, off) in enumerate(states)} for i in range(len(states))]
    for off in offs:
        flat.update(off)
        with pytest.raises(ConfigError) as err:
            unused_settings(cls, flat, [key])
        message = str(err.value)
        assert "\n" not in message and key in message and "would be ignored" in message
        assert all(f"{s}=" in message for s, _, _ in states)  # each switch, and where it stands
        unused_settings(cls, flat, [key], searched=[states[0][0]])  # some trials switch it on: fine
    ons = [{s: on for s, on, _ in states}]  # every switch on
    if joiner == "or":  # or any one of them alone
        ons += [{s: on if i == j else off for j, (s, on, off) in enumerate(states)} for i in range(len(states))]
    for on in ons:
        flat.update(on)
        unused_settings(cls, flat, [key])


def test_an_ignored_data_path_stops_the_lora_sweep_before_anything_starts(workdir):
    done = run_job(["phase1a_lora.py", "data.path=bad.json"], workdir, timeout=120)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert lines == [lines[-1]] and lines[0].startswith("error: data.path='bad.json' would be ignored")
    assert "data.source=squad" in lines[0]
    assert files_under(workdir) == []


def test_a_searched_setting_no_trial_uses_is_refused(workdir):
    exp = workdir / "curriculum.yaml"
    exp.write_text(
        "study: phase1\nmetric: val/nmse\nfixed: {trainer.curriculum_start_dims: 0}\n"
        "space:\n  trainer.curriculum_every: {grid: [100, 200]}\n"
    )
    bad = run_job(["phase1.py", "--experiment", str(exp), "--dry-run"], workdir, timeout=120)
    assert bad.returncode == 2
    assert bad.stderr.startswith("error: trainer.curriculum_every is searched, but it is used only when")
    exp.write_text(exp.read_text().replace("start_dims: 0", "start_dims: 2"))
    good = run_job(["phase1.py", "--experiment", str(exp), "--dry-run"], workdir, timeout=120)
    assert good.returncode == 0, good.stderr


def test_a_given_setting_whose_switch_no_searched_value_turns_on_is_refused(workdir):
    base = ["autoencoder.py", "--dry-run", "--experiment", "compare_latent_spaces"]
    bad = run_job([*base, "space.latent_space=[linear]", "vq.codebook_size=64"], workdir, timeout=120)
    assert bad.returncode == 2, bad.stdout[-2000:] + bad.stderr[-2000:]
    lines = bad.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: vq.codebook_size=64 would be ignored"), lines
    assert "model.latent_space=vq" in lines[0] and "space.latent_space=[...]" in lines[0]
    assert files_under(workdir) == []
    good = run_job([*base, "space.latent_space=[linear,vq]", "vq.codebook_size=64"], workdir, timeout=120)
    assert good.returncode == 0, good.stderr
