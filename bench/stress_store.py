"""Concurrency and crash stress for one store, through the real CLI in separate processes.

    python bench/stress_store.py --n 10 25 50 --crash-trials 20 --out docs/benchmarks.md
    python bench/stress_store.py --n --crash-trials 40     # the crash suite alone (kill -9 trials only)

Mixed load. A base store holds the bundled papers (data/papers, with embeddings) and a set of open
suggestions. For each N, a copy of it gets N commands started at once, as separate `claimgraph` processes with
default settings: ingest of a new document (with embeddings), link, accept, reject, list, show and search, in
fixed shares. Every turn a command takes at the store is logged (CLAIMGRAPH_LOCK_LOG), so a command's wait is
the time it spent queued; its wall time includes Python start-up, parsing and encoding. Afterwards the store
is checked: every edge's ends exist, every ingested document is whole (its nodes, edges and document row) and a
failed one left nothing, the node, edge and suggestion counts equal the base plus what the successful
commands wrote, and each suggested pair has one row.

Crash trials. `kill -9` at a random moment of (a) an ingest of a folder of documents (half of the trials
with embeddings, so the kill lands in parsing, encoding or writing) and (b) an experiment run (the `claimgraph
run` process and its worker together, from start-up to attaching the result). After each kill the store must
open, hold no partial document, and a run must end completed with its evidence or ended without any; then
the ingest is repeated and must finish with the same counts as an uninterrupted one (no duplicates).

Prints markdown tables; with --out, writes them into that file between the stress-store markers.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "claimgraph.cli.main"]
SHARES = {"ingest": 0.2, "link": 0.15, "accept": 0.1, "reject": 0.1, "list": 0.15, "show": 0.15, "search": 0.15}
WORDS = ("sparse features superposition dictionary learning probe circuit attention head residual stream "
         "activation patching ablation logit lens steering monosemantic polysemantic emergence").split()
BEGIN, END = "<!-- stress-store:begin -->", "<!-- stress-store:end -->"


def cg(db: Path, *args: str) -> list[str]:
    return [*CLI, "--db", str(db), *args]


def call(db: Path, *args: str, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(cg(db, *args), capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, **(env or {})))


def stress_doc(tag: str, i: int) -> str:
    """A structured document with one new paper, two claims and a finding that supports the first claim."""
    rng = random.Random(f"{tag}-{i}")
    words = lambda n: " ".join(rng.choice(WORDS) for _ in range(n))
    claim = f"Claim {tag} {i}: {words(8)}"
    return textwrap.dedent(f"""\
        papers:
          - title: "Stress paper {tag} {i}: {words(4)}"
            year: 2024
            claims:
              - title: "{claim}"
              - title: "Second claim {tag} {i}: {words(8)}"
            findings:
              - title: "Finding {tag} {i}: {words(8)}"
                supports: ["claim:{claim}"]
        """)


def _doc_expectation(path: Path) -> tuple[set[str], set[tuple[str, str, str]]]:
    from claimgraph.ingest import parse_document

    doc = parse_document(path)
    return {n.id for n in doc.delta.nodes}, {e.key for e in doc.delta.edges}


# -- the base store ---------------------------------------------------------------------------------
def build_base(root: Path) -> Path:
    """data/papers ingested with embeddings, and suggestions at a low threshold (pairs to accept and reject)."""
    db = root / "base.duckdb"
    for args in (("ingest", str(REPO / "data" / "papers")), ("suggest", "--threshold", "0.3")):
        r = call(db, *args)
        if r.returncode != 0:
            raise SystemExit(f"building the base store failed: {' '.join(args)}\n{r.stderr}")
    return db


def _snapshot(db: Path) -> dict[str, Any]:
    from claimgraph.graph import Store

    with Store(db, read_only=True) as s, s.session():
        return {"nodes": s.sql("SELECT id FROM nodes"), "edges": s.sql("SELECT src, type, dst FROM edges"),
                "open": s.sql("SELECT a, b FROM suggestions WHERE state = 'open' ORDER BY score DESC, a, b"),
                "states": dict(s.sql("SELECT state, count(*) FROM suggestions GROUP BY state"))}


# -- mixed load --------------------------------------------------------------------------------------
@dataclass
class Command:
    kind: str
    args: list[str]
    writes: dict[str, Any] = field(default_factory=dict)  # what it writes when it succeeds
    proc: subprocess.Popen | None = None
    rc: int | None = None
    stderr: str = ""
    wall: float = 0.0


def plan(db: Path, n: int, rng: random.Random, work: Path, tag: str) -> list[Command]:
    base = _snapshot(db)
    nodes = sorted(r[0] for r in base["nodes"])
    linked = {frozenset((s, d)) for s, _, d in base["edges"]}
    pairs = [tuple(p) for p in base["open"]]
    counts = {k: 0 for k in SHARES}
    kinds = []
    for i in range(n):  # fixed shares, rounded by the largest deficit
        k = max(SHARES, key=lambda k: SHARES[k] * (i + 1) - counts[k])
        counts[k] += 1
        kinds.append(k)
    rng.shuffle(kinds)
    to_accept = iter(pairs[0::2])
    to_reject = iter(pairs[1::2])
    taken = set(linked) | {frozenset(p) for p in pairs}
    out = []
    for i, kind in enumerate(kinds):
        if kind == "ingest":
            path = work / f"doc-{i}.yaml"
            path.write_text(stress_doc(tag, i))
            ids, keys = _doc_expectation(path)
            out.append(Command(kind, ["ingest", str(path)], {"path": str(path.resolve()), "nodes": ids, "edges": keys}))
        elif kind == "link":
            while True:
                a, b = rng.sample(nodes, 2)
                if frozenset((a, b)) not in taken:
                    break
            taken.add(frozenset((a, b)))
            out.append(Command(kind, ["link", a, "associated_with", b], {"edge": (a, "associated_with", b)}))
        elif kind in ("accept", "reject"):
            a, b = next(to_accept if kind == "accept" else to_reject)
            out.append(Command(kind, [kind, a, b], {"pair": (a, b)}))
        elif kind == "list":
            out.append(Command(kind, ["list", "--type", rng.choice(["claim", "finding", "method"])]))
        elif kind == "show":
            out.append(Command(kind, ["show", rng.choice(nodes)]))
        else:
            out.append(Command(kind, ["search", " ".join(rng.sample(WORDS, 3))]))
    return out


def consistency(db: Path, base: dict[str, Any], commands: list[Command]) -> list[str]:
    """Problems found (empty when the store is consistent with what the successful commands did)."""
    from claimgraph.graph import Store

    problems: list[str] = []
    with Store(db, read_only=True) as s, s.session():
        nodes = {r[0] for r in s.sql("SELECT id FROM nodes")}
        edges = {tuple(r) for r in s.sql("SELECT src, type, dst FROM edges")}
        docs = {d.path for d in s.documents()}
        states = dict(((a, b), st) for a, b, st in s.sql("SELECT a, b, state FROM suggestions"))
        # the table has no key (schema migration 8): the writers alone keep each pair to one row, sorted
        twice = s.sql("SELECT a, b, count(*) FROM suggestions GROUP BY a, b HAVING count(*) > 1")
        unsorted = s.sql("SELECT count(*) FROM suggestions WHERE NOT a < b")[0][0]
        dangling = s.sql("""SELECT count(*) FROM edges WHERE src NOT IN (SELECT id FROM nodes)
                            OR dst NOT IN (SELECT id FROM nodes)""")[0][0]
    if dangling:
        problems.append(f"{dangling} edges with a missing end")
    if twice:
        problems.append(f"{len(twice)} suggestion pairs with more than one row (e.g. {twice[0][0]} / {twice[0][1]})")
    if unsorted:
        problems.append(f"{unsorted} suggestion rows with a >= b")
    want_nodes = {r[0] for r in base["nodes"]}
    want_edges = {tuple(r) for r in base["edges"]}
    for c in commands:
        ok = c.rc == 0
        if c.kind == "ingest":
            got_nodes, got_edges = c.writes["nodes"] & nodes, c.writes["edges"] & edges
            whole = got_nodes == c.writes["nodes"] and got_edges == c.writes["edges"] and c.writes["path"] in docs
            empty = not got_nodes and not got_edges and c.writes["path"] not in docs
            if ok and not whole:
                problems.append(f"ingest {c.writes['path']} succeeded but is not whole in the store")
            if not ok and not empty:
                problems.append(f"ingest {c.writes['path']} failed but left {len(got_nodes)} nodes behind")
            if ok:
                want_nodes |= c.writes["nodes"]
                want_edges |= c.writes["edges"]
        elif c.kind == "link":
            if ok != (c.writes["edge"] in edges):
                problems.append(f"link {c.writes['edge']}: exit {c.rc} but edge {'missing' if ok else 'present'}")
            if ok:
                want_edges.add(c.writes["edge"])
        elif c.kind in ("accept", "reject"):
            a, b = sorted(c.writes["pair"])
            state = states.get((a, b))
            want = {"accept": "accepted", "reject": "rejected"}[c.kind] if ok else "open"
            if state != want:
                problems.append(f"{c.kind} {a} {b}: exit {c.rc}, suggestion state {state}")
            if ok and c.kind == "accept":
                hit = [e for e in edges if {e[0], e[2]} == {a, b} and e not in want_edges]
                want_edges |= set(hit[:1])
    if nodes != want_nodes:
        problems.append(f"nodes: {len(nodes)} stored, {len(want_nodes)} expected "
                        f"({len(nodes - want_nodes)} phantom, {len(want_nodes - nodes)} lost)")
    if edges != want_edges:
        problems.append(f"edges: {len(edges)} stored, {len(want_edges)} expected "
                        f"({len(edges - want_edges)} phantom, {len(want_edges - edges)} lost)")
    return problems


def _turn_totals(log: Path) -> dict[str, float]:
    """Over every turn of the round: how long the store was held, and of that the holders' CPU time and the
    DuckDB open and close (the rest is the holders' queries and code, waiting for a core when it is busy)."""
    recs = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    out = {k: sum(r.get(k, 0.0) for r in recs) for k in ("held_s", "cpu_s", "open_s", "close_s")}
    out["turns"] = len(recs)
    return out


def _waits(log: Path) -> dict[int, float]:
    out: dict[int, float] = {}
    if log.exists():
        for line in log.read_text().splitlines():
            rec = json.loads(line)
            out[rec["pid"]] = out.get(rec["pid"], 0.0) + rec["waited_s"]
    return out


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, round(q * (len(xs) - 1))))] if xs else float("nan")


