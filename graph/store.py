"""The store: one class opened from a path, in front of one DuckDB file.

    g = Store("claims.duckdb")            # cheap: holds nothing yet
    node = g.get_node("claim:...")        # each call waits its turn, opens the file, and lets go of it
    with g.session(write=True):           # or hold it for a group of calls (one open, one turn)
        g.apply(delta, document)          # one transaction per document
        g.link("finding:a", "supports", "claim:b")

Sharing the file. DuckDB admits one process that has a file open read-write or any number that have it open
read-only, never both, and refuses (it does not wait for) whoever comes while it is held. So a Store never
holds the file between calls: every public method, and every `session()` block, takes a turn in a fair
queue beside the file (graph/lock.py: readers share a turn, a writer has it alone, all in arrival order, a
killed process's turn ends with it), opens DuckDB read-only for reading and read-write for writing, and
closes it and gives up the turn at the end. A command waiting more than a second says on stderr whom it
waits for (`on_wait` redirects that line); after `busy_timeout` seconds (CLAIMGRAPH_BUSY_TIMEOUT, default
300) it raises StoreBusy. Work that takes time without the database (parsing, encoding, training, rendering)
happens between turns: `release()` ends the turn early inside a session (the next call takes a new one),
and `yield_turn()` hands it on between the documents of a long ingest when someone is waiting.

Kept open. A reading turn is not closed at once when its call ends: the Store keeps the read-only
connection and its shared turn for `keep_open` seconds (CLAIMGRAPH_KEEP_OPEN_S, default 2; 0 closes at
once), and the next reading call within that time uses it as it is: no open, and DuckDB's buffers still hold
the pages the last call read (at a million nodes a fresh open re-reads them: 30-80 ms per call). Other
readers share the file meanwhile. A writer that queues for the store (any claimgraph process, or another
Store in this one) is seen by a watcher thread within 20 ms, and the kept turn is closed and given up then,
so an idle Store makes a writer wait that long and no longer. A program that opens the file outside the queue
(a `duckdb` shell writing to it) can be refused for up to `keep_open` seconds after the last call.

Cost. Constructing a Store checks the file once per process (until it changes); a turn costs one DuckDB
open and close (about 5-10 ms on a small store; closing after a write checkpoints, which grows with the
store), unless a kept reading turn serves it. A server keeps one Store and wraps each request in
`with store.session():` (a Store's sessions are serialised across threads; separate Stores in one process
queue like separate processes). A store on a read-only file or mount works for every reading call, with no
queue (nobody can write there; nothing is kept open either).

Nothing above graph/ imports duckdb: every duckdb error is translated here.
"""
from __future__ import annotations

import atexit
import functools
import json
import os
import re
import socket
import sys
import threading
import time
import weakref
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, ParamSpec, TypeVar, cast

import duckdb

from . import conn as dbconn
from . import lock as queue
from .batch import batch_thread
from .errors import ClaimgraphError, InvalidDocument, InvalidInput, NotFound, StoreBusy, StoreError
from .ids import paper_keys, parse_id, sha256_hex, slugify
from .models import (
    ATTRS_MODELS,
    EDGE_RULES,
    ApplyReport,
    DocumentRef,
    Edge,
    EdgeType,
    GraphDelta,
    MadeBy,
    Node,
    NodeType,
    Provenance,
    Records,
    RemovedEdge,
    StatedSimilarity,
    node_type_value,
    parse_edge_type,
    parse_node_type,
)
from .portable import local_path, stored_path
from .schema import EMBED_DIM, MIGRATIONS, SCHEMA_VERSION, VERSION_TABLE, assign_paper_keys
from .text import term_counts

DEFAULT_BUSY_TIMEOUT = 300.0
_LOCK_RE = re.compile(r"(Could not set lock|Conflicting lock)", re.I)
_PID_RE = re.compile(r"PID (\d+)")
_READONLY_RE = re.compile(r"(Read-only file system|Permission denied|read-only)", re.I)
_CHECKED: dict[str, tuple | None] = {}  # path -> file identity when a Store last found it a current claimgraph store

P = ParamSpec("P")
R = TypeVar("R")


def _env_seconds(name: str, default: float) -> float:
    """The environment variable `name` as a finite number of seconds, at least 0; `default` when unset."""
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = float(raw)
    except ValueError:
        raise InvalidInput(f"{name}={raw!r} is not a number of seconds") from None
    if not 0 <= value < float("inf"):
        raise InvalidInput(f"{name}={raw!r} must be a finite number of seconds, at least 0")
    return value


def busy_timeout_default() -> float:
    """CLAIMGRAPH_BUSY_TIMEOUT (seconds), read when a Store is made; 300 when unset."""
    return _env_seconds("CLAIMGRAPH_BUSY_TIMEOUT", DEFAULT_BUSY_TIMEOUT)


DEFAULT_KEEP_OPEN = 2.0
_WATCH_S = 0.02  # how often a kept reading turn looks for a queued writer


def keep_open_default() -> float:
    """CLAIMGRAPH_KEEP_OPEN_S (seconds a reading turn is kept open after its call), read when a Store is made."""
    return _env_seconds("CLAIMGRAPH_KEEP_OPEN_S", DEFAULT_KEEP_OPEN)


class _KeptTurn:
    """A reading turn (read-only connection and shared queue ticket) kept after its session ended, and the
    watcher thread that gives it up when a writer queues or `keep_open` seconds pass. It refers to no Store,
    so a Store dropped while it keeps a turn is collected, and the turn still ends on time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._con: duckdb.DuckDBPyConnection | None = None
        self._turn: queue.Turn | None = None
        self._until = 0.0
        self._watcher: threading.Thread | None = None  # the running watcher (None once it decided to end)
        self._thread: threading.Thread | None = None   # the last one started, to wait for at exit
        _ALL_KEPT.add(self)

    def _forget_in_child(self) -> None:
        """In a forked child: the kept turn is the parent's. Close the child's copy of its queue descriptor (a lock
        stays held while any copy is open) and forget the connection without touching it (the watcher thread
        did not survive the fork)."""
        self._lock = threading.Lock()
        self._watcher = None
        turn, self._con, self._turn = self._turn, None, None
        if turn is not None:
            turn.release()

    def keep(self, con: duckdb.DuckDBPyConnection, turn: queue.Turn, seconds: float) -> None:
        with self._lock:
            self._con, self._turn, self._until = con, turn, time.monotonic() + seconds
            if self._watcher is None:
                self._watcher = self._thread = threading.Thread(target=self._watch, name="claimgraph-kept-turn",
                                                                daemon=True)
                self._watcher.start()

    def take(self) -> tuple[duckdb.DuckDBPyConnection, queue.Turn] | None:
        """The kept turn, for a reading call to use (it is no longer kept), or None."""
        with self._lock:
            con, turn = self._con, self._turn
            self._con = self._turn = None
        return None if con is None or turn is None else (con, turn)

    def drop(self, *, last: bool = False) -> None:
        """Close the kept turn now, if there is one; `last` (at exit): the watcher ends at its next look, too."""
        if last:
            with self._lock:
                self._until = 0.0
        got = self.take()
        if got is not None:
            _close_turn(*got)

    def _watch(self) -> None:
        while True:
            time.sleep(_WATCH_S)
            with self._lock:
                if self._con is None:  # taken by a call (it may be kept again when the call ends)
                    if time.monotonic() < self._until:
                        continue
                    self._watcher = None
                    return
                assert self._turn is not None
                if time.monotonic() < self._until and not self._turn.writer_waiting():
                    continue
                con, turn = self._con, self._turn
                self._con = self._turn = None
                self._watcher = None
            _close_turn(con, turn)
            return


_ALL_KEPT: "weakref.WeakSet[_KeptTurn]" = weakref.WeakSet()


def _forget_kept_turns_in_child() -> None:
    for kept in list(_ALL_KEPT):
        kept._forget_in_child()


def _close_kept_turns_at_exit() -> None:
    """Close kept turns, and wait for a watcher that is closing one, before the interpreter finalises: a DuckDB
    connection left to finalisation, or closed by a daemon thread while the interpreter ends, can abort the process."""
    for kept in list(_ALL_KEPT):
        kept.drop(last=True)
        thread = kept._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)  # within one look (20 ms), or as long as the close it is doing takes


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_kept_turns_in_child)
atexit.register(_close_kept_turns_at_exit)


def _close_turn(con: duckdb.DuckDBPyConnection, turn: queue.Turn) -> None:
    try:
        con.close()
    except duckdb.Error:
        pass  # a read-only connection has nothing to lose
    finally:
        turn.release()


def reads(fn: Callable[P, R]) -> Callable[P, R]:
    """Run a Store method (or a function whose first argument is a Store) inside a reading session."""
    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with cast("Store", args[0]).session():
            return fn(*args, **kwargs)
    return wrapper


def writes(fn: Callable[P, R]) -> Callable[P, R]:
    """Run a Store method (or a function whose first argument is a Store) inside a writing session."""
    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with cast("Store", args[0]).session(write=True):
            return fn(*args, **kwargs)
    return wrapper


def _naive_utc(dt: datetime | None) -> datetime | None:
    if dt is None:
        return None
    if dt.tzinfo is not None:
        dt = dt.astimezone(timezone.utc).replace(tzinfo=None)
    return dt


def _aware(dt: datetime) -> datetime:
    """A timestamp read back from DuckDB (naive, UTC) as an aware datetime."""
    return dt.replace(tzinfo=timezone.utc) if dt.tzinfo is None else dt


def _clean_attrs(attrs: dict[str, Any]) -> dict[str, Any]:
    """Drop None values (a document that does not state a field must not erase it) and make JSON-safe."""
    if not attrs:
        return {}
    return json.loads(json.dumps({k: v for k, v in attrs.items() if v is not None}, default=str))


def _scalar(con: duckdb.DuckDBPyConnection, sql: str, params: list[Any] | None = None) -> Any:
    """The first column of the one row an aggregate query returns."""
    row = con.execute(sql, params or []).fetchone()
    assert row is not None, f"no row from {sql!r}"
    return row[0]


def _identity(path: Path) -> tuple | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)


@functools.cache
def _preload(write: bool) -> None:
    """Import, before the first turn, what DuckDB imports on first use: pyarrow, for the Arrow tables it returns
    (search reads vectors that way), and for a writing turn pyarrow.dataset, which DuckDB imports on the first
    Arrow table it is handed (the store stages rows that way) and which imports pandas (0.3-0.5 s). Paid inside
    a turn, it would be paid by everyone waiting behind it; it runs on the batch thread (graph/batch.py), so a
    process that holds the store gets a core first. A reading command needs no pandas: DuckDB's client would
    import it on the first statement with parameters, and graph/conn.py binds plain parameters without it."""
    def load() -> None:
        for name in ("pyarrow", "pyarrow.dataset") if write else ("pyarrow",):
            try:
                __import__(name)
            except ImportError:
                pass

    batch_thread().run(load)


def _stderr_line(message: str) -> None:
    print(f"claimgraph: {message}", file=sys.stderr, flush=True)


def check_page(limit: int | None, offset: int = 0) -> None:
    """A listing's `limit` (None: all) and `offset` must not be negative."""
    if limit is not None and limit < 0:
        raise InvalidInput(f"--limit must be 0 or more (leave it out for all), got {limit}")
    if offset < 0:
        raise InvalidInput(f"--offset must be 0 or more, got {offset}")


