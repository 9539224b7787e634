"""A fair queue in front of one store file: readers share it, a writer has it alone, and everyone is served in
the order they asked.

DuckDB lets one process open a file read-write, or any number of processes open it read-only, never both at
once, and it refuses (it does not wait for) a process that comes while the file is held. So every claimgraph
process asks this queue first, in a sidecar file beside the database (`claims.duckdb.lock`):

- Ticket. A process takes the next number from a counter at the start of the sidecar (under a lock on its
  first byte, held for microseconds), locks its own byte of the queue region at once (exclusively for a
  writer, shared for a reader) and writes a record of who it is (pid, command, time) in a ring of slots, so
  that those behind it can name it.
- Turn. A reader's turn comes when no earlier writer's byte is locked; a writer's when no earlier byte is
  locked at all. The wait is one blocking lock probe over the bytes of the earlier tickets: a shared probe for
  a reader (it conflicts only with the writers' exclusive bytes), an exclusive one for a writer. It runs in a
  helper thread, so the caller can say after a second whom it waits for, and give up at its timeout.
- End. Closing the sidecar unlocks the ticket's byte. The kernel drops the locks of a killed process, so a
  crashed command never blocks the queue, and nothing needs cleaning up.

The locks are Linux open-file-description locks (F_OFD_*): they belong to the open sidecar, not to the
process, so two Stores in one process (a notebook and an in-process CLI call, a threaded web server) queue
like two processes. Where they are missing (not Linux), or the sidecar cannot be opened for writing (a
read-only file or mount: no writer can exist there), `acquire` returns None and DuckDB's own lock, retried
until the timeout, is all that remains.
"""
from __future__ import annotations

import errno
import os
import struct
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .errors import StoreBusy

try:
    import fcntl

    _OFD = hasattr(fcntl, "F_OFD_SETLKW")
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]
    _OFD = False

_FLOCK = "hhqqi4x"         # struct flock on Linux (x86_64, aarch64): type, whence, start, len, pid
BASE = 1 << 32             # ticket t's byte: BASE + 2t (writer) or BASE + 2t + 1 (reader); never written
SLOTS, REC, REC_AT = 256, 128, 4096  # ring of records naming the holders, after the 8-byte counter
_HEAD = struct.Struct("<QIBd")       # ticket, pid, mode (1 = write), time asked


def _flock(kind: int, start: int, length: int) -> bytes:
    return struct.pack(_FLOCK, kind, os.SEEK_SET, start, length, 0)


def _lock(fd: int, cmd: int, kind: int, start: int, length: int) -> None:
    fcntl.fcntl(fd, cmd, _flock(kind, start, length))


def _conflict(fd: int, kind: int, start: int, length: int) -> int | None:
    """Start of a lock another open file holds that a `kind` lock on [start, start+length) would conflict with."""
    got = fcntl.fcntl(fd, fcntl.F_OFD_GETLK, _flock(kind, start, length))
    ltype, _, lstart, _, _ = struct.unpack(_FLOCK, got)
    return None if ltype == fcntl.F_UNLCK else lstart


@dataclass
class Holder:
    """Who holds (or waits for) the store ahead of a caller, from its queue record."""

    ticket: int
    pid: int | None
    write: bool
    command: str
    since: float | None

    def describe(self) -> str:
        who = f"process {self.pid}" if self.pid else "another process"
        return f"{who} ({self.command})" if self.command else who


class Turn:
    """A granted place in the queue; `release()` (or the end of the process) gives it up."""

    def __init__(self, path: Path, fd: int, ticket: int, write: bool, waited: float):
        self.path, self.fd, self.ticket, self.write, self.waited = path, fd, ticket, write, waited
        self.granted_at = time.monotonic()

    def others_waiting(self) -> bool:
        """Whether a later ticket is queued (or holds the store beside this reader)."""
        if self.fd < 0:
            return False
        return _conflict(self.fd, fcntl.F_WRLCK, BASE + 2 * self.ticket + 2, 0) is not None

    def writer_waiting(self) -> bool:
        """Whether a later ticket is a writer's (queued behind this one, or holding the store after it)."""
        if self.fd < 0:
            return False
        return _conflict(self.fd, fcntl.F_RDLCK, BASE + 2 * self.ticket + 2, 0) is not None

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # closing the open file drops its locks
            self.fd = -1


def sidecar(db: Path) -> Path:
    return db.with_name(db.name + ".lock")


