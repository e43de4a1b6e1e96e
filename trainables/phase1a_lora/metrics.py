"""SQuAD v1.1 F1 and EM exactly as the official evaluation script (evaluate-v1.1.py) computes
them, plus the collapse diagnostics of the seed: prediction diversity and repetition rate.

Official normalisation: lowercase, drop punctuation, drop the articles a/an/the, collapse
whitespace. F1 counts overlapping tokens as multisets; both take the max over gold answers.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence

_PUNCT = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(s: str) -> str:
    """The official script's normalize_answer, step for step (same order of operations)."""
    s = s.lower()
    s = "".join(ch for ch in s if ch not in _PUNCT)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def f1_score(prediction: str, ground_truth: str) -> float:
    pred, gold = normalize_answer(prediction).split(), normalize_answer(ground_truth).split()
    common = Counter(pred) & Counter(gold)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(gold)
    return 2 * precision * recall / (precision + recall)


def exact_match_score(prediction: str, ground_truth: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(ground_truth))


def best_over_answers(metric, prediction: str, ground_truths: Sequence[str]) -> float:
    return max(metric(prediction, gt) for gt in ground_truths)


def squad_scores(predictions: Sequence[str], answers: Sequence[Sequence[str]]) -> dict[str, float]:
    """Mean F1 and EM over questions, as fractions in [0, 1] (the official script prints x100)."""
    n = max(1, len(predictions))
    f1 = sum(best_over_answers(f1_score, p, a) for p, a in zip(predictions, answers, strict=True))
    em = sum(best_over_answers(exact_match_score, p, a) for p, a in zip(predictions, answers, strict=True))
    return {"f1": f1 / n, "em": em / n}


# -- collapse diagnostics (the seed's "the the the") --------------------------------------
def diversity(predictions: Sequence[str]) -> float:
    """Distinct normalised predictions / predictions: ~1 when answers follow the questions,
    near 0 when the model says the same thing to everything."""
    if not predictions:
        return 0.0
    return len({normalize_answer(p) for p in predictions}) / len(predictions)


def repetition_rate(predictions: Sequence[str]) -> float:
    """Share of generated words that repeat the word before them ("the the the" -> 2/3)."""
    repeats = total = 0
    for p in predictions:
        words = p.lower().split()
        total += max(0, len(words) - 1)
        repeats += sum(a == b for a, b in zip(words, words[1:]))
    return repeats / total if total else 0.0


def collapsed(predictions: Sequence[str], *, min_diversity: float = 0.1, max_repetition: float = 0.5) -> bool:
    """The collapse flag: nearly one answer for every question, or mostly repeated words."""
    return bool(predictions) and (
        diversity(predictions) < min_diversity or repetition_rate(predictions) > max_repetition
    )
