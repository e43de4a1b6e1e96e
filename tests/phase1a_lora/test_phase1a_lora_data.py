"""One data path: synthetic QA is written in the SQuAD v1.1 layout and read by the same reader."""

import json

import pytest

from trainables.phase1a_lora.data import DataFileError, parse_squad, read_squad, synthetic_examples, synthetic_squad


def test_synthetic_answers_are_spans_of_their_contexts_and_vary():
    examples = synthetic_examples(500, seed=3)
    for e in examples:
        assert e.context[e.answer_start : e.answer_start + len(e.answers[0])] == e.answers[0]
        assert e.prompt == f"Context: {e.context}\nQuestion: {e.question}\n"
    assert len({e.question.split()[0] for e in examples}) >= 4  # varied question templates
    assert len({e.answers[0] for e in examples}) > 100  # varied entities
    assert any(len(e.answers[0].split()) > 1 for e in examples)  # multi-word spans too
    assert synthetic_examples(50, seed=3) == examples[:50]  # seeded


def test_a_squad_file_and_the_generator_go_through_one_reader(tmp_path):
    path = tmp_path / "train-v1.1.json"
    path.write_text(json.dumps(synthetic_squad(40, seed=1)))
    assert read_squad(path) == synthetic_examples(40, seed=1)


def test_official_layout_with_several_gold_answers(tmp_path):
    doc = {
        "version": "1.1",
        "data": [
            {
                "title": "Super_Bowl_50",
                "paragraphs": [
                    {
                        "context": "The Denver Broncos defeated the Carolina Panthers.",
                        "qas": [
                            {
                                "id": "56be4db0acb8001400a502ec",
                                "question": "Which team won?",
                                "answers": [
                                    {"text": "Denver Broncos", "answer_start": 4},
                                    {"text": "Broncos", "answer_start": 11},
                                ],
                            }
                        ],
                    }
                ],
            }
        ],
    }
    (e,) = parse_squad(doc)
    assert e.answers == ("Denver Broncos", "Broncos") and e.answer_start == 4 and e.id == "56be4db0acb8001400a502ec"


@pytest.mark.parametrize(
    "doc,message",
    [
        ({"version": "1.1"}, "top level: no 'data' list"),
        ({"data": [{"title": "x"}]}, "data[0]: no 'paragraphs' list"),
        ({"data": [{"paragraphs": [{"qas": []}]}]}, "data[0].paragraphs[0]: no 'context' text"),
        (
            {"data": [{"paragraphs": [{"context": "c", "qas": [{"question": "q", "answers": []}]}]}]},
            "no 'answers' list",
        ),
        ({"data": []}, "holds no questions"),
    ],
)
def test_malformed_documents_name_the_place(doc, message):
    with pytest.raises(DataFileError) as err:
        parse_squad(doc, "f.json")
    assert str(err.value).startswith("f.json: ") and message in str(err.value)


def test_unreadable_files(tmp_path):
    with pytest.raises(DataFileError, match="no such file"):
        read_squad(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DataFileError, match="not valid JSON"):
        read_squad(tmp_path / "bad.json")


def test_a_long_prompt_keeps_its_bos_and_its_question():
    from trainables.phase1a_lora.base_model import build_tokenizer, encode_prompts

    examples = synthetic_examples(20, seed=2)
    tok = build_tokenizer([e.prompt + " " + e.answers[0] for e in examples])
    (ids,) = encode_prompts(tok, examples[:1], 12)
    assert len(ids) == 12 and ids[0] == tok.bos_token_id
    assert tok.decode(ids[1:]).endswith(tok.decode(tok(examples[0].question, add_special_tokens=False)["input_ids"]))