def _command_label() -> str:
    argv = [Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python", *sys.argv[1:]]
    if argv[0] in ("-c", ""):
        argv[0] = "python -c"
    text = " ".join(argv)
    return text if len(text) <= 90 else text[:89] + "…"


def _record(fd: int, ticket: int) -> Holder:
    raw = os.pread(fd, REC, REC_AT + (ticket % SLOTS) * REC)
    if len(raw) >= _HEAD.size:
        t, pid, mode, since = _HEAD.unpack_from(raw)
        if t == ticket:
            cmd = raw[_HEAD.size:].split(b"\0", 1)[0].decode("utf-8", "replace")
            return Holder(ticket, pid, bool(mode), cmd, since)
    return Holder(ticket, None, False, "", None)  # its slot was reused by a much later ticket


def _take_ticket(path: Path, write: bool, label: str) -> tuple[int, int] | None:
    """(fd, ticket) with the ticket's byte locked, or None when the sidecar cannot be used."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    except OSError as e:
        if e.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            return None
        raise
    try:
        _lock(fd, fcntl.F_OFD_SETLKW, fcntl.F_WRLCK, 0, 1)  # the counter
        try:
            raw = os.pread(fd, 8, 0)
            ticket = int.from_bytes(raw.ljust(8, b"\0"), "little")
            os.pwrite(fd, (ticket + 1).to_bytes(8, "little"), 0)
            _lock(fd, fcntl.F_OFD_SETLK, fcntl.F_WRLCK if write else fcntl.F_RDLCK, BASE + 2 * ticket + (not write), 1)
            cmd = label.encode("utf-8", "replace")[:REC - _HEAD.size - 1]
            os.pwrite(fd, _HEAD.pack(ticket, os.getpid(), int(write), time.time()) + cmd + b"\0",
                      REC_AT + (ticket % SLOTS) * REC)
        finally:
            _lock(fd, fcntl.F_OFD_SETLK, fcntl.F_UNLCK, 0, 1)
    except BaseException:
        os.close(fd)
        raise
    return fd, ticket


def first_ahead(fd: int, ticket: int, write: bool) -> Holder | None:
    """The earliest ticket that a `write` (or read) ticket still waits for, with its record; None if none."""
    kind = fcntl.F_WRLCK if write else fcntl.F_RDLCK
    end, found = 2 * ticket, None
    while end > 0:
        at = _conflict(fd, kind, BASE, end)
        if at is None:
            break
        found, end = (at - BASE) // 2, at - BASE  # then look below it
    return None if found is None else _record(fd, found)


def acquire(db: Path, *, write: bool, timeout: float, label: str | None = None,
            on_wait: Callable[[str], None] | None = None, report_after: float = 1.0) -> Turn | None:
    """Wait for this process's turn at the store `db` (for writing or reading) and return it.

    After `report_after` seconds of waiting, `on_wait` gets a line naming the process waited for (and again
    when that changes, at most every 10 s). StoreBusy after `timeout` seconds. None when there is no queue
    (see the module docstring).
    """
    if not _OFD:
        return None
    path = sidecar(db)
    t0 = time.monotonic()
    got = _take_ticket(path, write, label if label is not None else _command_label())
    if got is None:
        return None
    fd, ticket = got
    try:
        if first_ahead(fd, ticket, write) is not None:
            _wait_turn(path, fd, ticket, write, t0, timeout, on_wait, report_after)
    except BaseException:
        os.close(fd)
        raise
    return Turn(path, fd, ticket, write, time.monotonic() - t0)


def _wait_turn(path: Path, fd: int, ticket: int, write: bool, t0: float, timeout: float,
               on_wait: Callable[[str], None] | None, report_after: float) -> None:
    done = threading.Event()
    failed: list[BaseException] = []

    def probe() -> None:  # blocks until every earlier ticket this one waits for has ended
        try:
            pfd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
            try:
                _lock(pfd, fcntl.F_OFD_SETLKW, fcntl.F_WRLCK if write else fcntl.F_RDLCK, BASE, 2 * ticket)
            finally:
                os.close(pfd)
        except BaseException as e:  # handed to the waiting thread
            failed.append(e)
        done.set()

    threading.Thread(target=probe, name=f"claimgraph-queue-{ticket}", daemon=True).start()
    told: Holder | None = None
    told_at = 0.0
    while True:
        now = time.monotonic()
        waited = now - t0
        if waited >= timeout:
            ahead = first_ahead(fd, ticket, write)
            who = ahead.describe() if ahead else "another process"
            raise StoreBusy(f"the database {path.name[:-5]} is busy: waited {timeout:g}s for {who}; try again "
                            "when it finishes (CLAIMGRAPH_BUSY_TIMEOUT sets the wait)")
        step = min(timeout - waited, max(report_after - waited, 0.0) or 1.0)
        if done.wait(step):
            break
        if on_wait is not None and time.monotonic() - t0 >= report_after:
            ahead = first_ahead(fd, ticket, write)
            if ahead is not None and (told is None or (ahead.ticket != told.ticket and now - told_at >= 10)):
                kind = "write" if ahead.write else "read"
                on_wait(f"waiting for {ahead.describe()}, ahead in the queue to {kind} {path.name[:-5]}")
                told, told_at = ahead, now
    if failed:
        raise failed[0]
