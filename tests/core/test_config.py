"""Typed config building: coercion, bounds, unknown keys, cross-field checks."""

import pytest

from trainables.phase1 import Config
from tune_jobs.core.config import build_config, coerce, describe_fields, parse_value, to_flat, to_nested
from tune_jobs.core.errors import ConfigError


def test_defaults_build_and_layers_apply_in_order():
    cfg = build_config(Config, {"trainer.steps": 10}, {"trainer.steps": "20", "trainer.lr": "1e-3"})
    assert cfg.trainer.steps == 20 and cfg.trainer.lr == 0.001
    assert cfg.data.n_dims == 5


@pytest.mark.parametrize(
    "layer,message",
    [
        ({"trainer.stpes": 3}, "unknown key 'trainer.stpes'; did you mean 'trainer.steps'?"),
        ({"trainer.steps": "abc"}, "trainer.steps: expected an integer, got 'abc'"),
        ({"trainer.steps": 2.5}, "trainer.steps: expected an integer, got 2.5"),
        ({"trainer.lr": "fast"}, "trainer.lr: expected a number, got 'fast'"),
        ({"trainer.lr": "nan"}, "trainer.lr: expected a finite number"),
        ({"data.n_components": 0}, "data.n_components: must be >= 1, got 0"),
        ({"data.scale": -0.1}, "data.scale: must be > 0, got -0.1"),
        ({"trainer.loss_positions": "last"}, "trainer.loss_positions: 'last' is not one of ['all', 'target', 'query']"),
        ({"model.n_head": 3}, "model.n_embd=64 is not divisible by model.n_head=3"),
        ({"trainer.device": 5}, "trainer.device: expected text, got 5"),
        ({"trainer.steps": True}, "trainer.steps: expected an integer, got True"),
    ],
)
def test_bad_values_name_the_key_the_value_and_the_fix(layer, message):
    with pytest.raises(ConfigError) as err:
        build_config(Config, layer)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_a_leaf_name_alone_suggests_its_full_key():
    with pytest.raises(ConfigError, match="did you mean 'trainer.steps'"):
        build_config(Config, {"steps": 3})


def test_values_from_the_command_line_are_read_as_yaml():
    assert parse_value("[1, 2]") == [1, 2]
    assert parse_value("true") is True
    assert parse_value("abc") == "abc"
    assert parse_value("{a: 1") == "{a: 1"  # not YAML: kept as text, rejected later by type
    assert coerce("x", bool, "no") is False


def test_flat_and_nested_round_trip():
    flat = to_flat(Config())
    assert flat["model.n_embd"] == 64  # the laptop size, as in every study (full: 256)
    assert build_config(Config, flat) == Config()
    assert to_nested({"a.b": 1, "a.c": 2, "d": 3}) == {"a": {"b": 1, "c": 2}, "d": 3}


def test_help_lists_every_key_with_its_default():
    text = describe_fields(Config)
    for key in to_flat(Config()):
        assert f"  {key} (" in text
