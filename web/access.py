"""The web layer's one door to the store: every request's database work goes through `StoreAccess`.

DuckDB admits one writing process, and a process holding a file (even read-only) keeps writers out, so the
server never holds the file between requests: a GET page reads through a read-only Store, a form post writes
through a read-write one, and each is released (the file let go) when the request's database work ends.
CLI commands run while the server is up therefore wait at most one request's work for the file (and the
server waits, up to the store's busy timeout, while a CLI command holds it; then the page says busy).

The two Store objects live as long as the server, so graph/'s in-process caches keyed on the store (the
search vector matrix, BM25 document lengths) survive between requests; each cache re-checks a fingerprint of
the file on use, so a CLI write is seen by the next request. One lock serialises the work: a process may not
open one file read-only and read-write at once, and a Store is not safe to share between threads.
"""
from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from claimgraph.graph import Store


class StoreAccess:
    """Short-lived use of the store at `db`: `read()` for pages, `write()` for form posts."""

    def __init__(self, db: str | Path, *, busy_timeout: float | None = None):
        self.db = Path(db).resolve()
        self.busy_timeout = busy_timeout
        self._lock = threading.Lock()
        self._reader: Store | None = None
        self._writer: Store | None = None

    def check(self) -> dict:
        """Open the store once read-write (creating nothing; migrating an older schema) and describe it."""
        with self.write() as s:
            return {"db": str(s.path), "schema_version": s.schema_version(), "nodes": sum(s.count_nodes().values())}

    @contextmanager
    def read(self) -> Iterator[Store]:
        """A read-only Store, released when the block ends."""
        with self._lock:
            if self._reader is None:
                self._reader = Store(self.db, read_only=True, create=False, busy_timeout=self.busy_timeout)
            try:
                yield self._reader
            finally:
                self._reader.release()

    @contextmanager
    def write(self) -> Iterator[Store]:
        """A read-write Store, released when the block ends (the graph API's calls make their own transactions)."""
        with self._lock:
            if self._writer is None:
                self._writer = Store(self.db, create=False, busy_timeout=self.busy_timeout)
            try:
                yield self._writer
            finally:
                self._writer.release()

    def close(self) -> None:
        with self._lock:
            for s in (self._reader, self._writer):
                if s is not None:
                    s.close()