def _ambiguous(text: str, what: str, candidates: list[str]) -> str:
    """The message for a prefix that names several things: the first ten of them, one a line."""
    many = "more than 10" if len(candidates) > 10 else str(len(candidates))
    return (f"{text!r} is ambiguous: {many} {what} begin with it (give more of the id):\n"
            + "\n".join(f"  {c}" for c in candidates[:10]))


def text_hash(node: Node) -> str:
    return sha256_hex(node.embed_text())


class Store:
    """The claim graph in one DuckDB file (or in memory when `path` is None); see the module docstring for how
    it shares the file with other processes.

    `read_only`: refuse every write. `busy_timeout`: seconds to wait for a turn. `on_wait`: gets the "waiting
    for process N (command)" line (default: stderr). `label`: how the queue names this process to others.
    `check`: open the file now to check it is a current claimgraph store (False: at the first call).
    `keep_open`: seconds a reading turn is kept after its call (see the module docstring; default
    CLAIMGRAPH_KEEP_OPEN_S or 2, 0: never).
    """

    def __init__(self, path: str | os.PathLike | None = None, *, read_only: bool = False,
                 busy_timeout: float | None = None, create: bool = True,
                 on_wait: Callable[[str], None] | None = _stderr_line, label: str | None = None, check: bool = True,
                 keep_open: float | None = None):
        self.path = Path(path).resolve() if path not in (None, ":memory:") else None
        self.read_only = read_only
        self.busy_timeout = busy_timeout_default() if busy_timeout is None else busy_timeout
        self.keep_open = keep_open_default() if keep_open is None else max(0.0, float(keep_open))
        self._kept = _KeptTurn()
        self.on_wait = on_wait
        self.label = label  # how the queue names this process to others (default: its command line)
        self._con: duckdb.DuckDBPyConnection | None = None
        self._turn: queue.Turn | None = None
        self._thread_lock = threading.RLock()
        self._depth = 0          # nesting of session() blocks
        self._writing = False    # the current session's mode
        self._tx_depth = 0
        self._opened_at = self._opened_cpu = 0.0
        self._open_s = self._close_s = 0.0  # how long the last turn's DuckDB open and close took (turn log)
        self._waited = 0.0
        if self.path is None:
            self._con = dbconn.connect(":memory:")
            self._migrate()
            return
        if not self.path.exists():
            if read_only or not create:
                raise NotFound(f"no claimgraph store at {self.path}; create one with `claimgraph init` "
                               "or point --db / CLAIMGRAPH_DB at an existing one")
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise StoreError(f"cannot create {self.path}: {e.strerror}") from None
            with self.session(write=True):
                self.schema_version()  # creates the file and its schema
        elif check and _CHECKED.get(str(self.path)) != _identity(self.path):
            with self.session():
                self.schema_version()  # checks (or migrates) it now, so a bad file fails here

    # -- sessions and the connection ---------------------------------------------------------
    @contextmanager
    def session(self, write: bool = False) -> Iterator["Store"]:
        """Hold the store for a group of calls: one turn in the queue and one DuckDB open, from the first call
        inside the block (not before) to its end. `write=False` shares the turn with other readers and opens the
        file read-only; a write inside such a block is refused while it holds the file. Nested blocks join the
        outer one."""
        if write and self.read_only:
            raise InvalidInput(f"this store ({self}) was opened read-only")
        with self._thread_lock:
            if self._depth == 0:
                self._writing = write
            elif write and not self._writing:
                if self._con is not None and self.path is not None:
                    raise StoreError("a write inside a reading session: open the session with "
                                     "`store.session(write=True)`")
                self._writing = True
            self._depth += 1
            try:
                yield self
            finally:
                self._depth -= 1
                if self._depth == 0:
                    self._end_turn(keep=True)

    @property
    def con(self) -> duckdb.DuckDBPyConnection:
        """The live connection of the current session (opened on first use)."""
        if self._con is None:
            if self.path is None:
                raise StoreError("this in-memory store was closed")
            if self._depth == 0:
                raise StoreError("Store.con is only available inside a session: `with store.session(): ...`")
            self._begin_turn()
        assert self._con is not None
        return self._con

    @property
    def holding(self) -> bool:
        """Whether this Store has the file open now."""
        return self._con is not None and self.path is not None

    def writable(self) -> bool:
        """Whether this process may write the store's file (and create the WAL beside it)."""
        if self.path is None:
            return not self.read_only
        return (not self.read_only and os.access(self.path, os.W_OK) and os.access(self.path.parent, os.W_OK))

    def _begin_turn(self) -> None:
        assert self.path is not None
        write = self._writing
        if write and self.path.exists() and not self.writable():
            raise StoreError(f"{self.path} is read-only (file or mount): this command writes to the store; "
                             "reading commands work, or copy the store somewhere writable")
        kept = self._kept.take()
        if kept is not None:
            if not write:  # the last reading turn, kept open: nothing to wait for or open
                self._con, self._turn = kept
                self._opened_at, self._opened_cpu = time.monotonic(), time.process_time()
                self._waited = self._open_s = 0.0
                return
            _close_turn(*kept)  # a writer of this Store would queue behind its own kept reading turn
        _preload(write)
        t0 = time.monotonic()
        self._turn = queue.acquire(self.path, write=write, timeout=self.busy_timeout, label=self.label,
                                   on_wait=self.on_wait)
        self._opened_at, self._opened_cpu = time.monotonic(), time.process_time()
        self._waited = self._opened_at - t0
        try:
            self._con = self._connect(read_only=not write, deadline=t0 + self.busy_timeout)
            self._open_s = time.monotonic() - self._opened_at
            if not self._migrate():  # a reading turn found an old schema: migrate it in a writing one
                self._end_turn()
                self._writing = True
                self._begin_turn()
                return
            _CHECKED[str(self.path)] = _identity(self.path)
        except BaseException:
            self._end_turn()
            raise

    def _end_turn(self, *, keep: bool = False) -> None:
        """Close the connection and give up the turn; `keep` (a session's end): a reading turn is kept open
        for `keep_open` seconds instead (_KeptTurn)."""
        if self.path is None:
            return
        con, turn = self._con, self._turn
        self._con = self._turn = None
        self._tx_depth = 0
        if keep and con is not None and turn is not None and not self._writing and self.keep_open > 0:
            self._kept.keep(con, turn, self.keep_open)
            if os.environ.get("CLAIMGRAPH_LOCK_LOG"):
                self._log_turn(turn)
            return
        t_close = time.monotonic()
        try:
            if con is not None:
                con.close()
                self._close_s = time.monotonic() - t_close
        except duckdb.Error as e:
            raise StoreError(f"closing {self.path} failed: {e}") from None
        finally:
            if turn is not None:
                turn.release()
            if con is not None and os.environ.get("CLAIMGRAPH_LOCK_LOG"):
                self._log_turn(turn)

    def _log_turn(self, turn: queue.Turn | None) -> None:
        """One JSON line per turn (CLAIMGRAPH_LOCK_LOG names the file): how long it waited and held the store."""
        rec = {"pid": os.getpid(), "label": self.label or queue._command_label(), "write": self._writing,
               "waited_s": round(self._waited, 4), "held_s": round(time.monotonic() - self._opened_at, 4),
               "cpu_s": round(time.process_time() - self._opened_cpu, 4),
               "open_s": round(self._open_s, 4), "close_s": round(self._close_s, 4),
               "queued": turn is not None, "at": time.time()}
        with open(os.environ["CLAIMGRAPH_LOCK_LOG"], "a") as f:
            f.write(json.dumps(rec) + "\n")

    def _connect(self, *, read_only: bool, deadline: float) -> duckdb.DuckDBPyConnection:
        """Open DuckDB, retrying while a process outside the queue (a duckdb shell, say) holds the file."""
        target = str(self.path)
        delay = 0.02
        while True:
            try:
                return dbconn.connect(target, read_only=read_only)
            except duckdb.IOException as e:
                msg = str(e)
                if _READONLY_RE.search(msg) and not _LOCK_RE.search(msg):
                    raise StoreError(f"cannot open {target} for writing (read-only file or mount); reading "
                                     "commands work on it") from None
                if not _LOCK_RE.search(msg):
                    raise StoreError(f"cannot open {target}: {e}") from None
                if time.monotonic() >= deadline:
                    pid = _PID_RE.search(msg)
                    who = f" (process {pid.group(1)})" if pid else ""
                    raise StoreBusy(f"the database {target} is busy: another process{who} holds it outside "
                                    f"claimgraph's queue. Waited {self.busy_timeout:g}s; try again when it "
                                    "finishes (CLAIMGRAPH_BUSY_TIMEOUT sets the wait)") from None
                time.sleep(delay)
                delay = min(delay * 1.5, 0.25)
            except duckdb.Error as e:
                raise StoreError(f"cannot open {target} as a DuckDB database: {e}") from None

    def release(self) -> None:
        """Let go of the file now (no-op in memory or inside a transaction). Inside a session, the next call
        takes a new turn, so what it reads may have changed meanwhile."""
        with self._thread_lock:
            if self.holding and self._tx_depth == 0:
                self._end_turn()
            self._kept.drop()

    def should_yield(self, *, after: float = 0.25) -> bool:
        """Whether this Store has held the file `after` seconds and another process is waiting for it (long
        work inside a transaction checks it to end the transaction early and then `yield_turn`)."""
        turn = self._turn
        return (self.holding and turn is not None and time.monotonic() - self._opened_at >= after
                and turn.others_waiting())

    def yield_turn(self, *, after: float = 0.25) -> bool:
        """Between steps of long work in a session: if the store has been held `after` seconds and another
        process is waiting for it, let go (the next call queues again, behind it). Returns whether it did."""
        with self._thread_lock:
            if self._tx_depth or not self.should_yield(after=after):
                return False
            self._end_turn()
            return True

    def close(self) -> None:
        """Let go of the file (a file store reopens on the next call); an in-memory store is gone."""
        with self._thread_lock:
            if self.path is None:
                if self._con is not None:
                    self._con.close()
                    self._con = None
            else:
                self._end_turn()
                self._kept.drop()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({str(self.path) if self.path else ':memory:'!r})"

    @property
    def home(self) -> Path:
        """Folder beside the database for run folders and other artifacts (`<db>.d/`)."""
        if self.path is None:
            raise InvalidInput("an in-memory store has no folder for runs; open the store from a file")
        return self.path.parent / (self.path.name + ".d")

    def _migrate(self) -> bool:
        """Bring the open database to SCHEMA_VERSION. False when that needs a write and this turn reads."""
        con = self._con
        assert con is not None
        try:
            have = _scalar(con, "SELECT count(*) FROM information_schema.tables WHERE table_name = 'schema_version'")
            current = _scalar(con, "SELECT coalesce(max(version), 0) FROM schema_version") if have else 0
        except duckdb.Error as e:
            raise StoreError(f"{self.path} is not a claimgraph store: {e}") from None
        if current > SCHEMA_VERSION:
            raise StoreError(f"{self.path} has schema version {current}, newer than this claimgraph "
                             f"(knows up to {SCHEMA_VERSION}); upgrade claimgraph to open it")
        if current == SCHEMA_VERSION:
            return True
        if self.path is not None and not self._writing:
            if self.read_only or not self.writable():
                raise StoreError(f"{self.path} has schema version {current}; open it once read-write "
                                 f"(any writing command, where the file is writable) to migrate it to {SCHEMA_VERSION}")
            return False
        try:
            con.execute("BEGIN TRANSACTION")
            con.execute(VERSION_TABLE)
            for m in MIGRATIONS:
                if m.version > current:
                    for stmt in m.statements:
                        con.execute(stmt)
                    if m.backfill is not None:
                        m.backfill(con)
                    con.execute("INSERT INTO schema_version VALUES (?, ?, ?)",
                                [m.version, m.description, _naive_utc(datetime.now(timezone.utc))])
            con.execute("COMMIT")
        except duckdb.Error as e:
            con.execute("ROLLBACK")
            raise StoreError(f"migrating {self.path} to schema {SCHEMA_VERSION} failed, nothing changed: {e}") from None
        return True

    @reads
    def schema_version(self) -> int:
        return _scalar(self.con, "SELECT max(version) FROM schema_version")

    @contextmanager
    def transaction(self) -> Iterator["Store"]:
        """One atomic unit of writes (in a writing session); nested uses join the outer transaction."""
        if self.read_only:
            raise InvalidInput("this store was opened read-only")
        with self.session(write=True):
            if self._tx_depth:
                self._tx_depth += 1
                try:
                    yield self
                finally:
                    self._tx_depth -= 1
                return
            con = self.con
            con.execute("BEGIN TRANSACTION")
            self._tx_depth = 1
            try:
                yield self
            except BaseException as e:
                self._tx_depth = 0
                try:
                    con.execute("ROLLBACK")
                except duckdb.Error:
                    pass
                if isinstance(e, duckdb.TransactionException):
                    raise StoreBusy(f"write conflict on {self.path}: another writer changed the same rows; "
                                    "nothing was written, try again") from None
                if isinstance(e, duckdb.Error) and not isinstance(e, ClaimgraphError):
                    raise StoreError(f"database error, nothing was written: {e}") from None
                raise
            else:
                self._tx_depth = 0
                try:
                    con.execute("COMMIT")
                except duckdb.Error as e:
                    try:
                        con.execute("ROLLBACK")
                    except duckdb.Error:
                        pass
                    raise StoreError(f"commit failed, nothing was written: {e}") from None

    @reads
    def sql(self, query: str, params: Iterable[Any] | None = None) -> list[tuple]:
        """Run read SQL against the store (for power users and tests); duckdb errors become StoreError."""
        try:
            return self.con.execute(query, list(params) if params is not None else None).fetchall()
        except duckdb.Error as e:
            raise StoreError(str(e)) from None

    @reads
    def arrow(self, query: str, params: Iterable[Any] | None = None) -> Any:
        """Run read SQL and return a pyarrow Table (for bulk reads: exports); duckdb errors become StoreError."""
        try:
            return self.con.execute(query, list(params) if params is not None else None).to_arrow_table()
        except duckdb.Error as e:
            raise StoreError(str(e)) from None

    def _arrow(self, name: str, table: Any) -> None:
        self.con.register(name, table)

    # -- nodes -----------------------------------------------------------------------------------
    _NODE_COLS = "id, type, title, text, attrs, source, source_hash, made_by, updated_at"

    @staticmethod
    def _row_to_node(row: tuple) -> Node:
        nid, ntype, title, text, attrs, source, source_hash, made_by, at = row
        return Node(id=nid, type=NodeType(ntype), title=title, text=text,
                    attrs=json.loads(attrs) if isinstance(attrs, str) else (attrs or {}),
                    provenance=Provenance(source=source, source_hash=source_hash, made_by=MadeBy(made_by), at=_aware(at)))

    @reads
    def get_node(self, node_id: str) -> Node:
        """The node with this id; NotFound says how to look for it otherwise."""
        row = self.con.execute(f"SELECT {self._NODE_COLS} FROM nodes WHERE id = ?", [node_id]).fetchone()
        if row is None:
            raise NotFound(f"no node {node_id!r}; `claimgraph search` or `claimgraph list` finds ids")
        return self._row_to_node(row)

    @reads
    def resolve_id(self, text: str, *, type: NodeType | str | None = None) -> str:
        """The node id that `text` names: the id itself, or the one id it begins (`claim:learned-feat`), or the
        one whose slug it begins when it has no `type:` (`learned-feat`); optionally only among nodes of `type`.
        An ambiguous prefix is InvalidInput listing candidates; no match is NotFound."""
        want = node_type_value(type)
        text = text.strip()
        if not text:
            raise InvalidInput("an empty node id; `claimgraph search` or `claimgraph list` finds ids")
        if self.con.execute("SELECT 1 FROM nodes WHERE id = ?", [text]).fetchone() is not None:
            return text
        rows = self.con.execute("""SELECT id, id = $1 OR split_part(id, ':', 2) = $1 AS exact FROM nodes
            WHERE ($2 IS NULL OR type = $2)
              AND (starts_with(id, $1) OR (NOT contains($1, ':') AND starts_with(split_part(id, ':', 2), $1)))
            ORDER BY NOT exact, id LIMIT 11""", [text, want]).fetchall()
        exact = [r[0] for r in rows if r[1]]
        if len(exact) == 1:
            return exact[0]
        if len(rows) == 1:
            return rows[0][0]
        what = f"{want} " if want else ""
        if not rows:
            raise NotFound(f"no {what}node {text!r}; `claimgraph search` or `claimgraph list` finds ids")
        raise InvalidInput(_ambiguous(text, f"{what}ids", [r[0] for r in rows]))

    @reads
    def resolve_run(self, text: str) -> str:
        """The run id that `text` names: the id itself or the one run id it begins; ambiguous -> InvalidInput."""
        text = text.strip()
        rows = self.con.execute("""SELECT run_id FROM runs WHERE run_id = $1 OR starts_with(run_id, $1)
            ORDER BY run_id <> $1, run_id LIMIT 11""", [text]).fetchall() if text else []
        if rows and (rows[0][0] == text or len(rows) == 1):
            return rows[0][0]
        if not rows:
            raise NotFound(f"no run {text!r}; `claimgraph runs` lists them")
        raise InvalidInput(_ambiguous(text, "run ids", [r[0] for r in rows]))

    @reads
    def has_node(self, node_id: str) -> bool:
        return self.con.execute("SELECT 1 FROM nodes WHERE id = ?", [node_id]).fetchone() is not None

    @reads
    def get_nodes(self, ids: Iterable[str]) -> dict[str, Node]:
        ids = list(dict.fromkeys(ids))
        if not ids:
            return {}
        rows = self.con.execute(f"SELECT {self._NODE_COLS} FROM nodes WHERE id = ANY(?)", [ids]).fetchall()
        return {r[0]: self._row_to_node(r) for r in rows}

    @reads
    def list_nodes(self, type: NodeType | str | None = None, *, limit: int | None = None,
                   offset: int = 0) -> Records[Node]:
        """Nodes ordered by type then id, optionally of one type; `limit`/`offset` page through them."""
        check_page(limit, offset)
        q = f"SELECT {self._NODE_COLS} FROM nodes"
        params: list[Any] = []
        if type is not None:
            q += " WHERE type = ?"
            params.append(parse_node_type(type).value)  # type: ignore[union-attr]
        q += " ORDER BY type, id"
        if limit is not None:
            q += " LIMIT ?"
            params.append(limit)
        if offset:
            q += " OFFSET ?"
            params.append(offset)
        return Records(self._row_to_node(r) for r in self.con.execute(q, params).fetchall())

    @reads
    def count_nodes(self) -> dict[str, int]:
        return dict(self.con.execute("SELECT type, count(*) FROM nodes GROUP BY type ORDER BY type").fetchall())

    @reads
    def count_edges(self) -> dict[str, int]:
        return dict(self.con.execute("SELECT type, count(*) FROM edges GROUP BY type ORDER BY type").fetchall())

    @writes
    def add_node(self, node: Node, *, made_by: MadeBy = MadeBy.manual, source: str | None = None,
                 source_hash: str | None = None) -> Node:
        """Insert or update one node outside any document (manual entry, experiment, evidence)."""
        prov = Provenance(source=source, source_hash=source_hash, made_by=made_by)
        node = node.model_copy(update={"provenance": prov})
        _validate_node(node)
        with self.transaction():
            self._upsert_nodes([node], path=None)
        return self.get_node(node.id)

    @writes
    def delete_node(self, node_id: str) -> None:
        """Remove a node with its edges, stated similarities, keyword terms and suggestions."""
        self.get_node(node_id)
        with self.transaction():
            self._delete_nodes([node_id])

    def _delete_nodes(self, ids: list[str]) -> None:
        if not ids:
            return
        c = self.con
        held = self._paper_keys_held(ids)
        for q in ("DELETE FROM edges WHERE src IN (SELECT unnest($1)) OR dst IN (SELECT unnest($1))",
                  "DELETE FROM edge_sources WHERE src IN (SELECT unnest($1)) OR dst IN (SELECT unnest($1))",
                  "DELETE FROM stated_similarity WHERE node_id IN (SELECT unnest($1)) OR other_id IN (SELECT unnest($1))",
                  "DELETE FROM node_terms WHERE node_id IN (SELECT unnest($1))",
                  "DELETE FROM node_sources WHERE node_id IN (SELECT unnest($1))",
                  "DELETE FROM suggestions WHERE a IN (SELECT unnest($1)) OR b IN (SELECT unnest($1))",
                  "DELETE FROM paper_keys WHERE paper_id IN (SELECT unnest($1))",
                  "DELETE FROM nodes WHERE id IN (SELECT unnest($1))"):
            c.execute(q, [ids])
        self._reassign_paper_keys(held)

    def _upsert_nodes(self, nodes: list[Node], *, path: str | None) -> tuple[Counter, Counter]:
        """Insert new nodes, update changed ones (attrs merged, empty text keeps the old). Returns (added, updated) by type."""
        import pyarrow as pa

        if not nodes:
            return Counter(), Counter()
        now = _naive_utc(datetime.now(timezone.utc))
        rows = {n.id: n for n in nodes}  # last one wins within a batch
        nodes = list(rows.values())
        existing = self.get_nodes(rows)
        added: Counter[str] = Counter()
        updated: Counter[str] = Counter()
        final: list[Node] = []
        for n in nodes:
            old = existing.get(n.id)
            change = _node_change(n, old)
            if change is not None:
                final.append(n.model_copy(update={"text": change[0], "attrs": change[1]}))
                (added if old is None else updated)[n.type.value] += 1
        if final:
            tbl = pa.table({
                "id": [n.id for n in final], "type": [n.type.value for n in final],
                "title": [n.title for n in final], "text": [n.text for n in final],
                "attrs": [json.dumps(n.attrs, sort_keys=True) for n in final],
                "text_hash": [text_hash(n) for n in final],
                "source": [n.provenance.source if n.provenance else path for n in final],
                "source_hash": [n.provenance.source_hash if n.provenance else None for n in final],
                "made_by": [(n.provenance.made_by if n.provenance else MadeBy.parsed).value for n in final],
                "new": [n.id not in existing for n in final],
            })
            self._arrow("_stage_nodes", tbl)
            # `existing` says which rows are new: a plain INSERT and an UPDATE cost a fraction of ON CONFLICT
            # (which checks every row against the key index under its own machinery).
            self.con.execute("""
                INSERT INTO nodes SELECT id, type, title, text, attrs::JSON, text_hash, source, source_hash, made_by,
                                         $now, $now FROM _stage_nodes WHERE new""", {"now": now})
            if len(final) > sum(added.values()):
                self.con.execute("""
                    UPDATE nodes SET title = s.title, text = s.text, attrs = s.attrs::JSON, text_hash = s.text_hash,
                        source = s.source, source_hash = s.source_hash, made_by = s.made_by, updated_at = $now
                    FROM _stage_nodes s WHERE NOT s.new AND nodes.id = s.id""", {"now": now})
            self.con.unregister("_stage_nodes")
            self._index_terms({n.id: n.embed_text() for n in final}, replace=[n.id for n in final if n.id in existing])
            self._index_paper_keys([n for n in final if n.type == NodeType.paper])
        if path is not None:
            self.con.execute("INSERT INTO node_sources SELECT unnest($1), $2 ON CONFLICT DO NOTHING",
                             [[n.id for n in nodes], path])
        return added, updated

    def _index_paper_keys(self, papers: list[Node]) -> None:
        """Keep paper_keys in step with the papers' DOI, arXiv id and normalised title (first paper keeps a key)."""
        if not papers:
            return
        ids = [p.id for p in papers]
        held = self._paper_keys_held(ids)
        self.con.execute("DELETE FROM paper_keys WHERE paper_id IN (SELECT unnest(?))", [ids])
        keys = [(k, p.id) for p in papers for k in paper_keys(p.title, p.attrs)]
        if keys:
            self.con.execute("INSERT INTO paper_keys SELECT unnest($1), unnest($2) ON CONFLICT DO NOTHING",
                             [[k for k, _ in keys], [i for _, i in keys]])
        self._reassign_paper_keys(held - {k for k, _ in keys})

    def _paper_keys_held(self, paper_ids: list[str]) -> set[str]:
        return {r[0] for r in self.con.execute("SELECT key FROM paper_keys WHERE paper_id IN (SELECT unnest(?))",
                                               [paper_ids]).fetchall()}

    def _reassign_paper_keys(self, freed: set[str]) -> None:
        """Keys a paper gave up (deleted, or its DOI/arXiv id/title changed) go to the next stored paper that
        carries them (two papers can: `add_node` does not merge papers), so ingest still finds that one."""
        if freed:
            assign_paper_keys(self.con, only=freed)

    def _index_terms(self, texts: dict[str, str], *, replace: list[str]) -> None:
        """Keyword terms of each node's embed text (`texts`: id -> text); `replace`: the ids among them that are
        stored already, whose old terms go first (a new node has none: deleting for it would scan the table)."""
        import pyarrow as pa

        ids, terms, tfs = [], [], []
        for nid, text in texts.items():
            counts = term_counts(text)
            if counts:  # a text without a term has no row
                ids.append(nid)
                terms.append(list(counts))
                tfs.append(list(counts.values()))
        if replace:
            self.con.execute("DELETE FROM node_terms WHERE node_id IN (SELECT unnest(?))", [replace])
        if ids:
            self._arrow("_stage_terms", pa.table({"node_id": ids, "terms": pa.array(terms, pa.list_(pa.string())),
                                                  "tfs": pa.array(tfs, pa.list_(pa.int32()))}))
            self.con.execute("INSERT INTO node_terms SELECT * FROM _stage_terms")
            self.con.unregister("_stage_terms")

    # -- edges -----------------------------------------------------------------------------------
    _EDGE_COLS = "src, type, dst, attrs, source, source_hash, made_by, updated_at"

    @staticmethod
    def _row_to_edge(row: tuple) -> Edge:
        src, etype, dst, attrs, source, source_hash, made_by, at = row
        return Edge(src=src, type=EdgeType(etype), dst=dst,
                    attrs=json.loads(attrs) if isinstance(attrs, str) else (attrs or {}),
                    provenance=Provenance(source=source, source_hash=source_hash, made_by=MadeBy(made_by), at=_aware(at)))

    @reads
    def edges(self, node_id: str | None = None, *, direction: str = "both",
              type: EdgeType | str | None = None) -> Records[Edge]:
        """Edges touching `node_id` (out, in or both), or all edges; optionally of one type."""
        want = EdgeType(type).value if type is not None else None
        if node_id is None:
            q = f"SELECT {self._EDGE_COLS} FROM edges" + (" WHERE type = ?" if want else "") + " ORDER BY src, type, dst"
            return Records(self._row_to_edge(r) for r in self.con.execute(q, [want] if want else []).fetchall())
        # one lookup per end through its index; the type is filtered here, since a second condition (or an OR of
        # both ends) makes DuckDB scan the whole table instead (tens of ms at a million nodes)
        ends = {"out": ["src"], "in": ["dst"]}.get(direction, ["src", "dst"])
        rows = {tuple(r[:3]): r for end in ends for r in
                self.con.execute(f"SELECT {self._EDGE_COLS} FROM edges WHERE {end} = ?", [node_id]).fetchall()}
        return Records(self._row_to_edge(r) for k, r in sorted(rows.items()) if want is None or k[1] == want)

    @writes
    def link(self, src: str, type: EdgeType | str, dst: str, *, attrs: dict[str, Any] | None = None,
             made_by: MadeBy = MadeBy.manual, source: str | None = None, source_hash: str | None = None) -> Edge:
        """Add (or update the attributes of) one typed edge between existing nodes."""
        etype = parse_edge_type(type)
        edge = Edge(src=src, type=etype, dst=dst, attrs=attrs or {},
                    provenance=Provenance(source=source, source_hash=source_hash, made_by=made_by))
        with self.transaction():
            nodes = self.get_nodes([src, dst])
            for end in (src, dst):
                if end not in nodes:
                    raise NotFound(f"no node {end!r}; an edge needs both ends in the store")
            _check_edge(edge, nodes[src].type, nodes[dst].type)
            self._upsert_edges([edge], path=None)
        return self.get_edge(src, etype, dst)

    @reads
    def get_edge(self, src: str, type: EdgeType | str, dst: str) -> Edge:
        row = self.con.execute(f"SELECT {self._EDGE_COLS} FROM edges WHERE src = ? AND type = ? AND dst = ?",
                               [src, EdgeType(type).value, dst]).fetchone()
        if row is None:
            raise NotFound(f"no edge {src} -{EdgeType(type).value}-> {dst}")
        return self._row_to_edge(row)

    @writes
    def unlink(self, src: str, type: EdgeType | str, dst: str, *, reason: str | None = None,
               removed_by: MadeBy = MadeBy.manual) -> RemovedEdge:
        """Remove one typed edge. The removal is kept on record (`removed_edges`): the edge with its provenance
        as it was, and who removed it, when and why. Returns that record."""
        etype = parse_edge_type(type)
        key = [src, etype.value, dst]
        with self.transaction():
            row = self.con.execute("""SELECT attrs, source, source_hash, made_by, updated_at FROM edges
                WHERE src = ? AND type = ? AND dst = ?""", key).fetchone()
            if row is None:
                others = self.con.execute("""SELECT src, type, dst FROM edges WHERE (src = $1 AND dst = $2)
                    OR (src = $2 AND dst = $1) ORDER BY type""", [src, dst]).fetchall()
                hint = ("; the edges between them: " + ", ".join(f"{s} -{t}-> {d}" for s, t, d in others)
                        if others else "")
                raise NotFound(f"no edge {src} -{etype.value}-> {dst}{hint}")
            attrs, source, source_hash, made_by, written = row
            now = datetime.now(timezone.utc)
            self.con.execute("DELETE FROM edges WHERE src = ? AND type = ? AND dst = ?", key)
            self.con.execute("DELETE FROM edge_sources WHERE src = ? AND type = ? AND dst = ?", key)
            self.con.execute("INSERT INTO removed_edges VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                             [*key, attrs, source, source_hash, made_by, written, MadeBy(removed_by).value, reason,
                              _naive_utc(now)])
        return RemovedEdge(src=src, type=etype, dst=dst, attrs=json.loads(attrs) if isinstance(attrs, str) else attrs,
                           provenance=Provenance(source=source, source_hash=source_hash, made_by=MadeBy(made_by),
                                                 at=_aware(written)),
                           removed_by=removed_by, reason=reason, removed_at=now)

    @reads
    def removed_edges(self, node_id: str | None = None) -> Records[RemovedEdge]:
        """Edges `unlink` removed (touching `node_id`, or all), newest first."""
        where = "WHERE src = $1 OR dst = $1" if node_id is not None else ""
        rows = self.con.execute(f"""SELECT src, type, dst, attrs, source, source_hash, made_by, written_at, removed_by,
            reason, removed_at FROM removed_edges {where} ORDER BY removed_at DESC""",
                                [node_id] if node_id is not None else []).fetchall()
        return Records(RemovedEdge(src=r[0], type=EdgeType(r[1]), dst=r[2],
                                   attrs=json.loads(r[3]) if isinstance(r[3], str) else r[3],
                                   provenance=Provenance(source=r[4], source_hash=r[5], made_by=MadeBy(r[6]),
                                                         at=_aware(r[7])),
                                   removed_by=MadeBy(r[8]), reason=r[9], removed_at=_aware(r[10])) for r in rows)

    def _upsert_edges(self, edges: list[Edge], *, path: str | None) -> Counter:
        import pyarrow as pa

        if not edges:
            return Counter()
        now = _naive_utc(datetime.now(timezone.utc))
        uniq = {e.key: e for e in edges}
        keys = list(uniq)
        # By source (indexed, migration 4), then the exact keys here: a tuple IN scans the whole table.
        have = {(s, t, d): json.loads(a) if isinstance(a, str) else a for s, t, d, a in self.con.execute(
            "SELECT src, type, dst, attrs FROM edges WHERE src IN (SELECT unnest($1))",
            [sorted({k[0] for k in keys})]).fetchall() if (s, t, d) in uniq}
        added: Counter[str] = Counter()
        write = []
        for k, e in uniq.items():
            attrs = _clean_attrs(e.attrs)
            if k not in have:
                added[e.type.value] += 1
                write.append((e, attrs))
            elif {**have[k], **attrs} != have[k]:
                write.append((e, {**have[k], **attrs}))
        if write:
            tbl = pa.table({
                "src": [e.src for e, _ in write], "type": [e.type.value for e, _ in write],
                "dst": [e.dst for e, _ in write], "attrs": [json.dumps(a, sort_keys=True) for _, a in write],
                "source": [e.provenance.source if e.provenance else path for e, _ in write],
                "source_hash": [e.provenance.source_hash if e.provenance else None for e, _ in write],
                "made_by": [(e.provenance.made_by if e.provenance else MadeBy.parsed).value for e, _ in write],
                "new": [e.key not in have for e, _ in write],
            })
            self._arrow("_stage_edges", tbl)
            # `have` says which rows are new: a plain INSERT and an UPDATE instead of ON CONFLICT (see nodes)
            self.con.execute("""
                INSERT INTO edges SELECT src, type, dst, attrs::JSON, source, source_hash, made_by, $now, $now
                FROM _stage_edges WHERE new""", {"now": now})
            if len(write) > sum(added.values()):
                self.con.execute("""
                    UPDATE edges SET attrs = s.attrs::JSON, updated_at = $now FROM _stage_edges s
                    WHERE NOT s.new AND edges.src = s.src AND edges.type = s.type AND edges.dst = s.dst""",
                                 {"now": now})
            self.con.unregister("_stage_edges")
        if path is not None:
            self.con.execute("INSERT INTO edge_sources SELECT unnest($1), unnest($2), unnest($3), $4 ON CONFLICT DO NOTHING",
                             [[k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys], path])
        return added

    @reads
    def degrees(self, ids: Iterable[str]) -> dict[str, int]:
        """Typed-edge count of each node (both directions)."""
        ids = list(ids)
        if not ids:
            return {}
        out = dict.fromkeys(ids, 0)
        for end in ("src", "dst"):  # one indexed lookup per end (a union of both scans the table)
            for node, count in self.con.execute(f"SELECT {end}, count(*) FROM edges WHERE {end} = ANY(?) GROUP BY {end}",
                                                [ids]).fetchall():
                out[node] += count
        return out

    # -- documents -------------------------------------------------------------------------------
    @reads
    def document(self, path: str) -> DocumentRef | None:
        row = self.con.execute("SELECT path, content_hash, format, title FROM documents WHERE path = ?", [path]).fetchone()
        return DocumentRef(path=row[0], content_hash=row[1], format=row[2], title=row[3]) if row else None

    @reads
    def documents(self) -> Records[DocumentRef]:
        return Records(DocumentRef(path=r[0], content_hash=r[1], format=r[2], title=r[3]) for r in
                       self.con.execute("SELECT path, content_hash, format, title FROM documents ORDER BY path").fetchall())

    @reads
    def stated_similar(self, node_id: str) -> list[StatedSimilarity]:
        rows = self.con.execute("""SELECT node_id, other_id, other_title, other_type, other_text, score
            FROM stated_similarity WHERE node_id = ? ORDER BY score DESC NULLS LAST, other_title""", [node_id]).fetchall()
        return [StatedSimilarity(node_id=r[0], other_id=r[1], other_title=r[2],
                                 other_type=NodeType(r[3]) if r[3] else None, other_text=r[4], score=r[5]) for r in rows]

    @reads
    def resolve_papers(self, delta: GraphDelta) -> GraphDelta:
        """Map paper nodes of a delta onto papers already stored under the same DOI, arXiv id or normalised title."""
        return _resolve_papers(delta, self._paper_key_owners)

    def _paper_key_owners(self, keys: list[str]) -> dict[str, str]:
        """key -> the paper that holds it, for the keys among `keys` that a stored paper holds."""
        return dict(self.con.execute("SELECT key, paper_id FROM paper_keys WHERE key IN (SELECT unnest(?))",
                                     [keys]).fetchall()) if keys else {}

    @writes
    def apply(self, delta: GraphDelta, document: DocumentRef,
              vectors: dict[str, Any] | None = None, model: str | None = None) -> ApplyReport:
        """Write what one document says, in one transaction.

        The same document (path and content hash) again is a no-op. A changed document updates its
        nodes in place, and nodes and edges only it had mentioned, and no longer does, are removed
        (unless a person or an experiment linked them since). `vectors` maps text hashes to
        embeddings computed beforehand, so the encoder never runs while the database is held.
        """
        report = ApplyReport(path=document.path, format=document.format)
        prior = self.document(document.path)
        if prior is not None and prior.content_hash == document.content_hash:
            report.unchanged = True
            report.node_ids = [r[0] for r in self.con.execute(
                "SELECT node_id FROM node_sources WHERE path = ? ORDER BY node_id", [document.path]).fetchall()]
            return report
        delta = self.resolve_papers(delta)
        prov = Provenance(source=document.path, source_hash=document.content_hash, made_by=MadeBy.parsed)
        nodes = [n.model_copy(update={"provenance": n.provenance or prov}) for n in delta.nodes]
        edges = [e.model_copy(update={"provenance": e.provenance or prov}) for e in delta.edges]
        with self.transaction():
            _check_document(nodes, edges, document.path,
                            lambda ids: {k: v.type for k, v in self.get_nodes(ids).items()})
            added, updated = self._upsert_nodes(nodes, path=document.path)
            edges_added = self._upsert_edges(edges, path=document.path)
            self._put_stated_similar(delta.similar, prov)
            if prior is not None:
                report.nodes_removed, report.edges_removed = self._drop_stale(document.path, nodes, edges,
                                                                              delta.similar)
            if vectors:
                self.put_embeddings(vectors, model or "unknown")
            self.con.execute("""INSERT INTO documents VALUES (?, ?, ?, ?, ?) ON CONFLICT (path) DO UPDATE SET
                content_hash = excluded.content_hash, format = excluded.format, title = excluded.title,
                ingested_at = excluded.ingested_at""",
                             [document.path, document.content_hash, document.format, document.title,
                              _naive_utc(datetime.now(timezone.utc))])
        report.nodes_added, report.nodes_updated, report.edges_added = dict(added), dict(updated), dict(edges_added)
        report.node_ids = sorted({n.id for n in nodes})
        return report

    @contextmanager
    def bulk(self, model: str | None = None) -> Iterator["BulkApply"]:
        """A BulkApply over this store inside one transaction: documents given to its `apply` are checked one by
        one and written together when the block ends (or at its `flush()`). An exception out of the block
        rolls back everything it wrote; a document refused inside it (InvalidDocument caught there) writes
        nothing and leaves the block's other documents to be written."""
        with self.session(write=True):
            self._defer_checkpoints()
            with self.transaction():
                bulk = BulkApply(self, model)
                yield bulk
                bulk.flush()

    def _defer_checkpoints(self) -> None:
        """Let the write-ahead log grow to four times the file's size (at least DuckDB's default 16 MiB, at most
        1 GiB) before DuckDB checkpoints on a commit; the file is checkpointed when the turn ends anyway. A
        checkpoint rewrites the tables' indexes whole, so at the fixed 16 MiB a long ingest paid one every few
        groups, each costing more as the store grew (at 100k nodes the commits took 94 s of a 139 s write);
        a threshold that grows with the file keeps their total cost proportional to what is written."""
        if self.path is None or self._tx_depth:
            return
        try:
            size = self.path.stat().st_size
        except OSError:
            return
        self.con.execute(f"SET checkpoint_threshold = '{min(max(16 << 20, 4 * size), 1 << 30)}B'")

    @writes
    def apply_many(self, items: Iterable[tuple[GraphDelta, DocumentRef, dict[str, Any] | None]], *,
                   model: str | None = None) -> list[ApplyReport]:
        """Apply documents (delta, document, vectors) in order, in one transaction, with one insert per table for
        all of them: the same result as `apply` on each in turn. A refused document (InvalidDocument) writes
        nothing: the documents before it are committed, those after it are not applied, and the error is
        raised. Any other error writes nothing at all."""
        reports: list[ApplyReport] = []
        refused: InvalidDocument | None = None
        with self.bulk(model) as bulk:
            items = list(items)
            bulk.prefetch([d for d, _, _ in items], [ref.path for _, ref, _ in items])
            for delta, ref, vectors in items:
                if bulk.touches(delta, ref):
                    bulk.flush()
                try:
                    reports.append(bulk.apply(delta, ref, vectors=vectors))
                except InvalidDocument as e:
                    refused = e
                    break
        if refused is not None:
            raise refused
        return reports

    def _put_stated_similar(self, similar: list[StatedSimilarity], prov: Provenance) -> None:
        now = _naive_utc(datetime.now(timezone.utc))
        for s in similar:
            key = _similar_key(s)
            self.con.execute("""INSERT INTO stated_similarity VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT (node_id, other_key) DO UPDATE SET other_title = excluded.other_title,
                other_type = excluded.other_type, other_text = excluded.other_text, score = excluded.score,
                source = excluded.source, source_hash = excluded.source_hash""",
                             [s.node_id, key, s.other_id, s.other_title, s.other_type.value if s.other_type else None,
                              s.other_text, s.score, prov.source, prov.source_hash, now])

    def _drop_stale(self, path: str, nodes: list[Node], edges: list[Edge],
                    similar: list[StatedSimilarity]) -> tuple[dict, dict]:
        """After re-ingest of a changed document: forget what it no longer says."""
        c = self.con
        c.execute("""DELETE FROM stated_similarity WHERE source = $1
            AND (node_id, other_key) NOT IN (SELECT (unnest($2), unnest($3)))""",
                  [path, [s.node_id for s in similar], [_similar_key(s) for s in similar]])
        keep_nodes = [n.id for n in nodes]
        stale_edges = c.execute("""SELECT src, type, dst FROM edge_sources WHERE path = $1
            AND (src, type, dst) NOT IN (SELECT (unnest($2), unnest($3), unnest($4)))""",
                                [path, [e.src for e in edges], [e.type.value for e in edges],
                                 [e.dst for e in edges]]).fetchall()
        edges_removed: Counter = Counter()
        for s, t, d in stale_edges:
            c.execute("DELETE FROM edge_sources WHERE src = ? AND type = ? AND dst = ? AND path = ?", [s, t, d, path])
            others = _scalar(c, "SELECT count(*) FROM edge_sources WHERE src = ? AND type = ? AND dst = ?", [s, t, d])
            if not others:
                n = c.execute("DELETE FROM edges WHERE src = ? AND type = ? AND dst = ? AND made_by = 'parsed' RETURNING 1",
                              [s, t, d]).fetchall()
                edges_removed[t] += len(n)
        stale = [r[0] for r in c.execute(
            "SELECT node_id FROM node_sources WHERE path = $1 AND node_id NOT IN (SELECT unnest($2))",
            [path, keep_nodes]).fetchall()]
        c.execute("DELETE FROM node_sources WHERE path = $1 AND node_id IN (SELECT unnest($2))", [path, stale])
        c.execute("DELETE FROM stated_similarity WHERE source = $1 AND node_id IN (SELECT unnest($2))", [path, stale])
        orphans = [r[0] for r in c.execute("""
            SELECT id FROM nodes WHERE id IN (SELECT unnest($1)) AND made_by = 'parsed'
              AND id NOT IN (SELECT node_id FROM node_sources)
              AND id NOT IN (SELECT src FROM edges WHERE made_by <> 'parsed')
              AND id NOT IN (SELECT dst FROM edges WHERE made_by <> 'parsed')""", [stale]).fetchall()]
        nodes_removed = Counter(parse_id(i)[0].value for i in orphans)
        self._delete_nodes(orphans)
        return dict(nodes_removed), dict(edges_removed)

    # -- embeddings ------------------------------------------------------------------------------
    @reads
    def missing_embeddings(self, hashes: Iterable[str], model: str) -> set[str]:
        """The text hashes among `hashes` with no stored vector for `model`."""
        hashes = list(set(hashes))
        if not hashes:
            return set()
        have = {r[0] for r in self.con.execute(
            "SELECT text_hash FROM embeddings WHERE model = ? AND text_hash IN (SELECT unnest(?))",
            [model, hashes]).fetchall()}
        return set(hashes) - have

    @writes
    def put_embeddings(self, vectors: dict[str, Any], model: str) -> None:
        """Store L2-normalised vectors by text hash (existing ones are kept)."""
        import numpy as np
        import pyarrow as pa

        if not vectors:
            return
        keys = list(vectors)
        mat = np.asarray([vectors[k] for k in keys], dtype=np.float32).reshape(len(keys), -1)
        if mat.shape[1] != EMBED_DIM:
            raise InvalidInput(f"embeddings must have {EMBED_DIM} dimensions, got {mat.shape[1]}")
        with self.transaction():
            # the stored ones are set aside first, so that the rest is a plain INSERT (ON CONFLICT DO NOTHING,
            # which checks every row against the key under its own machinery, cost 70-100 ms per 1,280 vectors
            # at 100k stored; the lookup a few ms)
            have = {r[0] for r in self.con.execute(
                "SELECT text_hash FROM embeddings WHERE model = ? AND text_hash IN (SELECT unnest(?))",
                [model, keys]).fetchall()}
            keep = [i for i, k in enumerate(keys) if k not in have]
            if not keep:
                return
            if len(keep) < len(keys):
                keys, mat = [keys[i] for i in keep], mat[keep]
            tbl = pa.table({"text_hash": keys,
                            "vector": pa.FixedSizeListArray.from_arrays(pa.array(mat.reshape(-1)), EMBED_DIM)})
            self._arrow("_stage_vec", tbl)
            self.con.execute("INSERT INTO embeddings SELECT text_hash, ?, vector, ? FROM _stage_vec",
                             [model, _naive_utc(datetime.now(timezone.utc))])
            self.con.unregister("_stage_vec")

    @reads
    def node_vectors(self, model: str, *, type: NodeType | str | None = None,
                     ids: Iterable[str] | None = None) -> tuple[list[str], Any]:
        """(node ids, float32 matrix [n, 384]) of embedded nodes, ordered by id."""
        import numpy as np

        where: list[str] = ["e.model = ?"]
        params: list[Any] = [model]
        if type is not None:
            where.append("n.type = ?"); params.append(NodeType(type).value)
        if ids is not None:
            where.append("n.id IN (SELECT unnest(?))"); params.append(list(ids))
        tbl = self.con.execute(f"""SELECT n.id, e.vector FROM nodes n JOIN embeddings e ON e.text_hash = n.text_hash
            WHERE {' AND '.join(where)} ORDER BY n.id""", params).to_arrow_table()
        node_ids = tbl.column("id").to_pylist()
        if not node_ids:
            return [], np.zeros((0, EMBED_DIM), dtype=np.float32)
        vec = tbl.column("vector").combine_chunks()
        mat = vec.values.to_numpy(zero_copy_only=False).reshape(len(node_ids), EMBED_DIM)
        return node_ids, mat

    @reads
    def unembedded_nodes(self, model: str) -> list[Node]:
        rows = self.con.execute(f"""SELECT {', '.join('n.' + c.strip() for c in self._NODE_COLS.split(','))}
            FROM nodes n LEFT JOIN embeddings e ON e.text_hash = n.text_hash AND e.model = ?
            WHERE e.text_hash IS NULL ORDER BY n.id""", [model]).fetchall()
        return [self._row_to_node(r) for r in rows]

    # -- runs (written by claimgraph.experiments) -----------------------------------------------
    _RUN_COLS = ("run_id", "experiment_id", "config_hash", "status", "device", "run_dir", "pid", "host",
                 "created_at", "started_at", "ended_at", "error", "verdict", "evidence_id")

    @writes
    def put_run(self, **fields: Any) -> None:
        """Insert or update a run record; unknown fields are refused."""
        bad = set(fields) - set(self._RUN_COLS)
        if bad:
            raise InvalidInput(f"unknown run field(s): {', '.join(sorted(bad))}")
        if "run_id" not in fields:
            raise InvalidInput("a run record needs run_id")
        fields = {k: _naive_utc(v) if isinstance(v, datetime) else v for k, v in fields.items()}
        if fields.get("run_dir") is not None:  # portable: relative to the store's folder (graph/portable.py)
            fields["run_dir"] = stored_path(self, fields["run_dir"])
        with self.transaction():
            exists = self.con.execute("SELECT 1 FROM runs WHERE run_id = ?", [fields["run_id"]]).fetchone()
            if exists:
                sets = ", ".join(f"{k} = ?" for k in fields if k != "run_id")
                if sets:
                    self.con.execute(f"UPDATE runs SET {sets} WHERE run_id = ?",
                                     [v for k, v in fields.items() if k != "run_id"] + [fields["run_id"]])
            else:
                fields.setdefault("created_at", _naive_utc(datetime.now(timezone.utc)))
                fields.setdefault("host", socket.gethostname())
                cols = ", ".join(fields)
                self.con.execute(f"INSERT INTO runs ({cols}) VALUES ({', '.join('?' * len(fields))})", list(fields.values()))

    @reads
    def runs(self, experiment_id: str | None = None, *, run_id: str | None = None,
             config_hash: str | None = None, status: str | None = None) -> Records[dict[str, Any]]:
        """Run records, newest first, as dicts of the runs table's columns."""
        where, params = [], []
        for col, val in (("experiment_id", experiment_id), ("run_id", run_id), ("config_hash", config_hash),
                         ("status", status)):
            if val is not None:
                where.append(f"{col} = ?"); params.append(val)
        q = f"SELECT {', '.join(self._RUN_COLS)} FROM runs" + (" WHERE " + " AND ".join(where) if where else "")
        rows = self.con.execute(q + " ORDER BY created_at DESC, run_id DESC", params).fetchall()
        out = [{k: (_aware(v) if isinstance(v, datetime) else v) for k, v in zip(self._RUN_COLS, r)} for r in rows]
        for row in out:  # recorded relative to the store's folder; given back as a path on this machine
            row["run_dir"] = str(local_path(self, str(row["run_dir"])))
        return Records(out)

    # -- bulk import (claimgraph.graph.exchange, `claimgraph import`) ----------------------------------------
    _CONTENT_TABLES = ("nodes", "edges", "documents", "stated_similarity", "suggestions", "runs")

    @reads
    def is_empty(self) -> bool:
        """True when the store holds no nodes, edges, documents, similarities, suggestions or runs."""
        return not any(_scalar(self.con, f"SELECT count(*) FROM {t}") for t in self._CONTENT_TABLES)

    @writes
    def import_rows(self, tables: dict[str, Any]) -> dict[str, int]:
        """Write exported rows (`claimgraph.graph.exchange.snapshot.COLUMNS` per table) into this empty store in
        one transaction, keeping their timestamps and provenance. Nodes and edges are validated as ingest
        validates them; the keyword index and paper identity keys are rebuilt. A table is a list of row dicts, or a
        pyarrow Table with those columns (suggestions and vectors from Parquet). Returns rows written per table."""
        import pyarrow as pa

        from .exchange.snapshot import COLUMNS

        unknown = set(tables) - set(COLUMNS)
        if unknown:
            raise InvalidInput(f"unknown table(s) {', '.join(sorted(unknown))}; known: {', '.join(COLUMNS)}")
        if not self.is_empty():
            raise InvalidInput(f"{self.path or 'the store'} is not empty ({sum(self.count_nodes().values())} nodes); "
                               "import into a new store: --db NEW.duckdb")
        nodes = self._import_check(tables)
        counts: dict[str, int] = {}
        with self.transaction():
            for name, cols in COLUMNS.items():
                rows = tables.get(name)
                if isinstance(rows, pa.Table):  # bulk tables from Parquet, inserted as they are
                    counts[name] = rows.num_rows
                    select = [f"vector::FLOAT[{EMBED_DIM}]" if c == "vector" else c for c in cols]
                    self._arrow("_stage_import", rows.select(list(cols)))
                    self.con.execute(f"INSERT INTO {name} ({', '.join(cols)}) SELECT {', '.join(select)} "
                                     "FROM _stage_import")
                    self.con.unregister("_stage_import")
                    continue
                rows = rows or []
                counts[name] = len(rows)
                if not rows:
                    continue
                data: dict[str, list[Any]] = {c: [r.get(c) for r in rows] for c in cols}
                select = list(cols)
                if name in ("nodes", "edges"):
                    data["attrs"] = [json.dumps(a or {}, sort_keys=True) for a in data["attrs"]]
                    select[select.index("attrs")] = "attrs::JSON"
                for c in ("created_at", "updated_at", "ingested_at", "decided_at", "started_at", "ended_at"):
                    if c in data:
                        data[c] = [_naive_utc(v) for v in data[c]]
                if name == "nodes":
                    data["text_hash"] = [text_hash(nodes[i]) for i in data["id"]]
                    select.append("text_hash")
                if name == "embeddings":
                    select[select.index("vector")] = f"vector::FLOAT[{EMBED_DIM}]"
                self._arrow("_stage_import", pa.table(data))
                target = [c for c in cols] + (["text_hash"] if name == "nodes" else [])
                self.con.execute(f"INSERT INTO {name} ({', '.join(target)}) SELECT {', '.join(select)} "
                                 "FROM _stage_import")
                self.con.unregister("_stage_import")
            self._index_terms({i: n.embed_text() for i, n in nodes.items()}, replace=[])
            assign_paper_keys(self.con)
        return counts

    @staticmethod
    def _import_check(tables: dict[str, Any]) -> dict[str, Node]:
        """Validate imported rows as ingest would (ids, attrs, edge rules, references); the nodes by id."""
        nodes: dict[str, Node] = {}
        for r in tables.get("nodes") or []:
            where = f"nodes row {r.get('id')!r}"
            if r.get("id") in nodes:
                raise InvalidInput(f"{where}: the id appears twice")
            try:
                n = Node(id=r["id"], type=r["type"], title=r["title"], text=r.get("text") or "",
                         attrs=r.get("attrs") or {})
                MadeBy(r["made_by"])
            except (KeyError, ValueError) as e:
                raise InvalidInput(f"{where}: {e}") from None
            if n.title != r["title"]:
                raise InvalidInput(f"{where}: title {r['title']!r} has surrounding whitespace")
            try:
                _validate_node(n)
            except InvalidInput as e:
                raise InvalidInput(f"{where}: {e}") from None
            nodes[n.id] = n
        seen: set[tuple[str, str, str]] = set()
        for r in tables.get("edges") or []:
            key = (r.get("src"), r.get("type"), r.get("dst"))
            where = f"edges row {key[0]} -{key[1]}-> {key[2]}"
            try:
                edge = Edge(src=r["src"], type=r["type"], dst=r["dst"], attrs=r.get("attrs") or {})
                MadeBy(r["made_by"])
            except (KeyError, ValueError) as err:
                raise InvalidInput(f"{where}: {err}") from None
            missing = [x for x in (edge.src, edge.dst) if x not in nodes]
            if missing:
                raise InvalidInput(f"{where}: no node {missing[0]!r} among the imported nodes")
            if edge.key in seen:
                raise InvalidInput(f"{where}: the edge appears twice")
            seen.add(edge.key)
            try:
                _check_edge(edge, nodes[edge.src].type, nodes[edge.dst].type)
            except InvalidInput as err:
                raise InvalidInput(f"{where}: {err}") from None
        refs = (("node_sources", ("node_id",)), ("stated_similarity", ("node_id",)), ("suggestions", ("a", "b")))
        for name, cols in refs:
            rows = tables.get(name)
            if rows is not None and not isinstance(rows, list):  # an Arrow table: checked column-wise
                import pyarrow as pa
                import pyarrow.compute as pc

                known = pa.array(list(nodes), pa.string())
                for c in cols:
                    bad = pc.filter(rows[c], pc.invert(pc.is_in(rows[c], value_set=known)))
                    if len(bad):
                        raise InvalidInput(f"{name} row: {c} {bad[0].as_py()!r} is not among the imported nodes")
                continue
            for r in rows or []:
                for c in cols:
                    if r.get(c) not in nodes:
                        raise InvalidInput(f"{name} row: {c} {r.get(c)!r} is not among the imported nodes")
        _check_pairs(tables.get("suggestions"))
        for r in tables.get("edge_sources") or []:
            if (r.get("src"), r.get("type"), r.get("dst")) not in seen:
                raise InvalidInput(f"edge_sources row: no edge {r.get('src')} -{r.get('type')}-> {r.get('dst')} "
                                   "among the imported edges")
        emb = tables.get("embeddings")
        for r in emb if isinstance(emb, list) else []:  # an Arrow table's type fixes the length already
            if len(r.get("vector") or []) != EMBED_DIM:
                raise InvalidInput(f"embeddings row {r.get('text_hash')!r}: a vector of {EMBED_DIM} numbers expected")
        return nodes


