"""SQuAD v1.1 F1/EM as the official evaluate-v1.1.py computes them, and the collapse diagnostics."""

import pytest

from trainables.phase1a_lora.metrics import (
    collapsed,
    diversity,
    exact_match_score,
    f1_score,
    normalize_answer,
    repetition_rate,
    squad_scores,
)


@pytest.mark.parametrize(
    "text,normalised",
    [
        ("The Eiffel Tower", "eiffel tower"),  # articles go
        ("a  cat,  an apple!", "cat apple"),  # punctuation and whitespace
        ("Theatre", "theatre"),  # an article inside a word stays
        ("U.S.A.", "usa"),  # punctuation is dropped, not replaced by spaces
        ("rock-and-roll", "rockandroll"),
        ("  \tNew\nYork  ", "new york"),
        ("the", ""),
    ],
)
def test_normalisation_is_the_official_one(text, normalised):
    assert normalize_answer(text) == normalised


def test_exact_match_ignores_case_articles_and_punctuation():
    assert exact_match_score("the Paris.", "Paris") == 1.0
    assert exact_match_score("Paris, France", "Paris") == 0.0


def test_f1_counts_overlapping_tokens_as_multisets():
    # pred: [paris paris france], gold: [paris]: overlap 1, precision 1/3, recall 1 -> F1 0.5
    assert f1_score("Paris Paris France", "Paris") == pytest.approx(0.5)
    # repeated gold tokens count only as often as they appear in both
    assert f1_score("the the the", "the cat") == 0.0  # articles removed: empty prediction
    assert f1_score("cat cat cat", "cat") == pytest.approx(2 * (1 / 3) * 1 / (1 / 3 + 1))
    assert f1_score("big red dog", "the red dog") == pytest.approx(2 * (2 / 3) * 1 / (2 / 3 + 1))
    assert f1_score("", "cat") == 0.0


def test_the_max_over_several_gold_answers_is_taken():
    scores = squad_scores(
        ["Denver Broncos", "the 1990s"], [["Broncos", "Denver Broncos"], ["1990", "the 1990s", "90s"]]
    )
    assert scores == {"f1": 1.0, "em": 1.0}
    scores = squad_scores(["Carolina"], [["Carolina Panthers", "Panthers"]])
    assert scores["em"] == 0.0 and scores["f1"] == pytest.approx(2 * 1 * 0.5 / 1.5)


def test_collapse_diagnostics_catch_the_the_the():
    healthy = ["Paris", "Google", "1990", "cello"]
    assert diversity(healthy) == 1.0 and repetition_rate(healthy) == 0.0 and not collapsed(healthy)
    stuck = ["the the the"] * 20
    assert repetition_rate(stuck) == 1.0 and diversity(stuck) == pytest.approx(1 / 20) and collapsed(stuck)
    same = ["paris"] * 30
    assert repetition_rate(same) == 0.0 and collapsed(same)  # one answer to every question
