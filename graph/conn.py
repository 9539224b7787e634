"""The store's DuckDB connection, with parameters that do not cost a pandas import.

DuckDB's Python client imports pandas the first time a statement is given parameters (0.3-0.5 s on two cores),
whatever the parameters are: a third of a cold `claimgraph show`. While pandas is not imported, `Connection`
puts plain parameters (None, bool, int, float, str, datetime, date, and non-empty lists of one of those; by
position, `?` or `$1`, or by name, `$name`) into the statement as constants of the types the client would bind
them as: `('it''s')::VARCHAR`. The placeholders are found by DuckDB's own tokenizer (`duckdb.tokenize`), so a
`?` inside a string, a quoted name or a comment is never taken for one, and a value is always one quoted,
escaped constant. Any other parameter, a statement whose placeholders are not all of one style, several
statements, or a process that has pandas already, goes through the client's own binding. At a million nodes a
node page's statements take 0.1-0.3 ms longer each this way (26-28 ms a page against 22); through PREPARE and
EXECUTE they took 0.5-1.5 ms longer each.
"""
from __future__ import annotations

import functools
import math
import re
import sys
from datetime import date, datetime
from typing import Any, cast

import duckdb

_INT32 = range(-2**31, 2**31)
_INT64 = range(-2**63, 2**63)
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NUMBERED = re.compile(r"\$[0-9]+")


class _Unbindable(Exception):
    """A parameter that has no literal here (left to DuckDB's client)."""


def _scalar(v: Any) -> tuple[str, str]:
    """(literal text, DuckDB type the client would bind the value as)."""
    t = type(v)
    if t is bool:
        return ("TRUE" if v else "FALSE"), "BOOLEAN"
    if t is int:
        if v in _INT32:
            return str(v), "INTEGER"
        if v in _INT64:
            return str(v), "BIGINT"
        raise _Unbindable
    if t is float:
        # as text, read as a double directly: a numeric literal is a DECIMAL first, which has no -0.0
        if math.isnan(v):
            return ("'-nan'" if math.copysign(1.0, v) < 0 else "'nan'"), "DOUBLE"
        return f"'{v!r}'", "DOUBLE"
    if t is str:
        if "\x00" in v:
            raise _Unbindable
        return "'" + v.replace("'", "''") + "'", "VARCHAR"
    if t is datetime:
        if v.tzinfo is None:
            return f"'{v.isoformat(' ')}'", "TIMESTAMP"
        if v.utcoffset() is None:
            raise _Unbindable
        return f"'{v.isoformat(' ')}'", "TIMESTAMPTZ"
    if t is date:
        return f"'{v.isoformat()}'", "DATE"
    raise _Unbindable


def literal(v: Any) -> str:
    """`v` as a DuckDB constant expression of the type the Python client binds it as; _Unbindable if it has
    none here."""
    if v is None:
        return "NULL"
    if type(v) in (list, tuple):
        if not v:
            raise _Unbindable
        items = [_scalar(x) for x in v]
        types = {t for _, t in items}
        if types == {"INTEGER", "BIGINT"}:
            types = {"BIGINT"}
        if len(types) != 1:
            raise _Unbindable
        return "[" + ", ".join(text for text, _ in items) + f"]::{types.pop()}[]"
    text, typ = _scalar(v)
    return f"({text})::{typ}"  # (-1)::T: a cast binds tighter than a minus


