"""The one error tree of claimgraph. Everything the CLI reports as an expected failure is a ClaimgraphError.

Leaves are flat; each carries a message that says what to do next. `exit_code` is what the CLI exits with:
2 for bad input or usage, 1 for other expected failures.
"""
from __future__ import annotations


class ClaimgraphError(Exception):
    """Base of every expected claimgraph failure."""

    exit_code = 1


class InvalidDocument(ClaimgraphError):
    """An input document could not be parsed or validated; names the file and, where known, the line or field."""

    exit_code = 2

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None, field: str | None = None):
        self.path, self.line, self.field = path, line, field
        where = ""
        if path:
            where = str(path)
            if line is not None:
                where += f":{line}"
            if field:
                where += f" (field {field})"
            where += ": "
        elif field:
            where = f"field {field}: "
        super().__init__(where + message)
        self.bare_message = message


class InvalidInput(ClaimgraphError):
    """A command argument or API value is not acceptable (unknown type, malformed id, bad parameter)."""

    exit_code = 2


class NotFound(ClaimgraphError):
    """A node, edge, run, store or file that was asked for does not exist."""


class StoreBusy(ClaimgraphError):
    """Another process holds the database and did not release it within the wait."""


class StoreError(ClaimgraphError):
    """The database failed in a way that is not the caller's input (corrupt file, newer schema, disk full)."""


class JobFailed(ClaimgraphError):
    """An experiment run ended in a status other than completed."""
