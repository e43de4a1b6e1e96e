"""The JSON-lines helper every journal of a sweep uses."""

import json
import subprocess
import sys

from trainables.common.jsonl import append_line, complete_lines, end_torn_line


def test_an_append_never_glues_onto_a_torn_last_line(tmp_path):
    path = tmp_path / "j.jsonl"
    append_line(path, {"a": 1})
    with open(path, "ab") as f:
        f.write(b'{"torn": ')  # a crash mid-write
    append_line(path, {"b": 2})
    assert path.read_bytes().splitlines() == [b'{"a": 1}', b'{"torn": ', b'{"b": 2}']


def test_a_reader_resumes_from_an_offset_and_yields_complete_lines_only(tmp_path):
    path = tmp_path / "j.jsonl"
    assert list(complete_lines(path)) == []  # no file yet
    for n in range(3):
        append_line(path, {"n": n})
    with open(path, "ab") as f:
        f.write(b'{"n": 3')  # still being written
    lines = list(complete_lines(path))
    assert [json.loads(line)["n"] for _, line in lines] == [0, 1, 2]
    second = lines[1][0]
    assert [at for at, _ in complete_lines(path, second)] == [at for at, _ in lines[1:]]
    assert path.read_bytes()[second:].startswith(b'{"n": 1}')


def test_a_torn_last_line_is_ended_once(tmp_path):
    path = tmp_path / "j.jsonl"
    assert end_torn_line(path) is None
    path.write_bytes(b'{"n": 0}\n{"n": 1')
    assert end_torn_line(path) == (9, b'{"n": 1')
    assert path.read_bytes() == b'{"n": 0}\n{"n": 1\n'
    assert end_torn_line(path) is None


def test_the_helper_imports_neither_ray_nor_mlflow():
    code = (
        "import sys, trainables.common.jsonl\nprint(sorted({m.split('.')[0] for m in sys.modules} & {'ray', 'mlflow'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "[]", out.stderr[-2000:]


def test_an_append_takes_an_encoder_for_values_json_cannot_write(tmp_path):
    class Fallback(json.JSONEncoder):
        def default(self, o):
            return repr(o)

    path = tmp_path / "result.json"
    path.write_bytes(b'{"n": 0}\n{"n": 1')  # torn by a crash
    append_line(path, {"n": 2, "when": object}, Fallback)
    lines = path.read_bytes().splitlines()
    assert lines[:2] == [b'{"n": 0}', b'{"n": 1'] and json.loads(lines[2]) == {"n": 2, "when": repr(object)}