def _check_pairs(rows: Any) -> None:
    """Imported suggestions: each pair once, in sorted order (a < b), as the store keeps them (the table has no key
    since schema migration 8, so nothing else would stop a second row for a pair). Rows are a list of dicts or an
    Arrow table (from Parquet, millions of rows): both are checked column-wise."""
    if rows is None:
        return
    import pyarrow as pa
    import pyarrow.compute as pc

    if isinstance(rows, list):  # ends are known node ids by now (checked before), so strings
        t = pa.table({"a": pa.array([r.get("a") for r in rows], pa.string()),
                      "b": pa.array([r.get("b") for r in rows], pa.string())})
    else:
        t = rows.select(["a", "b"])
    unsorted = t.filter(pc.invert(pc.fill_null(pc.less(t["a"], t["b"]), False)))
    if unsorted.num_rows:
        a, b = unsorted["a"][0].as_py(), unsorted["b"][0].as_py()
        raise InvalidInput(f"suggestions row {a} / {b}: a pair is stored in sorted order (a < b)")
    counts = t.group_by(["a", "b"]).aggregate([("a", "count")])
    twice = counts.filter(pc.greater(counts["a_count"], 1))
    if twice.num_rows:
        a, b = twice["a"][0].as_py(), twice["b"][0].as_py()
        raise InvalidInput(f"suggestions row {a} / {b}: the pair appears twice")


