"""A run's artifacts: folders uploaded to MLflow without the files a writer has not finished,
hard-linked where the artifact store is on the same file system; a dict logged as YAML."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

log = logging.getLogger(__name__)

# A file another process is still writing, or left half-written by one that died, is never
# an artifact: the temp files of `trainables.common.atomic_file` (`.model.pt.<8 random>.tmp`,
# zero bytes when the writer was killed) and any `*.tmp`/`*.partial`. Ray Tune's artifact sync
# copies them into the sweep's trial folders as they are at that moment, and keeps them there.
TEMP_FILE = re.compile(r"(^\..+\.[a-z0-9_]{8}\.[A-Za-z0-9]+$)|(\.(tmp|partial|part)$)")


def is_temp_file(name: str) -> bool:
    return TEMP_FILE.search(name) is not None


def local_artifact_dir(uri: str) -> Path | None:
    """The folder of a run's artifact URI when it is on this machine's file system (file:// or
    a plain path), else None (a server's mlflow-artifacts:/, s3://, ...)."""
    from urllib.parse import unquote, urlparse

    parsed = urlparse(uri)
    if parsed.scheme == "file" and parsed.netloc in ("", "localhost"):
        return Path(unquote(parsed.path))
    if parsed.scheme == "" and uri.startswith("/"):
        return Path(uri)
    return None


def _link_files(files: list[Path], folder: Path, dest_root: Path) -> None:
    """Hard-link `files` (under `folder`) into `dest_root`, keeping their relative paths; a file
    already linked there (a close repeated after a crash) is left as it is. On any failure the
    links made here are removed again and the OSError is raised: the caller copies instead."""
    made: list[Path] = []
    try:
        for path in files:
            dest = dest_root / path.relative_to(folder)
            dest.parent.mkdir(parents=True, exist_ok=True)
            if dest.exists():
                if os.path.samefile(dest, path):
                    continue
                dest.unlink()
            os.link(path, dest)
            made.append(dest)
    except OSError:
        for dest in made:
            with contextlib.suppress(OSError):
                dest.unlink()
        raise


def upload_folder(client: Any, run_id: str, folder: Path, subdir: str | None = None, link: bool = False) -> list[Path]:
    """Log the files of `folder` as artifacts of `run_id` (under `subdir`), leaving out temp
    files and files that cannot be read (each named in a warning); returns those left out.

    With `link`, for files that are never written again (a checkpoint), a run whose artifacts
    are on the same file system gets hard links instead of copies: no bytes written, and the
    artifact stays whole when the sweep later deletes its own copy. Anywhere else (another
    file system, a server's artifact store) the files are copied as usual."""
    keep, left_out = [], []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        if is_temp_file(path.name):
            left_out.append(path)
            continue
        try:
            with open(path, "rb"):
                pass
        except OSError as exc:
            log.warning("artifact %s cannot be read (%s); the run gets the other files", path, exc.strerror or exc)
            left_out.append(path)
            continue
        keep.append(path)
    if not left_out:
        root = local_artifact_dir(client.get_run(run_id).info.artifact_uri) if link else None
        if root is not None:
            try:
                _link_files(keep, folder, root / subdir if subdir else root)
                return []
            except OSError as exc:
                log.debug("hard links into %s failed (%s); copying", root, exc)
        client.log_artifacts(run_id, str(folder), subdir)
        return []
    temp = [p.name for p in left_out if is_temp_file(p.name)]
    if temp:
        log.info("left out of run %s's artifacts: temp files %s in %s", run_id, ", ".join(temp), folder)
    for path in keep:
        rel = path.parent.relative_to(folder).as_posix()
        dest = "/".join(part for part in (subdir, rel) if part and part != ".")
        client.log_artifact(run_id, str(path), dest or None)
    return left_out


def log_dict(client: Any, run_id: str, data: Mapping[str, Any], name: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_text(yaml.safe_dump(dict(data), sort_keys=False))
        client.log_artifact(run_id, str(path))