def mixed(base_db: Path, n: int, work: Path, seed: int = 0) -> dict[str, Any]:
    """N concurrent mixed commands on a copy of the base store; the row of the results table."""
    work.mkdir(parents=True, exist_ok=True)
    db = work / "store.duckdb"
    shutil.copy(base_db, db)
    base = _snapshot(db)
    commands = plan(db, n, random.Random(seed), work, tag=f"n{n}s{seed}")
    log = work / "turns.jsonl"
    env = dict(os.environ, CLAIMGRAPH_LOCK_LOG=str(log), CLAIMGRAPH_PROGRESS="0")
    env.pop("CLAIMGRAPH_BUSY_TIMEOUT", None)  # default settings
    load_before = os.getloadavg()[0]  # the machine's load from others, just before the round
    t0 = time.monotonic()
    for c in commands:
        c.proc = subprocess.Popen(cg(db, *c.args), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                  env=env)
        c.wall = time.monotonic()
    for c in commands:
        assert c.proc is not None
        _, c.stderr = c.proc.communicate(timeout=1800)
        c.rc = c.proc.returncode
        c.wall = time.monotonic() - c.wall
    total = time.monotonic() - t0
    waits = _waits(log)
    w = [waits.get(c.proc.pid, 0.0) for c in commands if c.proc is not None]
    problems = consistency(db, base, commands)
    failed = [c for c in commands if c.rc != 0]
    by_kind = {k: sum(1 for c in commands if c.kind == k) for k in SHARES}
    return {"n": n, "ok": n - len(failed), "failed": [f"{c.kind}: {c.stderr.strip()[-300:]}" for c in failed],
            "p50": statistics.median(w), "p95": _pct(w, 0.95), "max": max(w), "wall_max": max(c.wall for c in commands),
            "total": total, "problems": problems, "mix": by_kind,
            "waited_msgs": sum("waiting for process" in c.stderr for c in commands), "turns": _turn_totals(log),
            "load_before": load_before}


