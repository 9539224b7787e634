"""The web layer's one door to the store: every request's database work goes through `StoreAccess`.

A GET page reads in one reading session of a read-only Store, a form post writes in one writing session. A
reading session's end keeps its read-only connection for the Store's `keep_open` seconds (CLAIMGRAPH_KEEP_OPEN_S,
default 2; graph/store.py), so pages viewed in quick succession skip the open and find DuckDB's buffers warm; a
writer that queues (a CLI command, this server's own form post) has it given up within 20 ms. Each session
takes a turn in the store's fair queue beside CLI commands and notebooks (claimgraph.graph.lock: readers share
a turn, a writer has it alone, all in arrival order), so a CLI command waits at most for the requests ahead
of it, and a request for the commands ahead of it (up to the store's busy timeout; then the page says busy).

The two Store objects live as long as the server, so graph/'s in-process caches keyed on the store (the
search vector matrix, BM25 document lengths) survive between requests; each cache re-checks a fingerprint of
the file on use, so a CLI write is seen by the next request. One lock serialises the work (a Store's sessions
are serialised across threads anyway; the lock keeps a reading and a writing request of this server in order).
"""
from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
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

    def read(self) -> AbstractContextManager[Store]:
        """A read-only Store, released when the block ends."""
        return self._use(read_only=True)

    def write(self) -> AbstractContextManager[Store]:
        """A read-write Store, released when the block ends (the graph API's calls make their own transactions)."""
        return self._use(read_only=False)

    @contextmanager
    def _use(self, *, read_only: bool) -> Iterator[Store]:
        with self._lock:
            store = self._reader if read_only else self._writer
            if store is None:
                store = Store(self.db, read_only=read_only, create=False, busy_timeout=self.busy_timeout,
                              label="claimgraph serve")
                if read_only:
                    self._reader = store
                else:
                    self._writer = store
            with store.session(write=not read_only):  # one turn for the request's database work
                yield store

    def close(self) -> None:
        with self._lock:
            for s in (self._reader, self._writer):
                if s is not None:
                    s.close()
