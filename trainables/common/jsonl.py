"""JSON-lines files, written and read the one way every journal needs: the sweep's results
journal, trials file and ASHA's rung journal, each trial's result.json, a study's own logs
(phase1a_lora's diagnostics.jsonl). An append never glues onto a last line a crash left torn,
and a reader resumes from a byte offset and yields only complete lines. Standard library only
(no Ray, no MLflow), so a trainable, the driver and a report can all use it."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any


def append_line(path: Path, data: Mapping[str, Any], encoder: type[json.JSONEncoder] | None = None) -> None:
    """Append one JSON line (`encoder`: json's `cls`), never onto a line a crash left torn. It
    survives a killed process once written (the page cache is the kernel's). Raises OSError."""
    with open(path, "a+b") as f:
        size = f.seek(0, os.SEEK_END)
        prefix = b""
        if size:
            f.seek(size - 1)
            prefix = b"" if f.read(1) == b"\n" else b"\n"
        f.write(prefix + json.dumps(data, cls=encoder).encode() + b"\n")


def read_from(path: Path, offset: int = 0) -> bytes:
    """The file's bytes from `offset` on; b"" when it does not exist. Raises other OSErrors."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read()
    except FileNotFoundError:
        return b""


def complete_lines(path: Path, offset: int = 0) -> Iterator[tuple[int, bytes]]:
    """(byte offset, line) for each line from `offset` on that ends with its newline (a last
    line without one may still be being written: it waits for the next read). Blank lines are
    yielded too, so the caller's offset can move past them."""
    at = offset
    for line in read_from(path, offset).splitlines(keepends=True):
        if not line.endswith(b"\n"):
            return
        yield at, line
        at += len(line)


def end_torn_line(path: Path) -> tuple[int, bytes] | None:
    """End a last line a crash left without its newline, so appends do not glue onto it;
    (its offset, its bytes) then, None when nothing was torn. Only the file's one writer may."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return None
    if size == 0:
        return None
    with open(path, "rb+") as f:
        pos, start = size, 0
        while pos > 0:  # the last line's start, read backwards a block at a time
            block = min(pos, 1 << 16)
            f.seek(pos - block)
            chunk = f.read(block)
            if pos == size and chunk.endswith(b"\n"):
                return None
            newline = chunk.rfind(b"\n")
            if newline >= 0:
                start = pos - block + newline + 1
                break
            pos -= block
        f.seek(start)
        fragment = f.read()
        f.seek(size)
        f.write(b"\n")
    return start, fragment