def _similar_key(s: StatedSimilarity) -> str:
    return s.other_id or f"untyped:{slugify(s.other_title)}"


def _validate_node(node: Node) -> None:
    ntype, _ = parse_id(node.id)
    if ntype != node.type:
        raise InvalidInput(f"node {node.id!r} has type {node.type.value!r} but its id says {ntype.value!r}")
    model = ATTRS_MODELS.get(node.type)
    if model is not None:
        from pydantic import ValidationError

        try:
            model.model_validate(node.attrs)
        except ValidationError as e:
            first = e.errors()[0]
            loc = ".".join(str(x) for x in first["loc"])
            raise InvalidInput(f"node {node.id}: attrs.{loc}: {first['msg']}") from None


def _check_edge(edge: Edge, src_type: NodeType, dst_type: NodeType) -> None:
    if edge.src == edge.dst:
        raise InvalidInput(f"edge {edge.src} -{edge.type.value}-> itself: a node cannot relate to itself")
    allowed_src, allowed_dst = EDGE_RULES[edge.type]
    if allowed_src is not None and src_type not in allowed_src:
        raise InvalidInput(f"a {edge.type.value} edge cannot start at a {src_type.value} ({edge.src}); "
                           f"it starts at: {', '.join(sorted(t.value for t in allowed_src))}")
    if allowed_dst is not None and dst_type not in allowed_dst:
        raise InvalidInput(f"a {edge.type.value} edge cannot end at a {dst_type.value} ({edge.dst}); "
                           f"it ends at: {', '.join(sorted(t.value for t in allowed_dst))}")
    if edge.type == EdgeType.duplicate_of and src_type != dst_type:
        raise InvalidInput(f"duplicate_of joins two nodes of the same type, not {src_type.value} and {dst_type.value}")


