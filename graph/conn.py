"""The store's DuckDB connection, with parameters that do not cost a pandas import.

DuckDB's Python client imports pandas the first time a statement is given parameters (0.3-0.5 s on two cores),
whatever the parameters are: a third of a cold `claimgraph show`. While pandas is not imported, `Connection`
passes plain parameters (None, bool, int, float, str, datetime, date, and non-empty lists of one of those; by position or
by name) to DuckDB as
literals of the types the client would bind them as, through PREPARE and EXECUTE: DuckDB still parses the
statement and its placeholders itself, and the values never enter SQL text outside EXECUTE's argument list.
Any other parameter, or a process that has pandas already, goes through the client's own binding.
"""
from __future__ import annotations

import math
import re
import sys
import threading
from datetime import date, datetime
from typing import Any, cast

import duckdb

_INT32 = range(-2**31, 2**31)
_INT64 = range(-2**63, 2**63)
_STATEMENT = "claimgraph_literal"
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


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


class Connection:
    """A duckdb connection whose `execute` binds plain parameters without importing pandas (see the module
    docstring); everything else is the connection's own."""

    __slots__ = ("_con", "_lock", "literals")

    def __init__(self, con: duckdb.DuckDBPyConnection, *, literals: bool | None = None) -> None:
        self._con = con
        self._lock = threading.Lock()
        self.literals = literals  # bind plain parameters as literals: None, while pandas is not imported

    def execute(self, query: str, parameters: Any = None) -> duckdb.DuckDBPyConnection:
        if parameters is None or (type(parameters) in (list, tuple, dict) and not parameters):
            return self._con.execute(query)
        if not (("pandas" not in sys.modules) if self.literals is None else self.literals):
            return self._con.execute(query, parameters)
        try:
            if type(parameters) is dict:
                if not all(type(k) is str and _NAME.fullmatch(k) for k in parameters):
                    raise _Unbindable
                args = ", ".join(f"{k} := {literal(v)}" for k, v in parameters.items())
            elif type(parameters) in (list, tuple):
                args = ", ".join(literal(p) for p in parameters)
            else:
                raise _Unbindable
        except _Unbindable:
            return self._con.execute(query, parameters)
        body = query.strip().rstrip(";")
        if ";" in body:  # several statements (or a ';' in a string): PREPARE takes one; the client decides
            return self._con.execute(query, parameters)
        with self._lock:
            self._con.execute(f"PREPARE {_STATEMENT} AS {body}")
            return self._con.execute(f"EXECUTE {_STATEMENT}({args})")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._con, name)

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: Any) -> None:
        self._con.close()


def connect(database: str, *, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """duckdb.connect, the connection wrapped in `Connection` (typed as the connection it stands in for)."""
    return cast(duckdb.DuckDBPyConnection, Connection(duckdb.connect(database, read_only=read_only)))
