"""The markdown table every report writes (GitHub's pipe tables), in one place."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any


def table_lines(header: Sequence[str], rows: Iterable[Sequence[Any]], cell: Callable[[Any], str] = str) -> list[str]:
    """The table's lines: the header, its rule, then one line per row, each value shown by
    `cell`; a '|' inside a value becomes '/', so that it cannot split its cell."""

    def line(values: Iterable[str]) -> str:
        return "| " + " | ".join(v.replace("|", "/") for v in values) + " |"

    return [line(header), "|" + "---|" * len(header), *(line(cell(v) for v in row) for row in rows)]


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]], cell: Callable[[Any], str] = str) -> str:
    """The table as one string (see table_lines)."""
    return "\n".join(table_lines(header, rows, cell))
