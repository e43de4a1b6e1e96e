"""Shared fixtures (the helpers they and the tests use are in helpers.py)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from helpers import run_job


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    d = tmp_path / "work"
    d.mkdir()
    return d


@pytest.fixture(scope="session")
def phase1_quick(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """`python tune_jobs/phase1.py --quick` in a fresh folder, output piped: the README's first
    sweep, run once for the tests that only read what it left (the folder and the output)."""
    workdir = tmp_path_factory.mktemp("first_sweep")
    return workdir, run_job(["phase1.py", "--quick"], workdir, timeout=900)
