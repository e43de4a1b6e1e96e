"""The report's verdict: the best LoRA gain over the no-LoRA baseline in the seed's bands, read
over the sweep's seeds where it has them."""

import re

import pandas as pd
import pytest

from trainables.phase1a_lora.report import band, config_name, findings, over_seeds, seeded


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


def seeded_rows(config: str, lora: bool, f1s: list[float]) -> list[dict]:
    row = dict(em=0.2, text_f1=0.9, collapsed=False, epochs=3, status="FINISHED", run="r")
    return [dict(config=config, lora=lora, f1=f1, seed=str(s), **row) for s, f1 in enumerate(f1s)]


@pytest.mark.parametrize(
    ("lora_f1s", "verdict"),
    [
        ([0.31, 0.32, 0.30], r"the gain is beyond the seeds' noise \(Welch's t-test, p = "),
        ([0.45, 0.10, 0.30], r"these seeds cannot tell the gain from noise \(Welch's t-test, p = "),
    ],
)
def test_a_sweep_with_seeds_is_read_over_them_and_its_gain_tested_against_their_noise(lora_f1s, verdict):
    df = pd.DataFrame(
        seeded_rows("baseline (no LoRA)", False, [0.24, 0.25, 0.23]) + seeded_rows("r=8 a=16 L=12", True, lora_f1s)
    )
    assert seeded(df)
    per = over_seeds(df)
    assert list(per["config"]) == ["r=8 a=16 L=12", "baseline (no LoRA)"] and list(per["seeds"]) == [3, 3]
    assert per["f1"][0] == pytest.approx(sum(lora_f1s) / 3) and per["f1_std"][1] == pytest.approx(0.01)
    out = findings(per)
    assert out["gain_points"] == pytest.approx(100 * (sum(lora_f1s) / 3 - 0.24))
    (line,) = [x for x in out["lines"] if x.startswith("F1 over seeds")]
    assert re.search(verdict, line), line
    assert not seeded(pd.DataFrame(seeded_rows("baseline (no LoRA)", False, [0.24])))