# -- crash trials ------------------------------------------------------------------------------------
def _kill_tree(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def _counts(db: Path) -> tuple[int, int, int]:
    from claimgraph.graph import Store

    with Store(db) as s, s.session():
        return (s.sql("SELECT count(*) FROM nodes")[0][0], s.sql("SELECT count(*) FROM edges")[0][0],
                len(s.documents()))


def _partial_documents(db: Path, expect: dict[str, tuple[set[str], set[tuple[str, str, str]]]]) -> list[str]:
    from claimgraph.graph import Store

    with Store(db) as s, s.session():
        nodes = {r[0] for r in s.sql("SELECT id FROM nodes")}
        edges = {tuple(r) for r in s.sql("SELECT src, type, dst FROM edges")}
        docs = {d.path for d in s.documents()}
        dangling = s.sql("""SELECT count(*) FROM edges WHERE src NOT IN (SELECT id FROM nodes)
                            OR dst NOT IN (SELECT id FROM nodes)""")[0][0]
    bad = [f"{dangling} dangling edges"] if dangling else []
    for path, (ids, keys) in expect.items():
        whole = ids <= nodes and keys <= edges and path in docs
        none = not (ids & nodes) and path not in docs
        if not (whole or none):
            bad.append(f"{Path(path).name}: {len(ids & nodes)}/{len(ids)} nodes, row {'present' if path in docs else 'missing'}")
    return bad


def crash_ingest(base_db: Path, trials: int, work: Path, rng: random.Random, docs: int = 30) -> dict[str, Any]:
    folder = work / "docs"
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(docs):
        (folder / f"d{i:02d}.yaml").write_text(stress_doc("crash", i))
    expect = {str(p.resolve()): _doc_expectation(p) for p in sorted(folder.glob("*.yaml"))}
    durations = {}
    clean = {}
    for embed in (False, True):  # an uninterrupted ingest: its duration bounds the kill times, its counts the goal
        db = work / f"clean-{embed}.duckdb"
        shutil.copy(base_db, db)
        t = time.monotonic()
        r = call(db, "ingest", str(folder), *([] if embed else ["--no-embed"]))
        assert r.returncode == 0, r.stderr
        durations[embed] = time.monotonic() - t
        clean[embed] = _counts(db)
    rows = []
    for trial in range(trials):
        embed = trial % 2 == 1
        db = work / f"trial-{trial}.duckdb"
        shutil.copy(base_db, db)
        if trial % 3 == 2:  # start from a store that already holds part of the folder (an update)
            r = call(db, "ingest", *[str(p) for p in sorted(folder.glob("*.yaml"))[:docs // 3]], "--no-embed")
            assert r.returncode == 0, r.stderr
        delay = rng.uniform(0.2, durations[embed])
        proc = subprocess.Popen(cg(db, "ingest", str(folder), *([] if embed else ["--no-embed"])),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        time.sleep(delay)
        finished = proc.poll() is not None
        _kill_tree(proc)
        problems = []
        try:
            problems += _partial_documents(db, expect)
            before = _counts(db)
        except Exception as e:  # the store must open after a kill
            problems.append(f"store does not open: {e}")
            before = (0, 0, 0)
        r = call(db, "ingest", str(folder), *([] if embed else ["--no-embed"]))
        if r.returncode != 0:
            problems.append(f"re-ingest failed: {r.stderr.strip()[-200:]}")
        elif _counts(db) != clean[embed]:
            problems.append(f"after re-ingest {_counts(db)} != uninterrupted {clean[embed]}")
        rows.append({"trial": trial, "embed": embed, "delay": delay, "finished_before_kill": finished,
                     "docs_before_rerun": before[2] - _counts(base_db)[2], "problems": problems})
        db.unlink(missing_ok=True)
    return {"trials": rows, "durations": durations}


PLUGIN = textwrap.dedent('''
    from claimgraph.experiments.job import Job, JobParams, SeedResult
    from claimgraph.experiments.spec import Criterion


    class Params(JobParams):
        steps: int = 8
        sleep_s: float = 0.1   # pause per step, so that a kill can land while it computes


    class StressJob(Job):
        kind = "stress"
        summary = "a seeded random walk, slowly (store stress trials)"
        Params = Params
        default_criterion = Criterion(metric="mean", op=">", threshold=-100.0, band=0.0)
        metrics = {"mean": "mean position of the walk"}
        default_model = None
        default_data = None

        def run(self, ctx, p, seed):
            import random
            import time

            rng, x, xs = random.Random(seed), 0.0, []
            for step in range(p.steps):
                x += rng.gauss(0, 1)
                xs.append(x)
                ctx.log_metrics(step, {"x": x})
                time.sleep(p.sleep_s)
            return SeedResult(seed=seed, metrics={"mean": sum(xs) / len(xs)})
''')


def install_plugin(root: Path) -> dict[str, str]:
    """A job kind installed the way a user installs one (entry point); returns the env that finds it."""
    (root / "cgstress").mkdir(parents=True, exist_ok=True)
    (root / "cgstress" / "__init__.py").write_text(PLUGIN)
    dist = root / "cgstress-0.1.dist-info"
    dist.mkdir(exist_ok=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: cgstress\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[claimgraph.jobs]\nstress = cgstress:StressJob\n")
    return {"PYTHONPATH": str(root) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def crash_run(base_db: Path, trials: int, work: Path, rng: random.Random) -> dict[str, Any]:
    env = dict(install_plugin(work / "plugin"), CLAIMGRAPH_PROGRESS="0")
    claim = "claim:learned-features-reflect-the-functionality-of-the-model-and-not-just-the-data-distribution"
    db = work / "runs.duckdb"
    shutil.copy(base_db, db)
    rows = []
    t = time.monotonic()
    r = call(db, "--json", "experiment", "add", "--claim", claim, "--kind", "stress", "--seeds", "2",
             "--param", "sleep_s=0.1", env=env)
    assert r.returncode == 0, r.stderr
    exp = json.loads(r.stdout)["experiment"]["id"]
    r = call(db, "run", exp, "--force", env=env)
    assert r.returncode == 0, r.stderr
    duration = time.monotonic() - t
    for trial in range(trials):
        delay = rng.uniform(0.1, duration)
        proc = subprocess.Popen(cg(db, "run", exp, "--force"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                env=dict(os.environ, **env), start_new_session=True)
        time.sleep(delay)
        finished = proc.poll() is not None
        _kill_tree(proc)  # the run command and its worker
        problems = []
        r = call(db, "--json", "runs", exp, env=env)  # reconciles the killed run
        if r.returncode != 0:
            problems.append(f"runs failed: {r.stderr.strip()[-200:]}")
            rows.append({"trial": trial, "delay": delay, "status": None, "problems": problems})
            continue
        runs = json.loads(r.stdout)["runs"]
        from claimgraph.graph import Store

        with Store(db, read_only=True) as s, s.session():
            evidence = {n.attrs.get("run_id"): n for n in s.list_nodes("evidence")}
            produced = {e.dst for e in s.edges(exp, direction="out", type="produced")}
        latest = runs[0]
        for row in runs:
            ev = evidence.get(row["run_id"])
            if row["status"] in ("queued", "running"):
                problems.append(f"run {row['run_id']} still {row['status']} after its processes died")
            if row["status"] == "completed" and (ev is None or ev.id not in produced or row["evidence_id"] != ev.id):
                problems.append(f"run {row['run_id']} completed without its evidence attached")
            if row["status"] != "completed" and ev is not None:
                problems.append(f"run {row['run_id']} {row['status']} but has evidence {ev.id}")
        rows.append({"trial": trial, "delay": delay, "finished_before_kill": finished, "status": latest["status"],
                     "problems": problems})
    return {"trials": rows, "duration": duration}


# -- report ------------------------------------------------------------------------------------------
def machine() -> str:
    import duckdb

    try:
        load = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        load = "?"
    return (f"{os.cpu_count()} cores, load average {load}; Python {platform.python_version()}, "
            f"duckdb {duckdb.__version__}")


def report(rows: list[dict], ingest: dict | None, run: dict | None, started: str, argv: list[str]) -> str:
    out = [f"`python bench/stress_store.py {' '.join(argv)}` — started {started}. Machine: {machine()}.", ""]
    if rows:
        out += ["| N concurrent commands | succeeded | wait p50 / p95 / max, s | slowest command, s | "
                "all done, s | told whom they waited for | consistency | load before the round |",
                "|---|---|---|---|---|---|---|---|"]
        for r in rows:
            out.append(f"| {r['n']} | {r['ok']}/{r['n']} | {r['p50']:.2f} / {r['p95']:.2f} / {r['max']:.2f} | "
                       f"{r['wall_max']:.1f} | {r['total']:.1f} | {r['waited_msgs']} | "
                       f"{'ok' if not r['problems'] else '; '.join(r['problems'])} | {r['load_before']:.1f} |")
        mix = rows[-1]["mix"]
        out += ["", "Mix at the largest N: " + ", ".join(f"{k} {v}" for k, v in mix.items()) + "."]
        out += ["", "Where the store's time went (all turns of a round; CPU is the holding process's):", "",
                "| N | turns | held, s | holders' CPU, s | DuckDB open, s | DuckDB close, s |", "|---|---|---|---|---|---|"]
        for r in rows:
            t = r["turns"]
            out.append(f"| {r['n']} | {t['turns']:.0f} | {t['held_s']:.1f} | {t['cpu_s']:.1f} | {t['open_s']:.1f} | "
                       f"{t['close_s']:.1f} |")
    for name, res in (("ingest", ingest), ("run", run)):
        if not res:
            continue
        trials = res["trials"]
        bad = [t for t in trials if t["problems"]]
        extra = ""
        if name == "run":
            statuses: dict[str, int] = {}
            for t in trials:
                statuses[str(t["status"])] = statuses.get(str(t["status"]), 0) + 1
            extra = "; the killed run ended " + ", ".join(f"{k} {v}" for k, v in sorted(statuses.items()))
        else:
            extra = (f"; {sum(t['embed'] for t in trials)} with embeddings; documents stored at the kill: "
                     + ", ".join(str(t["docs_before_rerun"]) for t in trials))
        out.append("")
        out.append(f"kill -9 during {name}: {len(trials)} trials, {len(trials) - len(bad)} consistent{extra}."
                   + ("" if not bad else " Problems: " + "; ".join(f"trial {t['trial']}: {t['problems']}" for t in bad)))
    return "\n".join(out)


def write_out(path: Path, text: str) -> None:
    doc = path.read_text() if path.exists() else "# Benchmarks\n"
    block = f"{BEGIN}\n{text}\n{END}"
    if BEGIN in doc and END in doc:
        doc = doc[:doc.index(BEGIN)] + block + doc[doc.index(END) + len(END):]
    else:
        doc = doc.rstrip() + "\n\n## Store concurrency and crash safety (`bench/stress_store.py`)\n\n" + block + "\n"
    path.write_text(doc)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, nargs="*", default=[10, 25, 50], help="concurrent commands per round")
    ap.add_argument("--crash-trials", type=int, default=20, help="kill -9 trials of ingest and of a run")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, help="markdown file to write the tables into")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    args = ap.parse_args()
    started = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    work = Path(tempfile.mkdtemp(prefix="cg-stress-"))
    try:
        base = build_base(work)
        rows = []
        for n in args.n:
            row = mixed(base, n, work / f"mixed-{n}", seed=args.seed)
            print(f"N={n}: {row['ok']}/{n} ok, wait p50 {row['p50']:.2f} p95 {row['p95']:.2f} max {row['max']:.2f} s, "
                  f"problems {row['problems'] or 'none'}", flush=True)
            for f in row["failed"]:
                print("  failed:", f, flush=True)
            rows.append(row)
        rng = random.Random(args.seed)
        ingest = crash_ingest(base, args.crash_trials, work / "crash-ingest", rng) if args.crash_trials else None
        run = crash_run(base, args.crash_trials, work / "crash-run", rng) if args.crash_trials else None
        text = report(rows, ingest, run, started, sys.argv[1:])
        print(text)
        if args.out:
            write_out(args.out, text)
    finally:
        if args.keep:
            print(f"work folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
