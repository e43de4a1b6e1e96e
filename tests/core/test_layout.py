"""One study, one package, one name: trainables/<name>/ holds its config, training, report and
declaration; tune_jobs/<name>.py runs it; its experiments say `study: <name>`; its tests are
tests/<name>/test_<name>_*.py (the core's in tests/core, the cluster's in tests/cluster).
Training and report code import no Ray and no MLflow. The project's modules import one another
without a cycle, and the MLflow path is one package."""

import ast
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


def import_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports (at the top or inside a function)."""
    files = {}
    for path in [*(ROOT / "tune_jobs").rglob("*.py"), *(ROOT / "trainables").rglob("*.py")]:
        parts = path.relative_to(ROOT).with_suffix("").parts
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path

    def module_of(name: str) -> str | None:
        while name and name not in files:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for module, path in files.items():
        graph[module] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            for found in filter(None, map(module_of, names)):
                if found != module and not module.startswith(found + "."):  # a package's own parents
                    graph[module].add(found)
    return graph


def cycle_from(graph: dict[str, set[str]], start: str) -> list[str] | None:
    """A chain of imports from `start` back to itself, if there is one."""
    stack, seen = [(start, [start])], set()
    while stack:
        module, chain = stack.pop()
        for nxt in graph[module]:
            if nxt == start:
                return [*chain, start]
            if nxt not in seen:
                seen.add(nxt)
                stack.append((nxt, [*chain, nxt]))
    return None


def test_the_modules_import_one_another_without_a_cycle():
    graph = import_graph()
    assert len(graph) > 60
    cycles = [c for c in (cycle_from(graph, m) for m in sorted(graph)) if c]
    assert not cycles, " -> ".join(cycles[0])
    # The check finds a cycle where there is one.
    assert cycle_from({"a": {"b"}, "b": {"c"}, "c": {"a"}}, "a") == ["a", "b", "c", "a"]


def test_the_mlflow_path_is_one_package():
    """Only tune_jobs/core/tracking/ imports mlflow at all; the rest, entry scripts included,
    reaches MLflow through the package."""
    allowed = ("tune_jobs.core.tracking",)
    outside = sorted(
        module
        for module, path in (
            (".".join(p.relative_to(ROOT).with_suffix("").parts), p) for p in (ROOT / "tune_jobs").rglob("*.py")
        )
        if not module.startswith(allowed)
        and any(
            (isinstance(n, ast.Import) and any(a.name.split(".")[0] == "mlflow" for a in n.names))
            or (isinstance(n, ast.ImportFrom) and (n.module or "").split(".")[0] == "mlflow")
            for n in ast.walk(ast.parse(path.read_text()))
        )
    )
    assert not outside, f"modules outside tune_jobs/core/tracking/ importing mlflow: {outside}"
