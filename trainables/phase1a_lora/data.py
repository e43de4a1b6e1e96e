"""Extractive QA examples: one reader for SQuAD v1.1 JSON, fed by a file or by the generator.

The synthetic generator writes the same SQuAD v1.1 layout a user's file has
(data -> paragraphs -> context, qas -> question, answers[text, answer_start]), so both go
through `parse_squad`: one path, one set of checks. Every synthetic answer is a span of its
context. The prompt is the original project's: `Context: {c}\\nQuestion: {q}\\n`.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PROMPT = "Context: {context}\nQuestion: {question}\n"
SYNTH_VERSION = 2  # bump when the generator changes: cached base models are keyed by it


class DataFileError(ValueError):
    """A SQuAD file that is missing or malformed; the message names the file, the place and the fix."""


@dataclass(frozen=True)
class QAExample:
    id: str
    context: str
    question: str
    answers: tuple[str, ...]  # gold answers; the first is the training target
    answer_start: int  # character offset of answers[0] in the context

    @property
    def prompt(self) -> str:
        return PROMPT.format(context=self.context, question=self.question)


# -- the SQuAD v1.1 reader -------------------------------------------------------------------
def parse_squad(data: Any, where: str = "SQuAD data") -> list[QAExample]:
    """Examples of a SQuAD v1.1 document (the parsed JSON); DataFileError on any bad entry."""

    def fail(place: str, problem: str) -> DataFileError:
        return DataFileError(f"{where}: {place}: {problem}; expected the SQuAD v1.1 layout (train-v1.1.json)")

    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise fail("top level", "no 'data' list")
    out: list[QAExample] = []
    for i, article in enumerate(data["data"]):
        paragraphs = article.get("paragraphs") if isinstance(article, dict) else None
        if not isinstance(paragraphs, list):
            raise fail(f"data[{i}]", "no 'paragraphs' list")
        for j, para in enumerate(paragraphs):
            place = f"data[{i}].paragraphs[{j}]"
            if not isinstance(para, dict) or not isinstance(para.get("context"), str):
                raise fail(place, "no 'context' text")
            if not isinstance(para.get("qas"), list):
                raise fail(place, "no 'qas' list")
            context = para["context"]
            for k, qa in enumerate(para["qas"]):
                qplace = f"{place}.qas[{k}]"
                if not isinstance(qa, dict) or not isinstance(qa.get("question"), str):
                    raise fail(qplace, "no 'question' text")
                answers = qa.get("answers")
                if not isinstance(answers, list) or not answers:
                    raise fail(qplace, "no 'answers' list (v2.0 unanswerable questions are not read)")
                texts = []
                for a in answers:
                    if not isinstance(a, dict) or not isinstance(a.get("text"), str) or not a["text"].strip():
                        raise fail(qplace, f"answer {a!r} has no 'text'")
                    texts.append(a["text"])
                start = answers[0].get("answer_start", context.find(texts[0]))
                if not isinstance(start, int) or context[start : start + len(texts[0])] != texts[0]:
                    start = context.find(texts[0])  # a few SQuAD offsets are off by a character
                out.append(
                    QAExample(
                        id=str(qa.get("id", f"{i}-{j}-{k}")),
                        context=context,
                        question=qa["question"],
                        answers=tuple(texts),
                        answer_start=start,
                    )
                )
    if not out:
        raise fail("data", "holds no questions")
    return out


def read_squad(path: Path) -> list[QAExample]:
    where = f"data.path={path}"
    if not path.is_file():
        raise DataFileError(f"{where}: no such file; point data.path at a SQuAD v1.1 JSON file (train-v1.1.json)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataFileError(f"{where}: not valid JSON ({exc}); expected the SQuAD v1.1 layout") from None
    return parse_squad(data, where)


HUB = "hub:"  # data.path=hub:rajpurkar/squad reads SQuAD v1.1 from the Hugging Face hub (the user's access)


def read_hub_squad(repo: str, split: str) -> list[QAExample]:
    """SQuAD v1.1 from a hub dataset repo (its parquet files of `split`), as the same layout."""
    import pandas as pd
    from huggingface_hub import hf_hub_download, list_repo_files

    files = sorted(
        f
        for f in list_repo_files(repo, repo_type="dataset")
        if f.endswith(".parquet") and split in f.rsplit("/", 1)[-1]
    ) or sorted(f for f in list_repo_files(repo, repo_type="dataset") if f.endswith(".parquet") and f"/{split}" in f)
    if not files:
        raise DataFileError(f"data.path={HUB}{repo}: no {split} parquet files in the dataset; use a local JSON file")
    frame = pd.concat([pd.read_parquet(hf_hub_download(repo, f, repo_type="dataset")) for f in files])
    paragraphs = [
        {
            "context": row.context,
            "qas": [
                {
                    "id": row.id,
                    "question": row.question,
                    "answers": [
                        {"text": str(t), "answer_start": int(s)}
                        for t, s in zip(row.answers["text"], row.answers["answer_start"], strict=True)
                    ],
                }
            ],
        }
        for row in frame.itertuples()
    ]
    return parse_squad({"data": [{"title": repo, "paragraphs": paragraphs}]}, f"data.path={HUB}{repo}")


# -- the synthetic generator -----------------------------------------------------------------
def _words(text: str) -> list[str]:
    return text.split()


FIRST = _words(
    "alice bob carol david emma frank grace henry irene jack karen liam mia noah olivia paul "
    "quinn rosa sam tina victor wendy xavier yara zoe arthur bella chloe daniel elena felix "
    "hugo ivy julia kevin laura marco nina oscar"
)
LAST = _words(
    "smith jones brown taylor wilson evans thomas johnson roberts walker wright robinson "
    "thompson white hughes edwards green hall wood harris martin jackson clarke lewis"
)
CITIES = _words(
    "paris london berlin madrid rome vienna prague lisbon dublin oslo stockholm helsinki warsaw "
    "athens cairo tokyo seoul beijing delhi sydney toronto chicago boston denver seattle lima "
    "bogota santiago nairobi lagos"
) + ["new york", "los angeles", "san francisco", "hong kong", "buenos aires", "cape town"]
COMPANIES = _words(
    "google apple amazon microsoft intel nvidia siemens nokia samsung sony toyota honda ikea "
    "spotify netflix oracle adobe cisco"
) + ["blue river labs", "north star energy", "acme tools", "red oak bank", "silver peak media"]
FOODS = _words("pizza pasta sushi curry tacos salad soup bread cheese chocolate apples rice noodles pancakes")
COLORS = _words("red blue green yellow purple orange black white pink brown gray teal")
ANIMALS = _words("dog cat parrot rabbit horse hamster turtle goldfish snake lizard")
JOBS = _words("teacher doctor nurse engineer pilot chef lawyer farmer painter writer baker dentist")
INSTRUMENTS = _words("piano guitar violin drums flute cello trumpet harp")
YEARS = [str(y) for y in range(1950, 2011, 2)]

DISTRACTOR_SHARE = 0.25  # contexts where a second person has a fact of the asked kind

# relation -> (value pool, statement templates, question templates)
RELATIONS: dict[str, tuple[list[str], tuple[str, ...], tuple[str, ...]]] = {
    "city": (
        CITIES,
        ("{p} lives in {v}.", "{p} moved to {v} last year.", "The home of {p} is in {v}."),
        ("Where does {p} live?", "In which city does {p} live?", "What city is home to {p}?"),
    ),
    "company": (
        COMPANIES,
        ("{p} works at {v}.", "{p} is employed by {v}.", "{p} has a job at {v}."),
        ("Where does {p} work?", "Which company employs {p}?", "Who is the employer of {p}?"),
    ),
    "year": (
        YEARS,
        ("{p} was born in {v}.", "The birth year of {p} is {v}."),
        ("When was {p} born?", "In what year was {p} born?"),
    ),
    "food": (
        FOODS,
        ("{p} loves {v}.", "The favorite food of {p} is {v}."),
        ("What food does {p} love?", "What is the favorite food of {p}?"),
    ),
    "color": (
        COLORS,
        ("The favorite color of {p} is {v}.", "{p} always wears {v}."),
        ("What is the favorite color of {p}?", "Which color does {p} like most?"),
    ),
    "animal": (
        ANIMALS,
        ("{p} owns a {v}.", "{p} has a pet {v}."),
        ("What pet does {p} have?", "What animal does {p} own?"),
    ),
    "job": (
        JOBS,
        ("{p} is a {v}.", "{p} works as a {v}."),
        ("What is the job of {p}?", "What does {p} do for a living?"),
    ),
    "instrument": (
        INSTRUMENTS,
        ("{p} plays the {v}.", "{p} is learning the {v}."),
        ("Which instrument does {p} play?", "What instrument is {p} learning?"),
    ),
}


def _paragraph(rng: random.Random, index: int) -> dict[str, Any]:
    """One context of 3-5 facts about 2-3 people and one question whose answer is a span of it.

    Each fact is of a different kind (a city, an employer, ...), except that a quarter of the
    contexts repeat one kind for another person, so some answers need the right person's fact
    and not just the right kind of word."""
    people = [f"{rng.choice(FIRST)} {rng.choice(LAST)}" for _ in range(rng.randint(2, 3))]
    while len(set(people)) < len(people):
        people = [f"{rng.choice(FIRST)} {rng.choice(LAST)}" for _ in range(len(people))]
    relations = rng.sample(sorted(RELATIONS), rng.randint(3, 4))
    owners = people + [rng.choice(people) for _ in range(len(relations) - len(people))]
    rng.shuffle(owners)
    facts = []
    for person, rel in zip(owners, relations, strict=False):
        pool, statements, _ = RELATIONS[rel]
        facts.append((person, rel, rng.choice(pool), rng.choice(statements)))
    if rng.random() < DISTRACTOR_SHARE:
        person, rel, value, _ = rng.choice(facts)
        other = rng.choice([p for p in people if p != person])
        pool, statements, _ = RELATIONS[rel]
        facts.append((other, rel, rng.choice([v for v in pool if v != value]), rng.choice(statements)))
    rng.shuffle(facts)
    person, rel, value, _ = rng.choice(facts)
    sentences = [s.format(p=p.title(), v=v.title() if r in ("city", "company") else v) for p, r, v, s in facts]
    context = " ".join(sentences)
    question = rng.choice(RELATIONS[rel][2]).format(p=person.title())
    answer = value.title() if rel in ("city", "company") else value
    # The answer's own sentence: the first sentence of this person with this relation.
    target = next(i for i, f in enumerate(facts) if f[0] == person and f[1] == rel)
    offset = sum(len(s) + 1 for s in sentences[:target])
    sentence = sentences[target]
    start = offset + sentence.index(answer, sentence.index(person.title()) + len(person))  # values follow names
    qa = {"id": f"synth-{index}", "question": question, "answers": [{"text": answer, "answer_start": start}]}
    return {"context": context, "qas": [qa]}


def synthetic_squad(n: int, seed: int) -> dict[str, Any]:
    """`n` synthetic questions as a SQuAD v1.1 document (same layout as train-v1.1.json)."""
    rng = random.Random(seed)
    paragraphs = [_paragraph(rng, i) for i in range(n)]
    return {"version": f"synthetic-{SYNTH_VERSION}", "data": [{"title": "synthetic", "paragraphs": paragraphs}]}


def synthetic_examples(n: int, seed: int) -> list[QAExample]:
    return parse_squad(synthetic_squad(n, seed), f"synthetic QA (seed {seed})")
