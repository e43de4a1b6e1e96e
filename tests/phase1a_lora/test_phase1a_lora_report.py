"""The report's verdict: the best LoRA gain over the no-LoRA baseline in the seed's bands."""

import pandas as pd
import pytest

from trainables.phase1a_lora.report import band, config_name, findings


@pytest.mark.parametrize(
    "gain,word",
    [
        (-3.0, "no meaningful"),
        (1.99, "no meaningful"),
        (2.0, "marginal"),
        (4.9, "marginal"),
        (5.0, "significant"),
        (9.99, "significant"),
        (10.0, "strong"),
        (25.0, "strong"),
    ],
)
def test_the_seeds_bands(gain, word):
    assert band(gain)[0].startswith(word)


def test_config_names():
    assert config_name({"lora.enabled": "False"}) == "baseline (no LoRA)"
    params = {"lora.enabled": "True", "lora.r": "8", "lora.alpha": "16.0", "lora.layers": "32", "lora.of_layers": "32"}
    assert config_name(params) == "r=8 a=16 L=all"
    assert config_name(params | {"lora.layers": "12"}) == "r=8 a=16 L=12"


def test_findings_name_the_best_config_its_gain_and_collapses():
    row = dict(em=0.2, text_f1=0.9, collapsed=False, epochs=3)
    df = pd.DataFrame(
        [
            dict(config="r=8 a=16 L=12", lora=True, f1=0.31, **row),
            dict(config="baseline (no LoRA)", lora=False, f1=0.24, **row),
            dict(config="r=4 a=8 L=8", lora=True, f1=0.05, **(row | {"collapsed": True, "epochs": 1})),
        ]
    )
    out = findings(df)
    assert out["best_config"] == "r=8 a=16 L=12" and out["gain_points"] == pytest.approx(7.0)
    assert out["band"].startswith("significant")
    text = " ".join(out["lines"])
    assert "Collapse flag" in text and "r=4 a=8 L=8" in text and "ASHA stopped 1 of 3" in text


@pytest.mark.parametrize("smoke,text_f1", [(True, 0.9), (False, 0.0), (False, float("nan"))])
def test_a_smoke_run_or_a_base_model_that_cannot_do_the_task_draws_no_conclusion(smoke, text_f1):
    row = dict(em=0.2, text_f1=text_f1, collapsed=False, epochs=3)
    df = pd.DataFrame(
        [
            dict(config="r=8 a=16 L=12", lora=True, f1=0.31, **row),
            dict(config="baseline (no LoRA)", lora=False, f1=0.0, **row),
        ]
    )
    out = findings(df, smoke=smoke)
    first, text = out["lines"][0], " ".join(out["lines"])
    assert ("Smoke run" in first) if smoke else ("cannot do the task" in first)
    assert "no conclusion" in first and out["band"] is None
    assert not any(word in text for word in ("significant", "marginal", "strong", "Next step"))
    assert "+31.0 points" in text  # the numbers are still there
