"""Bad input, fuzzed: whatever a search-space YAML or a `key=value` override holds, the CLI
answers with a plan (exit 0) or one line `error: ...` (exit 2): never a traceback, and
nothing is written. Runs the real CLI in-process with --dry-run, which checks everything
a run checks before Ray starts."""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trainables.phase1 import Config
from tune_jobs.core.cli import main
from tune_jobs.core.config import to_flat
from tune_jobs.phase1 import STUDY

CONFIG_KEYS = sorted(to_flat(Config()))
TOP_KEYS = ["study", "metric", "mode", "search", "num_samples", "max_concurrent", "max_failures", "seed"]
TOP_KEYS += ["scheduler", "resources", "fixed", "profiles", "space", "description"]
VALID = yaml.safe_load((Path(__file__).resolve().parents[2] / "search_spaces" / "phase1.yaml").read_text())

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**12), 10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["min", "max", "grid", "optuna", "random", "asha", "fifo", "phase1", "val/nmse", "1e-3", "[1,2]"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.text(max_size=8), st.sampled_from(CONFIG_KEYS)), inner, max_size=3),
    ),
    max_leaves=8,
)
keys = st.one_of(st.sampled_from(TOP_KEYS + CONFIG_KEYS), st.text(max_size=10))
dims = st.fixed_dictionaries(
    {},
    optional={kind: values for kind in ("grid", "choice", "uniform", "loguniform", "randint", "quniform")},
)


@st.composite
def experiments(draw) -> str:
    """A YAML text: the valid phase1 experiment with random edits, or random text."""
    doc = dict(VALID)
    for _ in range(draw(st.integers(1, 4))):
        action = draw(st.sampled_from(["set", "drop", "dim", "fixed"]))
        if action == "set":
            doc[draw(keys)] = draw(values)
        elif action == "drop" and doc:
            doc.pop(draw(st.sampled_from(sorted(doc, key=str))))
        elif action == "dim":
            doc["space"] = {draw(st.sampled_from(CONFIG_KEYS) | st.text(max_size=8)): draw(dims | values)}
        else:
            doc["fixed"] = {draw(st.sampled_from(CONFIG_KEYS)): draw(values)}
    text = yaml.safe_dump(doc, sort_keys=False)
    tail = draw(st.sampled_from(["", "", "\n: :\n", "\tbad: [\n", "x: !!python/object/apply:os.system ['true']\n"]))
    return draw(st.sampled_from([text + tail, draw(st.text(max_size=80))]))


overrides = st.lists(
    st.builds(
        lambda k, v: f"{k}={v}",
        st.one_of(
            st.sampled_from(CONFIG_KEYS),
            st.sampled_from(["space.data.n_components", "sweep.num_samples", "sweep.max_concurrent"]),
            st.sampled_from(["sweep.scheduler.kind", "resources.cpu", "resources.gpu", "profile", "seed"]),
            st.text(max_size=12),
        ),
        st.one_of(
            st.sampled_from(["1", "-1", "0.5", "nan", "inf", "[1,2]", "{a: 1}", "", "true", "full"]),
            st.text(max_size=12),
        ),
    )
    | st.text(max_size=16),
    max_size=3,
)


def run_cli(args: list[str]) -> tuple[int, str, list[str]]:
    """main(args) in an empty folder: exit code, stderr, and what the folder holds after."""
    out, err = io.StringIO(), io.StringIO()
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                try:
                    code = main(STUDY, args)
                except SystemExit as exc:  # argparse's own usage errors
                    code = exc.code
            written = sorted(str(p.relative_to(tmp)) for p in Path(tmp).rglob("*"))
        finally:
            os.chdir(cwd)
    return code, err.getvalue(), written


def check(code: int, err: str, written: list[str]) -> None:
    assert written == [], f"the CLI wrote {written}"
    assert code in (0, 2), f"exit {code}: {err}"
    if code == 2:
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: "), err
        assert "Traceback" not in err


FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(text=experiments(), extra=overrides)
def test_any_experiment_file_gives_a_plan_or_one_line(text, extra):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fuzzed.yaml"
        path.write_text(text)
        check(*run_cli(["--experiment", str(path), "--dry-run", *extra]))


@FUZZ
@given(extra=overrides)
def test_any_override_on_the_real_experiment_gives_a_plan_or_one_line(extra):
    check(*run_cli(["--quick", "--dry-run", "--", *extra]))


def test_a_yaml_tag_that_would_run_code_is_refused_as_bad_input(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.yaml"
    path.write_text(f"study: phase1\nmetric: val/nmse\nx: !!python/object/apply:os.system ['touch {marker}']\n")
    code, err, written = run_cli(["--experiment", str(path), "--dry-run"])
    check(code, err, written)
    assert code == 2 and "malformed YAML" in err or "could not determine a constructor" in err
    assert not marker.exists()
