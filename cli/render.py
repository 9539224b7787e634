"""One renderer: pydantic models and plain data become JSON (--json), CSV (--csv) or rich tables on stdout.
Messages for people (progress, notes, warnings) go to stderr, so stdout carries only data.

Text from documents (titles scraped from web pages) can hold terminal control sequences that would move the
cursor, clear the screen or set the window title. What goes to a terminal shows every control character
escaped (`\x1b`); the store and the exports keep the text as it is, and JSON carries it in JSON escapes.
"""
from __future__ import annotations

import csv
import json
import os
import re
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from pydantic import BaseModel

# C0 controls but tab and newline, DEL, C1 controls (0x9b alone starts a sequence on some terminals)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_JSON_UNSAFE = re.compile(r"[\x7f-\x9f]")  # json.dumps escapes C0 itself


def safe(text: Any) -> str:
    """`text` for a terminal: each control character shown as an escape (`\x1b`), everything else as is."""
    s = "" if text is None else str(text)
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", s)


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
    text = json.dumps(to_jsonable(payload), ensure_ascii=False, indent=1, default=str)
    sys.stdout.write(_JSON_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", text) + "\n")


def _cell(v: Any) -> Any:
    v = to_jsonable(v)
    return json.dumps(v, ensure_ascii=False, default=str) if isinstance(v, (dict, list)) else v


def emit_csv(records: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> None:
    """Records as CSV on stdout (a header row, then one row per record; nested values as JSON). Control
    characters are escaped only when stdout is a terminal."""
    cols = list(columns or dict.fromkeys(k for r in records for k in r))
    tty = sys.stdout.isatty()
    w = csv.writer(sys.stdout, lineterminator="\n")
    w.writerow(cols)
    for r in records:
        row = ["" if r.get(c) is None else _cell(r.get(c)) for c in cols]
        w.writerow([safe(x) for x in row] if tty else row)


def note(message: str) -> None:
    """A message for the person at the terminal (stderr)."""
    _console(stderr=True).print(safe(message), markup=False, soft_wrap=True)


def table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]], *,
          wrap: Sequence[str] = ("title", "description", "text")) -> None:
    """A rich table on stdout. Short columns keep their full width; ids fold; long text wraps."""
    from rich.table import Table
    from rich.text import Text

    cells = [[safe(v) for v in r] for r in rows]
    con = _console()
    title = safe(title) if title else title
    if not cells:
        con.print(f"{title + ': ' if title else ''}(none)", markup=False)
        return
    # Text, never markup: a title with "[/x]" in it is text (as markup it would fail to parse or restyle)
    t = Table(title=Text(title) if title else None, title_justify="left", show_lines=False, header_style="bold")
    for i, c in enumerate(columns):
        longest = max([len(c)] + [len(r[i]) for r in cells])
        if c in wrap:
            t.add_column(c, overflow="fold", max_width=70, min_width=min(longest, 24))
        elif longest <= 24:
            t.add_column(c, no_wrap=True, min_width=longest)
        else:
            t.add_column(c, overflow="fold", min_width=min(longest, 24))
    for r in cells:
        t.add_row(*(Text(c) for c in r))
    con.print(t)


def lines(text_lines: Iterable[str | tuple[str, str]]) -> None:
    """Plain lines to stdout; a (text, style) pair is printed with a rich style."""
    from rich.text import Text

    con = _console()
    for item in text_lines:
        if isinstance(item, tuple):
            con.print(Text(safe(item[0]), style=item[1]))
        else:
            con.print(Text(safe(item)))


def fmt_score(x: float | None) -> str:
    return "" if x is None else f"{x:.3f}"


def fmt_counts(d: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(d.items())) or "-"