@functools.lru_cache(maxsize=512)
def _placeholders(query: str) -> tuple[tuple[int, int, str], ...]:
    """(start, end, key) of each placeholder of `query`, in order: key "?" for `?`, "1" for `$1`, "name" for
    `$name`; _Unbindable for several statements or an operator that names a parameter some other way."""
    toks = duckdb.tokenize(query)
    found: list[tuple[int, int, str]] = []
    ends = [p for p, _ in toks[1:]] + [len(query)]
    skip = False
    for j, ((start, kind), end) in enumerate(zip(toks, ends)):
        if skip:
            skip = False
            continue
        if kind != duckdb.token_type.operator:
            continue
        text = (query[start:end].split(None, 1) or [""])[0]  # an operator has no spaces; a comment may follow
        if text == ";" and query[end:].strip():
            raise _Unbindable  # several statements
        if "?" not in text and "$" not in text:
            continue
        if text == "?":
            found.append((start, start + 1, "?"))
        elif _NUMBERED.fullmatch(text):
            found.append((start, start + len(text), text[1:]))
        elif text == "$" and j + 1 < len(toks) and toks[j + 1][0] == start + 1:
            name = (query[start + 1:ends[j + 1]].split(None, 1) or [""])[0]
            if not _NAME.fullmatch(name):
                raise _Unbindable
            found.append((start, start + 1 + len(name), name))
            skip = True
        else:
            raise _Unbindable
    return tuple(found)


def inline(query: str, parameters: Any) -> str:
    """`query` with its placeholders replaced by `literal(value)` (see the module docstring); _Unbindable where
    that is not done here (the client then binds them, and raises what it raises for a wrong count)."""
    spans = _placeholders(query)
    if not spans:
        raise _Unbindable
    styles = {"?" if k == "?" else "n" if k.isdigit() else "name" for _, _, k in spans}
    if len(styles) != 1:
        raise _Unbindable
    style = styles.pop()
    if style == "name":
        if type(parameters) is not dict or set(parameters) != {k for _, _, k in spans}:
            raise _Unbindable
        values = [parameters[k] for _, _, k in spans]
    else:
        if type(parameters) not in (list, tuple):
            raise _Unbindable
        if style == "?":
            if len(parameters) != len(spans):
                raise _Unbindable
            values = list(parameters)
        else:
            idx = [int(k) for _, _, k in spans]
            if min(idx) < 1 or max(idx) != len(parameters) or len(set(idx)) != len(parameters):
                raise _Unbindable
            values = [parameters[i - 1] for i in idx]
    out, last = [], 0
    for (start, end, _), v in zip(spans, values):
        out += [query[last:start], f"({literal(v)})"]
        last = end
    out.append(query[last:])
    return "".join(out)


class Connection:
    """A duckdb connection whose `execute` binds plain parameters without importing pandas (see the module
    docstring); everything else is the connection's own."""

    __slots__ = ("_con", "literals")

    def __init__(self, con: duckdb.DuckDBPyConnection, *, literals: bool | None = None) -> None:
        self._con = con
        self.literals = literals  # put plain parameters into the statement: None, while pandas is not imported

    def execute(self, query: str, parameters: Any = None) -> duckdb.DuckDBPyConnection:
        if parameters is None or (type(parameters) in (list, tuple, dict) and not parameters):
            return self._con.execute(query)
        if not (("pandas" not in sys.modules) if self.literals is None else self.literals):
            return self._con.execute(query, parameters)
        try:
            text = inline(query, parameters)
        except _Unbindable:
            return self._con.execute(query, parameters)
        return self._con.execute(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._con, name)

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: Any) -> None:
        self._con.close()


# Float compression that a writing connection's checkpoints do not try: ALP and ALP-RD suit decimal-like floats, and on
# embeddings (unit vectors of full-precision floats) they made the file larger, not smaller: 100k vectors of 384 took
# 245 MB on disk and 1.7 s to checkpoint with them, 159 MB (the raw 154 MB) and 0.75 s without. Only how new blocks
# are written changes; blocks written either way read the same.
NO_COMPRESSION = "alp,alprd"


def connect(database: str, *, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """duckdb.connect, the connection wrapped in `Connection` (typed as the connection it stands in for)."""
    con = duckdb.connect(database, read_only=read_only)
    if not read_only and database != ":memory:":
        con.execute(f"SET disabled_compression_methods = '{NO_COMPRESSION}'")
    return cast(duckdb.DuckDBPyConnection, Connection(con))
