"""The MLflow journal: what was journalled reaches MLflow exactly once, torn lines wait."""

import json

from mlflow import MlflowClient

from tune_jobs.core.tracking import JOURNAL_FILE, STATE_FILE, replay, send_journal


def row(run, step, value):
    return json.dumps({"trial": "t1", "run": run, "step": step, "ts": 1000 + step, "metrics": {"val/nmse": value}})


def test_journal_is_sent_once_and_a_torn_last_line_waits(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path / 'm.db'}")
    run = client.create_run(client.create_experiment("e")).info.run_id
    journal = tmp_path / JOURNAL_FILE
    journal.write_text("\n".join(row(run, s, 1.0 / (s + 1)) for s in range(3)) + "\n" + '{"trial": "t1", "ru')
    offset = send_journal(client, journal, 0)
    assert offset == len(journal.read_bytes()) - len('{"trial": "t1", "ru')
    assert [(m.step, m.value) for m in client.get_metric_history(run, "val/nmse")] == [(0, 1.0), (1, 0.5), (2, 1 / 3)]

    # Sending the same lines again (a crash before the offset was saved) adds nothing.
    assert send_journal(client, journal, 0) == offset
    assert len(client.get_metric_history(run, "val/nmse")) == 3

    # The torn line is completed later: only it goes out.
    with open(journal, "w") as f:
        f.write("\n".join(row(run, s, 1.0 / (s + 1)) for s in range(4)) + "\n")
    new = send_journal(client, journal, offset)
    assert new == len(journal.read_bytes())
    assert [m.step for m in client.get_metric_history(run, "val/nmse")] == [0, 1, 2, 3]


def test_replay_sends_what_the_sweep_could_not_and_records_it(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path / 'm.db'}")
    run = client.create_run(client.create_experiment("e")).info.run_id
    (tmp_path / JOURNAL_FILE).write_text("\n".join(row(run, s, float(s)) for s in range(5)) + "\n")
    (tmp_path / STATE_FILE).write_text(json.dumps({"journal_offset": 0, "trials": {}}))
    assert replay(client, tmp_path) > 0
    assert len(client.get_metric_history(run, "val/nmse")) == 5
    assert json.loads((tmp_path / STATE_FILE).read_text())["journal_offset"] == len(
        (tmp_path / JOURNAL_FILE).read_bytes()
    )
    assert replay(client, tmp_path) == 0