def _check_document(nodes: list[Node], edges: list[Edge], path: str,
                    stored_types: Callable[[set[str]], dict[str, NodeType]]) -> None:
    """Every check `apply` makes of one document before it writes any of it: each node valid, every edge end
    defined by the document or stored (`stored_types` looks up the others), each edge allowed between the types
    of its ends. Raises InvalidDocument naming the path."""
    for n in nodes:
        try:
            _validate_node(n)
        except InvalidInput as err:
            raise InvalidDocument(str(err), path=path, field=n.id) from None
    types = {n.id: n.type for n in nodes}
    missing = {x for e in edges for x in (e.src, e.dst) if x not in types}
    if missing:
        types.update(stored_types(missing))
        gone = sorted(missing - set(types))
        if gone:
            raise InvalidDocument(f"edge refers to unknown node(s) {', '.join(gone)}", path=path)
    for e in edges:
        try:
            _check_edge(e, types[e.src], types[e.dst])
        except InvalidInput as err:
            raise InvalidDocument(str(err), path=path) from None


def _node_change(n: Node, old: Node | None) -> tuple[str, dict[str, Any]] | None:
    """(text, attrs) that writing `n` over the stored `old` (None: not stored) leaves: attrs merged over the old
    ones with None values dropped, an empty text keeping the old one, the new title; None when nothing changes."""
    attrs = _clean_attrs(n.attrs)
    if old is None:
        return n.text, attrs
    if old.type != n.type:
        raise InvalidInput(f"{n.id} exists with type {old.type.value}, not {n.type.value}")
    merged = {**old.attrs, **attrs}
    text = n.text or old.text
    if (n.title, text, merged) != (old.title, old.text, old.attrs):
        return text, merged
    return None


