"""Batch work on a thread of lower CPU priority: loading heavy libraries and encoding text.

When many claimgraph commands share a machine's cores, the one that holds the store (graph/lock.py) should
get a core before those that are only getting ready (importing pandas, pyarrow, torch) or encoding: every
command queued behind the holder waits for it. So that work runs on one daemon thread per process, at nice
+CLAIMGRAPH_BATCH_NICE (default 10; 0 runs it on the caller's thread), and the caller waits for it (Ctrl-C
still interrupts the caller). On Linux a thread id sets that thread's priority only, and threads started from
it (torch's workers) inherit it; the calling thread, which holds the store, keeps its own. On an idle machine
this changes nothing. Measured in the store stress test (docs/benchmarks.md): turn holders used 0.02-0.15 s
of CPU in turns that lasted 1-9 s beside encoders and starting commands; with the encoder at nice +10 the p95
wait of 25 concurrent commands fell from 20 s to 8-10 s.
"""
from __future__ import annotations

import functools
import os
import queue
import sys
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from .errors import InvalidInput

T = TypeVar("T")


def batch_nice() -> int:
    """CLAIMGRAPH_BATCH_NICE: how much lower than the caller's the batch thread's priority is (0 to 19)."""
    raw = os.environ.get("CLAIMGRAPH_BATCH_NICE", "10")
    try:
        value = int(raw)
    except ValueError:
        raise InvalidInput(f"CLAIMGRAPH_BATCH_NICE={raw!r} is not a whole number from 0 to 19") from None
    if not 0 <= value <= 19:
        raise InvalidInput(f"CLAIMGRAPH_BATCH_NICE={raw!r} must be from 0 to 19")
    return value


class BatchThread:
    """One daemon thread at nice +`nice` that runs the functions handed to `run`, one at a time."""

    def __init__(self, nice: int):
        self.nice = nice if sys.platform.startswith("linux") else 0
        self._jobs: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None
        self._start = threading.Lock()

    def _serve(self) -> None:
        tid = threading.get_native_id()
        try:
            os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + self.nice))
        except OSError:
            pass
        while True:
            fn, box, done = self._jobs.get()
            try:
                box["value"] = fn()
            except BaseException as e:  # handed back to the caller
                box["error"] = e
            done.set()

    def run(self, fn: Callable[[], T]) -> T:
        if not self.nice or threading.current_thread() is self._thread:
            return fn()
        with self._start:
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, name="claimgraph-batch", daemon=True)
                self._thread.start()
        box: dict[str, Any] = {}
        done = threading.Event()
        self._jobs.put((fn, box, done))
        done.wait()
        if "error" in box:
            raise box["error"]
        return box["value"]


@functools.cache
def batch_thread() -> BatchThread:
    """The process's batch thread (its priority is read from CLAIMGRAPH_BATCH_NICE once)."""
    return BatchThread(batch_nice())
