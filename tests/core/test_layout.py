"""One study, one package, one name: trainables/<name>/ holds its config, training, report and
declaration; tune_jobs/<name>.py runs it; its experiments say `study: <name>`; its tests are
tests/<name>/test_<name>_*.py (the core's in tests/core, the cluster's in tests/cluster).
Training and report code import no Ray and no MLflow."""

import subprocess
import sys

import yaml
from helpers import ROOT

from tune_jobs.core.study import load_study, shipped_studies


def test_each_study_is_one_package_under_one_name():
    studies = shipped_studies()
    assert studies == ["autoencoder", "denoising", "phase1", "phase1a_lora"]
    experiments = {p.stem: yaml.safe_load(p.read_text())["study"] for p in (ROOT / "search_spaces").glob("*.yaml")}
    for name in studies:
        package = ROOT / "trainables" / name
        for part in ("__init__.py", "config.py", "train.py", "report.py", "study.py"):
            assert (package / part).is_file(), f"{name}: no {part}"
        assert (ROOT / "tune_jobs" / f"{name}.py").is_file(), f"{name}: no entry script"
        tests = list((ROOT / "tests" / name).glob("test_*.py"))
        assert tests, f"{name}: no tests/{name}/ folder of tests"
        assert all(p.name.startswith(f"test_{name}_") for p in tests), f"tests/{name}/ holds another's tests"
        assert name in experiments.values(), f"{name}: no experiment says study: {name}"
        study = load_study(name)
        assert study.name == name and study.report.target.startswith(f"trainables.{name}.")
    # Every experiment belongs to one of them, and no package or test file under another name.
    assert set(experiments.values()) <= set(studies)
    packages = {p.name for p in (ROOT / "trainables").iterdir() if (p / "__init__.py").is_file()}
    assert packages == set(studies) | {"common"}
    folders = {p.parent.relative_to(ROOT / "tests").as_posix() for p in (ROOT / "tests").rglob("test_*.py")}
    assert folders == set(studies) | {"core", "core/tracking", "cluster"}, (
        "every test lives in a study's folder, core or cluster"
    )


def test_training_and_report_code_imports_no_ray_and_no_mlflow():
    modules = sorted(
        ".".join(p.relative_to(ROOT).with_suffix("").parts)
        for p in (ROOT / "trainables").rglob("*.py")
        if p.name != "__init__.py"
    )
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'ray', 'mlflow'}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout
    assert len(modules) > 30
