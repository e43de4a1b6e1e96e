"""Where a sweep ran, for whoever reruns one of its trials later: the Python, the installed
packages, the CPU and GPUs of the machine that started it, the commit and the uncommitted
changes. Written into a new sweep's folder (environment.json, uncommitted.diff), attached to
its parent run as artifacts, and the short form as the parent's `env.*` tags.

The machine is the driver's: on a cluster the trials may run on other nodes (each trial run's
`ray.hostname` and `ray.gpu_ids` tags say where it ran).
"""

from __future__ import annotations

import json
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from tune_jobs.core.paths import PROJECT_ROOT, git_commit

ENV_FILE = "environment.json"
DIFF_FILE = "uncommitted.diff"


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _gpus() -> list[str]:
    """The NVIDIA GPUs nvidia-smi lists ("NVIDIA H100 80GB HBM3"), none where it is absent."""
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True, timeout=20
        )
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.stdout.splitlines() if line.strip()] if out.returncode == 0 else []


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return ""


def environment() -> dict[str, Any]:
    packages = {d.metadata["Name"]: d.version for d in metadata.distributions() if d.metadata["Name"]}
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": _cpu(),
        "gpus": _gpus(),
        "torch": _version("torch"),  # a CUDA build says so: 2.13.0+cu128
        "git_commit": git_commit(),
        "packages": dict(sorted(packages.items(), key=lambda kv: kv[0].lower())),
    }


def uncommitted_diff() -> str:
    """`git diff HEAD` of the project (tracked files), empty when clean or not a git checkout."""
    try:
        out = subprocess.run(
            ["git", "-C", str(PROJECT_ROOT), "diff", "HEAD", "--no-color"], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout if out.returncode == 0 else ""


def write(sweep_dir: Path) -> None:
    """environment.json, and uncommitted.diff when the tree has changes, into a new sweep's folder."""
    (sweep_dir / ENV_FILE).write_text(json.dumps(environment(), indent=1) + "\n")
    diff = uncommitted_diff()
    if diff:
        (sweep_dir / DIFF_FILE).write_text(diff)


def tags(sweep_dir: Path) -> dict[str, str]:
    """The parent run's `env.*` tags from the sweep's environment.json (none if it is missing)."""
    try:
        env = json.loads((sweep_dir / ENV_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return {
        "env.python": env.get("python", ""),
        "env.torch": env.get("torch", ""),
        "env.cpu": env.get("cpu", ""),
        "env.gpu": ", ".join(env.get("gpus", [])) or "none",
        "env.platform": env.get("platform", ""),
    }
