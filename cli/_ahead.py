"""Imported first by the `claimgraph` command (cli/main.py), before anything heavy."""
from __future__ import annotations

import os
import threading


def _import_ahead() -> None:
    """Import what DuckDB and the store import before a command's first query: DuckDB imports pandas on the first
    query with a bound parameter, and the store hands pyarrow tables to it (0.3-0.5 s). On this thread, started
    before this module's own imports (typer, the graph's pydantic models), the two overlap instead of adding up;
    the store's first turn waits for whatever is still importing (graph/store.py `_preload`). At lower priority,
    like the store's batch thread (graph/batch.py): a command getting ready yields a core to one holding the store."""
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + 10))
    except (AttributeError, OSError):
        pass
    for name in ("pandas", "pyarrow", "pyarrow.dataset"):
        try:
            __import__(name)
        except ImportError:
            pass


threading.Thread(target=_import_ahead, name="claimgraph-import-ahead", daemon=True).start()