def _resolve_papers(delta: GraphDelta, owners: Callable[[list[str]], dict[str, str]]) -> GraphDelta:
    """`delta` with its papers mapped onto the papers that hold one of their identity keys (`owners`: key ->
    paper id, for the keys held) and every reference to them renamed."""
    papers = [n for n in delta.nodes if n.type == NodeType.paper]
    if not papers:
        return delta
    wanted = {p.id: paper_keys(p.title, p.attrs) for p in papers}
    by_key = owners(sorted({k for ks in wanted.values() for k in ks}))
    remap: dict[str, str] = {}
    for pid, keys in wanted.items():
        for key in keys:
            if key in by_key and by_key[key] != pid:
                remap[pid] = by_key[key]
                break
    if not remap:
        return delta
    r = lambda i: remap.get(i, i)
    return GraphDelta(
        nodes=[n.model_copy(update={"id": r(n.id)}) for n in delta.nodes],
        edges=[e.model_copy(update={"src": r(e.src), "dst": r(e.dst)}) for e in delta.edges],
        similar=[s.model_copy(update={"node_id": r(s.node_id), "other_id": r(s.other_id) if s.other_id else None})
                 for s in delta.similar])


class BulkApply:
    """Documents applied one after another inside one transaction, and written together (`Store.bulk`).

    `Store.apply` costs about 17 statements a document, and on a large store a statement costs milliseconds
    whatever its size. Here each document is checked completely, in order, before any of it is queued (every
    check `apply` makes), and `flush()` writes all queued documents with one insert per table. The result is
    that of `apply` on each in turn, because a document is only queued when it cannot interact with the
    queued ones:

    - `touches(delta, document)` says whether a document names a node, edge, paper key, stated similarity or
      path that a queued document writes; the caller then flushes first, so that what it looks up (and what
      `apply` here compares against) is the store as the queued documents leave it;
    - where the per-document semantics are too subtle to batch, `apply` flushes and hands the document to
      `Store.apply`: a changed document (what it no longer says is dropped) and a document with a paper that
      is stored already or merges into a stored one (paper identity keys move between papers);
    - a refused document raises InvalidDocument and queues nothing; an error while writing propagates, and
      the enclosing transaction rolls back.

    Lookups (documents, nodes, paper keys, edges) come from a cache of the store without the queued documents:
    `prefetch` fills it for a whole group in a few queries, and it is cleared whenever the store is written.
    """

    def __init__(self, store: Store, model: str | None = None):
        self.store = store
        self.model = model
        self._docs: dict[str, DocumentRef | None] = {}
        self._nodes: dict[str, Node | None] = {}
        self._keys: dict[str, str | None] = {}
        self._edges: dict[str, dict[tuple[str, str, str], dict[str, Any]]] = {}  # src -> its stored edges' attrs
        self._sources: dict[str, list[str]] = {}  # a stored document's path -> the nodes it mentions, sorted
        self._clear_queue()

    def _clear_queue(self) -> None:
        self.queued = 0  # documents queued since the last flush
        self._q_paths: set[str] = set()
        self._q_types: dict[str, NodeType] = {}            # nodes the queued documents write -> type
        self._q_edges: set[tuple[str, str, str]] = set()
        self._q_keys: set[str] = set()
        self._q_similar: set[tuple[str, str]] = set()
        self._node_rows: list[tuple] = []                   # (id, type, title, text, attrs json, text hash, source, source hash, made by, new)
        self._terms: dict[str, str] = {}                    # node id -> embed text, for every node row
        self._edge_rows: list[tuple] = []                   # (src, type, dst, attrs json, source, source hash, made by, new)
        self._node_sources: list[tuple[str, str]] = []
        self._edge_sources: list[tuple[str, str, str, str]] = []
        self._key_rows: list[tuple[str, str]] = []
        self._similar_rows: list[tuple] = []
        self._vectors: dict[str, Any] = {}
        self._doc_rows: list[tuple] = []

    def _forget(self) -> None:
        """The store was written: what the cache says of it may be stale."""
        self._docs.clear(); self._nodes.clear(); self._keys.clear(); self._edges.clear(); self._sources.clear()

    # -- lookups: the store as it is without the queued documents ------------------------------------------
    def prefetch(self, deltas: Iterable[GraphDelta], paths: Iterable[str]) -> None:
        """Look up at once what documents about to be applied will ask of the store (their paths, nodes, edge
        ends and paper keys), so that `apply` needs no query of its own for them."""
        deltas, paths = list(deltas), list(paths)
        self._source_ids([p for p, d in self._documents(paths).items() if d is not None])  # for unchanged ones
        self.get_nodes({x for d in deltas for x in (*(n.id for n in d.nodes), *(e.src for e in d.edges),
                                                      *(e.dst for e in d.edges))})
        self._key_owners(sorted({k for d in deltas for n in d.nodes if n.type == NodeType.paper
                                 for k in paper_keys(n.title, n.attrs)}))

    def _documents(self, paths: list[str]) -> dict[str, DocumentRef | None]:
        want = [p for p in dict.fromkeys(paths) if p not in self._docs]
        if want:
            self._docs.update(dict.fromkeys(want))
            for r in self.store.con.execute("SELECT path, content_hash, format, title FROM documents "
                                            "WHERE path = ANY(?)", [want]).fetchall():
                self._docs[r[0]] = DocumentRef(path=r[0], content_hash=r[1], format=r[2], title=r[3])
        return {p: self._docs[p] for p in paths}

    def _source_ids(self, paths: list[str]) -> dict[str, list[str]]:
        """Stored documents' paths -> the ids of the nodes each mentions (node_sources), sorted."""
        want = [p for p in dict.fromkeys(paths) if p not in self._sources]
        if want:
            self._sources.update({p: [] for p in want})
            for path, nid in self.store.con.execute("SELECT path, node_id FROM node_sources WHERE path = ANY(?) "
                                                    "ORDER BY path, node_id", [want]).fetchall():
                self._sources[path].append(nid)
        return {p: self._sources[p] for p in paths}

    def get_nodes(self, ids: Iterable[str]) -> dict[str, Node]:
        """The stored nodes among `ids` (as `Store.get_nodes`; the queued documents' writes are not seen)."""
        ids = list(dict.fromkeys(ids))
        want = [i for i in ids if i not in self._nodes]
        if want:
            self._nodes.update(dict.fromkeys(want))
            self._nodes.update(self.store.get_nodes(want))
        return {i: n for i in ids if (n := self._nodes[i]) is not None}

    def _key_owners(self, keys: list[str]) -> dict[str, str]:
        want = [k for k in keys if k not in self._keys]
        if want:
            self._keys.update(dict.fromkeys(want))
            self._keys.update(self.store._paper_key_owners(want))
        return {k: o for k in keys if (o := self._keys[k]) is not None}

    def _stored_edges(self, srcs: set[str]) -> dict[tuple[str, str, str], dict[str, Any]]:
        """Stored edges leaving `srcs` (key -> attrs); a node that is not stored has none."""
        want = sorted(self.get_nodes(s for s in srcs if s not in self._edges))
        if want:
            self._edges.update({s: {} for s in want})
            for s, t, d, a in self.store.con.execute("SELECT src, type, dst, attrs FROM edges WHERE src = ANY(?)",
                                                     [want]).fetchall():
                self._edges[s][(s, t, d)] = json.loads(a) if isinstance(a, str) else a
        return {k: a for s in srcs for k, a in self._edges.get(s, {}).items()}

    def resolve_papers(self, delta: GraphDelta) -> GraphDelta:
        """`Store.resolve_papers` from the cache (valid for a delta that `touches` nothing queued)."""
        return _resolve_papers(delta, self._key_owners)

    # -- applying -----------------------------------------------------------------------------------------
    def touches(self, delta: GraphDelta, document: DocumentRef) -> bool:
        """Whether this document names what a queued one writes (flush first, then apply it)."""
        if not self.queued:
            return False
        if document.path in self._q_paths or any(n.id in self._q_types for n in delta.nodes):
            return True
        if any(e.key in self._q_edges for e in delta.edges):
            return True
        if any(_similar_key_of(s) in self._q_similar for s in delta.similar):
            return True
        return any(k in self._q_keys for n in delta.nodes if n.type == NodeType.paper
                   for k in paper_keys(n.title, n.attrs))

    def apply(self, delta: GraphDelta, document: DocumentRef, vectors: dict[str, Any] | None = None,
              model: str | None = None) -> ApplyReport:
        """Check one document as `Store.apply` does and queue it (or apply it there; see the class). The
        caller flushes first where `touches` says so."""
        store, path = self.store, document.path
        model = model or self.model
        prior = self._documents([path])[path]
        if prior is not None and prior.content_hash == document.content_hash:  # a no-op, as in Store.apply
            return ApplyReport(path=path, format=document.format, unchanged=True,
                               node_ids=list(self._source_ids([path])[path]))
        resolved = self.resolve_papers(delta)
        papers = [n.id for n in resolved.nodes if n.type == NodeType.paper]
        if prior is not None or resolved is not delta or self.get_nodes(papers):
            # a changed document, or a paper merged into / updating a stored one: the per-document way
            self.flush()
            self._forget()
            return store.apply(delta, document, vectors=vectors, model=model)
        prov = Provenance(source=path, source_hash=document.content_hash, made_by=MadeBy.parsed)
        nodes = list({n.id: n for n in delta.nodes}.values())  # the last of one id wins, as in apply
        _check_document(nodes, delta.edges, path, self._types)
        stored = self.get_nodes(n.id for n in nodes)
        report = ApplyReport(path=path, format=document.format)
        added: Counter[str] = Counter()
        updated: Counter[str] = Counter()
        node_rows: list[tuple] = []
        terms: dict[str, str] = {}
        for n in nodes:
            old = stored.get(n.id)
            change = _node_change(n, old)  # raises for a type clash, before anything is queued
            if change is None:
                continue
            text, attrs = change
            (added if old is None else updated)[n.type.value] += 1
            p = n.provenance or prov
            final = n if text == n.text else n.model_copy(update={"text": text})
            terms[n.id] = final.embed_text()
            node_rows.append((n.id, n.type.value, n.title, text, json.dumps(attrs, sort_keys=True),
                              sha256_hex(terms[n.id]), p.source, p.source_hash, p.made_by.value, old is None))
        edges = list({e.key: e for e in delta.edges}.values())
        have = self._stored_edges({e.src for e in edges})
        edges_added: Counter[str] = Counter()
        edge_rows: list[tuple] = []
        for e in edges:
            attrs = _clean_attrs(e.attrs)
            old_attrs = have.get(e.key)
            if old_attrs is None:
                edges_added[e.type.value] += 1
            elif {**old_attrs, **attrs} == old_attrs:
                continue
            else:
                attrs = {**old_attrs, **attrs}
            p = e.provenance or prov
            edge_rows.append((*e.key, json.dumps(attrs, sort_keys=True), p.source, p.source_hash, p.made_by.value,
                              old_attrs is None))
        similar = {_similar_key_of(s): s for s in delta.similar}  # the last of one key wins, as in apply
        keys: dict[str, str] = {}
        for n in nodes:
            if n.type == NodeType.paper:  # new papers only (see above); the first of a doc to carry a key keeps it
                for k in paper_keys(n.title, _clean_attrs(n.attrs)):
                    keys.setdefault(k, n.id)
        # checked: queue it
        self.queued += 1
        self._q_paths.add(path)
        self._q_types.update({n.id: n.type for n in nodes})
        self._q_edges.update(e.key for e in edges)
        self._q_keys.update(keys)
        self._q_similar.update(similar)
        self._node_rows += node_rows
        self._terms.update(terms)
        self._edge_rows += edge_rows
        self._node_sources += [(n.id, path) for n in nodes]
        self._edge_sources += [(*e.key, path) for e in edges]
        self._key_rows += keys.items()  # none is held: a stored holder would have merged the paper (above)
        self._similar_rows += [(s.node_id, k, s.other_id, s.other_title, s.other_type.value if s.other_type else None,
                                s.other_text, s.score, prov.source, prov.source_hash) for (_, k), s in similar.items()]
        for h, v in (vectors or {}).items():
            self._vectors.setdefault(h, v)
        self.model = self.model or model
        self._doc_rows.append((path, document.content_hash, document.format, document.title))
        report.nodes_added, report.nodes_updated, report.edges_added = dict(added), dict(updated), dict(edges_added)
        report.node_ids = sorted(n.id for n in nodes)
        return report

    def _types(self, ids: set[str]) -> dict[str, NodeType]:
        """Types of edge ends a document does not define: nodes the queued documents write, then stored ones."""
        out = {i: self._q_types[i] for i in ids if i in self._q_types}
        out.update({i: n.type for i, n in self.get_nodes(ids - set(out)).items()})
        return out

    def flush(self) -> None:
        """Write every queued document: one insert (and where needed one update) per table."""
        if not self.queued:
            return
        import pyarrow as pa

        store, con = self.store, self.store.con
        now = _naive_utc(datetime.now(timezone.utc))
        with store.transaction():
            def stage(name: str, cols: list[str], rows: list[tuple], types: dict[str, Any] | None = None) -> None:
                data: list[Any] = list(zip(*rows)) if rows else [() for _ in cols]
                store._arrow(name, pa.table({c: pa.array(list(v), (types or {}).get(c)) for c, v in zip(cols, data)}))

            if self._node_rows:
                stage("_stage_nodes", ["id", "type", "title", "text", "attrs", "text_hash", "source", "source_hash",
                                       "made_by", "new"], self._node_rows,
                      {"source": pa.string(), "source_hash": pa.string(), "new": pa.bool_()})
                con.execute("""INSERT INTO nodes SELECT id, type, title, text, attrs::JSON, text_hash, source,
                    source_hash, made_by, $now, $now FROM _stage_nodes WHERE new""", {"now": now})
                replace = [r[0] for r in self._node_rows if not r[-1]]
                if replace:
                    con.execute("""UPDATE nodes SET title = s.title, text = s.text, attrs = s.attrs::JSON,
                        text_hash = s.text_hash, source = s.source, source_hash = s.source_hash, made_by = s.made_by,
                        updated_at = $now FROM _stage_nodes s WHERE NOT s.new AND nodes.id = s.id""", {"now": now})
                con.unregister("_stage_nodes")
                store._index_terms(self._terms, replace=replace)
            if self._key_rows:
                con.execute("INSERT INTO paper_keys SELECT unnest($1), unnest($2)",
                            [[k for k, _ in self._key_rows], [p for _, p in self._key_rows]])
            stage("_stage_sources", ["node_id", "path"], self._node_sources)
            con.execute("INSERT INTO node_sources SELECT * FROM _stage_sources")
            con.unregister("_stage_sources")
            if self._edge_rows:
                stage("_stage_edges", ["src", "type", "dst", "attrs", "source", "source_hash", "made_by", "new"],
                      self._edge_rows, {"source": pa.string(), "source_hash": pa.string(), "new": pa.bool_()})
                con.execute("""INSERT INTO edges SELECT src, type, dst, attrs::JSON, source, source_hash, made_by,
                    $now, $now FROM _stage_edges WHERE new""", {"now": now})
                if not all(r[-1] for r in self._edge_rows):
                    con.execute("""UPDATE edges SET attrs = s.attrs::JSON, updated_at = $now FROM _stage_edges s
                        WHERE NOT s.new AND edges.src = s.src AND edges.type = s.type AND edges.dst = s.dst""",
                                {"now": now})
                con.unregister("_stage_edges")
            if self._edge_sources:
                stage("_stage_esources", ["src", "type", "dst", "path"], self._edge_sources)
                con.execute("INSERT INTO edge_sources SELECT * FROM _stage_esources")
                con.unregister("_stage_esources")
            if self._similar_rows:
                stage("_stage_similar", ["node_id", "other_key", "other_id", "other_title", "other_type",
                                         "other_text", "score", "source", "source_hash"], self._similar_rows,
                      {"other_id": pa.string(), "other_type": pa.string(), "score": pa.float64(),
                       "source": pa.string(), "source_hash": pa.string()})
                con.execute("""INSERT INTO stated_similarity SELECT *, $now FROM _stage_similar
                    ON CONFLICT (node_id, other_key) DO UPDATE SET other_title = excluded.other_title,
                    other_type = excluded.other_type, other_text = excluded.other_text, score = excluded.score,
                    source = excluded.source, source_hash = excluded.source_hash""", {"now": now})
                con.unregister("_stage_similar")
            if self._vectors:
                store.put_embeddings(self._vectors, self.model or "unknown")
            stage("_stage_docs", ["path", "content_hash", "format", "title"], self._doc_rows, {"title": pa.string()})
            con.execute("INSERT INTO documents SELECT *, $now FROM _stage_docs", {"now": now})
            con.unregister("_stage_docs")
        self._clear_queue()
        self._forget()


def _similar_key_of(s: StatedSimilarity) -> tuple[str, str]:
    return (s.node_id, _similar_key(s))
