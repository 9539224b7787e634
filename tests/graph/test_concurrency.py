"""Sharing one store file between processes (and between Stores in one process): the fair queue in front of
DuckDB (graph/lock.py), a Store that holds nothing between calls, and a small run of the stress and crash
trials of bench/stress_store.py (the script runs the full-size ones)."""
from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import duckdb
import pytest

from claimgraph.graph import DocumentRef, GraphDelta, Node, Store, StoreBusy, StoreError
from claimgraph.graph import lock as queue

REPO = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "claimgraph.cli.main"]

HOLDER = textwrap.dedent("""
    import sys, time
    from claimgraph.graph import Store
    path, mode, secs = sys.argv[1], sys.argv[2], float(sys.argv[3])
    s = Store(path, label=f"holder-{mode}")
    with s.session(write=mode == "w"):
        s.count_nodes()
        print("holding", flush=True)
        time.sleep(secs)
""")


def hold(db: Path, mode: str, secs: float) -> subprocess.Popen:
    """A process that holds the store (for writing "w" or reading "r") for `secs` seconds once it prints."""
    p = subprocess.Popen([sys.executable, "-c", HOLDER, str(db), mode, str(secs)], stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None and p.stdout.readline().strip() == "holding"
    return p


@pytest.fixture
def db(db_path) -> Path:
    with Store(db_path) as s:
        s.add_node(Node(id="claim:seed", type="claim", title="Seed"))
    return db_path


def test_turns_are_served_in_order_readers_together_writers_alone(db):
    """Tickets taken in order W R R W R R: the two readers after the first writer share their turn, the second
    writer waits for both, and the last readers wait for it (they do not jump the queued writer)."""
    events: list[tuple[float, str, str]] = []
    lock = threading.Lock()

    def take(name: str, write: bool, secs: float) -> None:
        turn = queue.acquire(db, write=write, timeout=30)
        with lock:
            events.append((time.monotonic(), "start", name))
        time.sleep(secs)
        with lock:
            events.append((time.monotonic(), "end", name))
        assert turn is not None
        turn.release()

    plan = [("W1", True, 0.6), ("R2", False, 0.4), ("R3", False, 0.4), ("W4", True, 0.3), ("R5", False, 0.2),
            ("R6", False, 0.2)]
    threads = []
    for name, write, secs in plan:
        t = threading.Thread(target=take, args=(name, write, secs))
        t.start()
        threads.append(t)
        time.sleep(0.1)  # tickets in plan order
    for t in threads:
        t.join(timeout=30)
    at = {(kind, name): t for t, kind, name in events}
    assert at["end", "W1"] <= at["start", "R2"] and at["end", "W1"] <= at["start", "R3"]
    assert at["start", "R3"] < at["end", "R2"], "two readers in a row share their turn"
    assert at["start", "W4"] >= max(at["end", "R2"], at["end", "R3"])
    assert min(at["start", "R5"], at["start", "R6"]) >= at["end", "W4"], "a reader does not pass a queued writer"
    assert at["start", "R6"] < at["end", "R5"]


def test_a_waiting_command_names_the_process_it_waits_for_and_then_succeeds(db):
    holder = hold(db, "w", 3.0)
    try:
        t0 = time.monotonic()
        r = subprocess.run([*CLI, "--db", str(db), "--json", "list"], capture_output=True, text=True, timeout=120)
        waited = time.monotonic() - t0
    finally:
        holder.wait()
    assert r.returncode == 0, r.stderr
    assert f"waiting for process {holder.pid} (holder-w)" in r.stderr
    assert [n["id"] for n in json.loads(r.stdout)["nodes"]] == ["claim:seed"]
    assert waited >= 1.0


def test_a_killed_holder_lets_the_next_one_in_at_once(db):
    holder = hold(db, "w", 120)
    done: list[float] = []

    def read() -> None:
        with Store(db, busy_timeout=60, on_wait=None) as s:
            assert s.has_node("claim:seed")
        done.append(time.monotonic())

    t = threading.Thread(target=read)
    t.start()
    time.sleep(0.5)
    assert not done, "the reader must wait for the writer"
    killed = time.monotonic()
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    t.join(timeout=30)
    assert done and done[0] - killed < 5


def test_timeout_says_whom_it_waited_for(db):
    holder = hold(db, "w", 30)
    try:
        with pytest.raises(StoreBusy, match=rf"waited 0.5s for process {holder.pid} \(holder-w\)"):
            Store(db, busy_timeout=0.5, on_wait=None).count_nodes()
    finally:
        holder.kill()
        holder.wait()


def test_two_stores_in_one_process_queue_like_two_processes(db):
    """A notebook's Store and, say, an in-process web request's Store: the queue's locks belong to the open
    sidecar file, not the process, so the reader waits for the writer here too."""
    a, b = Store(db), Store(db, on_wait=None)
    got: list[tuple[bool, float]] = []
    with a.session(write=True):
        a.add_node(Node(id="claim:from-a", type="claim", title="From A"))
        t = threading.Thread(target=lambda: got.append((b.has_node("claim:from-a"), time.monotonic())))
        t.start()
        time.sleep(0.5)
        assert not got
        ended = time.monotonic()
    t.join(timeout=30)
    assert got and got[0][0] is True and got[0][1] >= ended


def test_a_store_holds_nothing_between_calls(db):
    s = Store(db, keep_open=0)
    assert s.has_node("claim:seed") and not s.holding
    # a process outside the queue can take the file read-write while `s` lives
    r = subprocess.run([sys.executable, "-c", "import duckdb, sys; duckdb.connect(sys.argv[1]).close()", str(db)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    with pytest.raises(StoreError, match="only available inside a session"):
        s.con  # noqa: B018


def _outside_open(db) -> subprocess.CompletedProcess:
    """A process outside claimgraph's queue opening the file read-write (as a duckdb shell would)."""
    return subprocess.run([sys.executable, "-c", "import duckdb, sys; duckdb.connect(sys.argv[1]).close()", str(db)],
                          capture_output=True, text=True, timeout=60)


def test_a_reading_turn_is_kept_open_for_keep_open_seconds_then_given_up(db):
    s = Store(db, keep_open=1.5)
    assert s.has_node("claim:seed") and not s.holding
    held = _outside_open(db)  # kept: the read-only connection still holds the file
    assert held.returncode != 0 and "lock" in held.stderr.lower()
    assert s.has_node("claim:seed")  # the next reading call uses the kept turn
    time.sleep(2.5)
    assert _outside_open(db).returncode == 0  # given up after keep_open seconds without a call


def test_a_writer_does_not_wait_for_a_kept_reading_turn(db):
    """A reader that would keep its turn for a minute gives it up as soon as a writer queues: another process's
    write, another Store's in this process, and this Store's own."""
    s = Store(db, keep_open=60)
    assert s.has_node("claim:seed")
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-c", "import sys; from claimgraph.graph import Node, Store; "
                        "Store(sys.argv[1]).add_node(Node(id='claim:other', type='claim', title='Other'))", str(db)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert time.monotonic() - t0 < 30  # not the 60 s the reader would have kept its turn
    assert s.has_node("claim:other")  # a new turn sees the other process's write
    t0 = time.monotonic()
    Store(db, on_wait=None).add_node(Node(id="claim:third", type="claim", title="Third"))
    assert time.monotonic() - t0 < 30
    assert s.has_node("claim:third")
    s.add_node(Node(id="claim:fourth", type="claim", title="Fourth"))  # its own write: no wait behind itself
    assert s.count_nodes() == {"claim": 4}
    s.close()
    assert _outside_open(db).returncode == 0  # close() gives a kept turn up at once


def test_a_reading_session_opens_the_file_read_only(db):
    s = Store(db)
    with s.session():
        assert s.count_nodes() == {"claim": 1}
        with pytest.raises(duckdb.Error, match="read-only"):
            s.con.execute("CREATE TABLE x (i INTEGER)")
        with pytest.raises(StoreError, match="write inside a reading session"):
            s.add_node(Node(id="claim:no", type="claim", title="No"))
    with s.session(write=True):
        s.add_node(Node(id="claim:yes", type="claim", title="Yes"))
        assert s.has_node("claim:yes")


def test_notebook_store_stays_open_while_the_cli_writes(db, tmp_path):
    """Issue 17: a long-lived Store in a Python session, used before and after, while CLI processes write."""
    nb = Store(db)
    nb.add_node(Node(id="finding:notebook", type="finding", title="Found in a notebook"))
    doc = tmp_path / "doc.yaml"
    doc.write_text("papers:\n  - title: A CLI paper\n    claims:\n      - title: Written by the CLI\n")
    for args in (["ingest", str(doc), "--no-embed"], ["link", "finding:notebook", "supports", "claim:seed"]):
        r = subprocess.run([*CLI, "--db", str(db), *args], capture_output=True, text=True, timeout=120,
                           env=dict(os.environ, CLAIMGRAPH_BUSY_TIMEOUT="20"))
        assert r.returncode == 0, r.stderr
    assert nb.has_node("claim:written-by-the-cli")
    assert nb.get_edge("finding:notebook", "supports", "claim:seed").provenance.made_by.value == "manual"
    nb.add_node(Node(id="claim:after", type="claim", title="After the CLI"))
    r = subprocess.run([*CLI, "--db", str(db), "--json", "list"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "claim:after" in r.stdout


WRITER = textwrap.dedent("""
    import sys
    from claimgraph.graph import Store, Node
    s = Store(sys.argv[1])
    for i in range(int(sys.argv[2])):
        s.add_node(Node(id=f"claim:w{i}", type="claim", title=f"W {i}"))
    print("done", flush=True)
""")


def test_readers_never_fail_beside_a_stream_of_writes(db):
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(db), "40"], stdout=subprocess.PIPE, text=True)
    readers = [subprocess.Popen([*CLI, "--db", str(db), "--json", "stats"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True) for _ in range(4)]
    outs = [p.communicate(timeout=300) for p in readers]
    assert writer.communicate(timeout=300)[0].strip() == "done"
    for p, (out, err) in zip(readers, outs):
        assert p.returncode == 0, err
        assert 1 <= json.loads(out)["nodes"]["claim"] <= 41
    assert Store(db).count_nodes() == {"claim": 41}


def test_a_long_writer_lets_a_waiting_reader_in_between_documents(db):
    """`yield_turn` between documents: a reader that queues during a 20-document apply loop gets in before the
    loop ends, and the loop goes on after it."""
    w, r = Store(db), Store(db, on_wait=None)
    seen: list[tuple[int, float]] = []
    finished = 0.0
    with w.session(write=True):
        for i in range(20):
            nodes = [Node(id=f"claim:doc-{i}", type="claim", title=f"Doc {i}")]
            w.apply(GraphDelta(nodes=nodes), DocumentRef(path=f"/d/{i}", content_hash=str(i), format="structured"))
            if i == 2:
                t = threading.Thread(target=lambda: seen.append((r.count_nodes()["claim"], time.monotonic())))
                t.start()
                time.sleep(0.3)  # the reader is queued now
            w.yield_turn(after=0.0)
        finished = time.monotonic()
    t.join(timeout=30)
    assert seen and seen[0][1] < finished
    assert 4 <= seen[0][0] < 21, "the reader saw whole documents, in the middle of the loop"
    assert w.count_nodes()["claim"] == 21


# -- the stress script, small -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def stress(tmp_path_factory):
    spec = importlib.util.spec_from_file_location("stress_store", REPO / "bench" / "stress_store.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["stress_store"] = mod  # its dataclasses look their module up there
    spec.loader.exec_module(mod)
    root = tmp_path_factory.mktemp("stress")
    return mod, mod.build_base(root), root


def test_mixed_concurrent_commands_all_succeed_and_the_store_stays_consistent(stress):
    """The stress script's round, small: one command of each kind at once, default settings (the script runs
    N = 10, 25, 50: docs/benchmarks.md)."""
    mod, base, root = stress
    row = mod.mixed(base, 7, root / "mixed", seed=1)
    assert row["ok"] == 7, row["failed"]
    assert row["problems"] == []
    assert row["mix"] == {k: 1 for k in mod.SHARES}
    assert row["turns"]["turns"] >= 7 and row["turns"]["held_s"] > 0


def test_the_consistency_checks_find_planted_damage(stress, tmp_path):
    """The checks the stress and crash rounds rely on can fail: a write a command reported but that is not
    there, a write nobody reported, and a document with one of its nodes gone are each found."""
    import shutil

    mod, base, root = stress
    db = tmp_path / "planted.duckdb"
    shutil.copy(base, db)
    snap = mod._snapshot(db)
    linked = {frozenset((s, d)) for s, _, d in snap["edges"]}
    claims = sorted(r[0] for r in snap["nodes"] if r[0].startswith("claim:"))
    pairs = [(a, b) for a in claims for b in claims if a < b and frozenset((a, b)) not in linked]
    (a, b), (c, d) = pairs[0], pairs[-1]
    reported = mod.Command("link", [], {"edge": (a, "associated_with", b)}, rc=0)  # says it wrote; it did not
    assert mod.consistency(db, snap, [reported]) != []
    with Store(db) as s:
        s.link(c, "associated_with", d)  # written, but no command says so
    problems = mod.consistency(db, snap, [])
    assert any("phantom" in p for p in problems), problems
    doc = tmp_path / "doc.yaml"
    doc.write_text(mod.stress_doc("planted", 0))
    r = mod.call(db, "ingest", str(doc), "--no-embed")
    assert r.returncode == 0, r.stderr
    expect = {str(doc.resolve()): mod._doc_expectation(doc)}
    assert mod._partial_documents(db, expect) == []
    victim = sorted(expect[str(doc.resolve())][0])[0]
    with Store(db) as s:
        s.delete_node(victim)  # the document row stays: the document is no longer whole
    assert mod._partial_documents(db, expect) != []


def test_kill_during_ingest_leaves_no_partial_document(stress):
    import random

    mod, base, root = stress
    res = mod.crash_ingest(base, 3, root / "crash-ingest", random.Random(3), docs=12)
    assert [t["problems"] for t in res["trials"]] == [[]] * 3


def test_kill_during_a_run_ends_it_with_or_without_its_evidence(stress):
    import random

    mod, base, root = stress
    res = mod.crash_run(base, 2, root / "crash-run", random.Random(4))
    assert [t["problems"] for t in res["trials"]] == [[]] * 2
    assert all(t["status"] in ("completed", "failed", "killed") for t in res["trials"])


def test_only_commands_that_show_run_status_reconcile_dead_runs(db, tmp_path):
    """Issue 9: reading commands open the store read-only and change nothing; `runs` (and `run`, `experiment
    list`) give a run whose process died its final status."""
    dead = subprocess.Popen(["true"])
    dead.wait()
    with Store(db) as s:
        s.put_run(run_id="r-dead", experiment_id="experiment:x", config_hash="h", status="running",
                  run_dir=str(tmp_path / "no-such-run"), pid=dead.pid, host=os.uname().nodename)
    before = db.stat().st_mtime_ns
    for args in (["list"], ["show", "claim:seed"], ["search", "seed"], ["neighbors", "claim:seed"], ["stats"],
                 ["evidence", "claim:seed"], ["path", "claim:seed", "claim:seed"]):
        r = subprocess.run([*CLI, "--db", str(db), *args], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, (args, r.stderr)
    assert db.stat().st_mtime_ns == before and not Path(str(db) + ".wal").exists()
    assert Store(db).runs()[0]["status"] == "running"
    r = subprocess.run([*CLI, "--db", str(db), "runs"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "run r-dead of experiment:x ended: failed" in r.stderr
    assert Store(db).runs()[0]["status"] == "failed"


@pytest.mark.parametrize("var", ["CLAIMGRAPH_BUSY_TIMEOUT", "CLAIMGRAPH_KEEP_OPEN_S"])
@pytest.mark.parametrize("value", ["nan", "inf", "-1", "soon"])
def test_a_bad_busy_timeout_or_keep_open_is_refused_clearly(db, var, value):
    r = subprocess.run([*CLI, "--db", str(db), "list"], capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, **{var: value}))
    assert r.returncode == 2 and r.stderr.startswith(f"Error: {var}=") and "Traceback" not in r.stderr


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread CPU priorities are Linux's")
def test_the_encoder_computes_at_a_lower_cpu_priority_than_the_caller():
    """Encoding is batch work: its thread (and torch's threads, started from it) run at nice +N, so a command
    holding the store is not starved by encoders; the calling thread keeps its priority."""
    from claimgraph.graph.batch import BatchThread
    from claimgraph.graph.embed import Embedder

    mine = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    e = Embedder()
    e._worker = BatchThread(5)
    vec = e.encode(["sparse autoencoders find interpretable features"], progress=False)
    assert vec.shape == (1, 384)
    worker = e._worker._thread
    assert worker is not None and worker.native_id is not None
    assert os.getpriority(os.PRIO_PROCESS, worker.native_id) == min(19, mine + 5)
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == mine
    with pytest.raises(ValueError, match="boom"):  # an error in the work reaches the caller
        e._worker.run(lambda: (_ for _ in ()).throw(ValueError("boom")))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX")
def test_a_forked_child_does_not_keep_the_parents_reading_turn(db):
    """The queue's locks belong to the open sidecar, which a fork shares: a child that outlives the parent's kept
    turn would otherwise hold it (and every writer would wait for the child)."""
    s = Store(db, keep_open=0.5)
    assert s.has_node("claim:seed")  # a turn is kept now
    pid = os.fork()
    if pid == 0:  # the child sleeps past the parent's keep_open, holding whatever it inherited
        time.sleep(4)
        os._exit(0)
    try:
        time.sleep(1.5)
        t0 = time.monotonic()
        Store(db, busy_timeout=30, on_wait=None).add_node(Node(id="claim:while-child-lives", type="claim", title="W"))
        assert time.monotonic() - t0 < 2  # not the child's 4 s
    finally:
        os.waitpid(pid, 0)
