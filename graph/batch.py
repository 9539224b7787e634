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
from typing import Any, Generic, TypeVar, cast

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
        """Run `fn` on the batch thread and wait for it (on the caller's thread when `nice` is 0)."""
        return self.submit(fn).result()

    def submit(self, fn: Callable[[], T]) -> "Pending[T]":
        """Queue `fn` for the batch thread and return at once; jobs run one at a time in the order given. With
        `nice` 0 (or from the batch thread itself) `fn` runs now, on the caller's thread."""
        pending: Pending[T] = Pending()
        if not self.nice or threading.current_thread() is self._thread:
            try:
                pending._box["value"] = fn()
            except BaseException as e:
                pending._box["error"] = e
            pending._done.set()
            return pending
        with self._start:
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, name="claimgraph-batch", daemon=True)
                self._thread.start()
        self._jobs.put((fn, pending._box, pending._done))
        return pending


class Pending(Generic[T]):
    """A job handed to the batch thread: `done()` says whether it ended, `result()` waits for its value (or
    raises its error)."""

    def __init__(self) -> None:
        self._box: dict[str, Any] = {}
        self._done = threading.Event()

    def done(self) -> bool:
        return self._done.is_set()

    def result(self, timeout: float | None = None) -> T:
        """Its value, waiting up to `timeout` seconds (None: as long as it takes; TimeoutError after)."""
        if not self._done.wait(timeout):
            raise TimeoutError("the batch job has not finished")
        if "error" in self._box:
            raise self._box["error"]
        return cast(T, self._box["value"])


@functools.cache
def batch_thread() -> BatchThread:
    """The process's batch thread (its priority is read from CLAIMGRAPH_BATCH_NICE once)."""
    return BatchThread(batch_nice())
