"""The web layer's one door to the store: every request's database work goes through `StoreAccess`.

DuckDB admits one writing process, and a process holding a file (even read-only) keeps writers out, so the
server never holds the file between requests: a GET page reads through a read-only Store, a form post writes
through a read-write one, and each is released (the file let go) when the request's database work ends.
CLI commands run while the server is up therefore wait at most one request's work for the file (and the
server waits, up to the store's busy timeout, while a CLI command holds it; then the page says busy).

Fairness: a busy server could otherwise hold the file nearly all the time (one request after another), and a
CLI command polling for it would rarely find it free and give up with StoreBusy. So after each use the file is
left free for as long as that use held it (up to MAX_GAP_S) before the server opens it again: the file is free
at least half the time under any load, and a waiting command gets in within a few of its polls.

The two Store objects live as long as the server, so graph/'s in-process caches keyed on the store (the
search vector matrix, BM25 document lengths) survive between requests; each cache re-checks a fingerprint of
the file on use, so a CLI write is seen by the next request. One lock serialises the work: a process may not
open one file read-only and read-write at once, and a Store is not safe to share between threads.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from claimgraph.graph import Store

MAX_GAP_S = 0.6  # longest pause after a use; above the store's longest retry interval (0.5 s)


class StoreAccess:
    """Short-lived use of the store at `db`: `read()` for pages, `write()` for form posts."""

    def __init__(self, db: str | Path, *, busy_timeout: float | None = None):
        self.db = Path(db).resolve()
        self.busy_timeout = busy_timeout
        self._lock = threading.Lock()
        self._reader: Store | None = None
        self._writer: Store | None = None
        self._free_until = 0.0  # monotonic time before which the file is left to other processes

    def check(self) -> dict:
        """Open the store once read-write (creating nothing; migrating an older schema) and describe it."""
        with self.write() as s:
            return {"db": str(s.path), "schema_version": s.schema_version(), "nodes": sum(s.count_nodes().values())}

    def read(self) -> AbstractContextManager[Store]:
        """A read-only Store, released when the block ends."""
        return self._use(read_only=True)

    def write(self) -> AbstractContextManager[Store]:
        """A read-write Store, released when the block ends (the graph API's calls make their own transactions)."""
        return self._use(read_only=False)

    @contextmanager
    def _use(self, *, read_only: bool) -> Iterator[Store]:
        with self._lock:
            self._pause()
            start = time.monotonic()
            store = self._reader if read_only else self._writer
            if store is None:
                store = Store(self.db, read_only=read_only, create=False, busy_timeout=self.busy_timeout)
                if read_only:
                    self._reader = store
                else:
                    self._writer = store
            try:
                yield store
            finally:
                store.release()
                self._leave_free(start)

    def _pause(self) -> None:
        wait = self._free_until - time.monotonic()
        if wait > 0:
            time.sleep(wait)

    def _leave_free(self, start: float) -> None:
        now = time.monotonic()
        self._free_until = now + min(now - start, MAX_GAP_S)

    def close(self) -> None:
        with self._lock:
            for s in (self._reader, self._writer):
                if s is not None:
                    s.close()
