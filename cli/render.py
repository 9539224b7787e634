"""One renderer: pydantic models and plain data become JSON (with --json) or rich tables on stdout.
Messages for people (progress, notes, warnings) go to stderr, so stdout carries only data."""
from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from pydantic import BaseModel


def _console(stderr: bool = False):
    from rich.console import Console

    width = None if (sys.stderr if stderr else sys.stdout).isatty() else int(os.environ.get("COLUMNS", "140"))
    return Console(stderr=stderr, width=width, highlight=False, soft_wrap=False)


def to_jsonable(obj: Any) -> Any:
    if isinstance(obj, BaseModel):
        return obj.model_dump(mode="json")
    if isinstance(obj, dict):
        return {k: to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    return obj


def emit_json(payload: Any) -> None:
    sys.stdout.write(json.dumps(to_jsonable(payload), ensure_ascii=False, indent=1, default=str) + "\n")


def note(message: str) -> None:
    """A message for the person at the terminal (stderr)."""
    _console(stderr=True).print(message, markup=False, soft_wrap=True)


def table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]], *,
          wrap: Sequence[str] = ("title", "description", "text")) -> None:
    """A rich table on stdout. Short columns keep their full width; ids fold; long text wraps."""
    from rich.table import Table

    cells = [["" if v is None else str(v) for v in r] for r in rows]
    con = _console()
    if not cells:
        con.print(f"{title + ': ' if title else ''}(none)", markup=False)
        return
    t = Table(title=title, title_justify="left", show_lines=False, header_style="bold")
    for i, c in enumerate(columns):
        longest = max([len(c)] + [len(r[i]) for r in cells])
        if c in wrap:
            t.add_column(c, overflow="fold", max_width=70, min_width=min(longest, 24))
        elif longest <= 24:
            t.add_column(c, no_wrap=True, min_width=longest)
        else:
            t.add_column(c, overflow="fold", min_width=min(longest, 24))
    for r in cells:
        t.add_row(*r)
    con.print(t)


def lines(text_lines: Iterable[str | tuple[str, str]]) -> None:
    """Plain lines to stdout; a (text, style) pair is printed with a rich style."""
    from rich.text import Text

    con = _console()
    for item in text_lines:
        if isinstance(item, tuple):
            con.print(Text(item[0], style=item[1]))
        else:
            con.print(Text(item))


def fmt_score(x: float | None) -> str:
    return "" if x is None else f"{x:.3f}"


def fmt_counts(d: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(d.items())) or "-"
