"""Scale benchmark: a bulk-generated store of up to a million nodes, then suggest, search and node pages.

    python bench/bench_scale.py --nodes 1000000 --out docs/benchmarks-scale.md

Not a million documents through the encoder: the encoder embeds a pool of real benchmark sentences
(`bench_graph.make_corpus`, `--pool` of them, cached in the work folder), and each generated node copies a
pool sentence (its title gets a `#<number>` suffix, so every node has its own text and id) with the pool
vector plus Gaussian noise of a random size (cosine 0.74-0.96 to the pool vector), so nodes form loose
groups around real sentence embeddings. Findings `supports` a random claim (typed edges that suggest must
skip). Rows go into the store's tables in bulk (nodes, node_terms, embeddings, edges); nothing else of
ingest runs. Then, in one process:

- suggest (cosine >= threshold, each node's best `per_node` pairs) with the method `suggest` picks for the
  size (exact blocked products, or the approximate-nearest-neighbour index at scale), and its recall: the
  share of the exact best pairs of a random sample of nodes (brute force against every node, same
  exclusions) that suggest stored; below the ANN size also the bare matrix-product floor on the same matrix;
- warm search latency without the query's encoding (total minus the encode, per query) and its keyword part;
- warm node pages (`queries.node_page`, what `show` renders) and a cold `claimgraph show` in a new process.

Prints a markdown table and writes it, with the machine and its load, to --out.
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import argparse
import hashlib
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_graph import floor_products, machine, make_corpus

from claimgraph.graph import Store, similarity
from claimgraph.graph.ids import slugify
from claimgraph.graph.schema import EMBED_DIM
from claimgraph.graph.text import term_counts

KINDS = {"papers": "paper", "claims": "claim", "findings": "finding", "methods": "method", "questions": "question"}


def pool_sentences(size: int, seed: int) -> list[tuple[str, str]]:
    """(node type, title) of `size` distinct benchmark sentences."""
    corpus = make_corpus(size, seed=seed)
    out: dict[str, str] = {}
    for doc in corpus.docs:
        for paper in doc["papers"]:
            out.setdefault(paper["title"], "paper")
            for key in ("claims", "findings", "methods", "questions"):
                for item in paper.get(key, []):
                    out.setdefault(item["title"], KINDS[key])
    return [(t, title) for title, t in out.items()][:size]


def pool_vectors(pool: list[tuple[str, str]], cache: Path) -> np.ndarray:
    """[P, 384] real encoder vectors of the pool titles (cached in `cache`)."""
    if cache.exists():
        vec = np.load(cache)
        if len(vec) == len(pool):
            return vec
    from claimgraph.graph.embed import get_embedder

    vec = get_embedder().encode([title for _, title in pool], progress=False)
    np.save(cache, vec)
    return vec


def noisy_copies(pool_vec: np.ndarray, base: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """[len(base), 384] unit vectors: pool_vec[base] plus Gaussian noise of norm ~eta, eta uniform in
    [0.3, 0.9] per node (cosine 1/sqrt(1 + eta^2), 0.74-0.96, to its pool vector)."""
    eta = rng.uniform(0.3, 0.9, size=len(base)).astype(np.float32)
    noise = rng.standard_normal((len(base), EMBED_DIM), dtype=np.float32) / np.float32(np.sqrt(EMBED_DIM))
    X = pool_vec[base] + eta[:, None] * noise
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    return X


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def build_store(path: Path, n: int, pool: list[tuple[str, str]], pool_vec: np.ndarray, seed: int,
                chunk: int = 100_000, log=print) -> dict:
    """Write `n` generated nodes (and their terms, vectors and supports edges) into a new store at `path`."""
    import pyarrow as pa

    from claimgraph.graph.embed import MODEL_NAME

    rng = np.random.default_rng(seed)
    P = len(pool)
    kinds = np.array([k for k, _ in pool])
    slugs = [slugify(t)[:48].rstrip("-") for _, t in pool]
    pool_terms = [term_counts(t) for _, t in pool]
    base = rng.integers(P, size=n)
    now = _now()
    t0 = time.perf_counter()
    claims = np.flatnonzero(kinds[base] == "claim")
    with Store(path) as store, store.transaction():
        con = store.con
        for c0 in range(0, n, chunk):
            idx = np.arange(c0, min(c0 + chunk, n))
            b = base[idx]
            titles = [f"{pool[x][1]} #{i}" for i, x in zip(idx.tolist(), b.tolist())]
            ids = [f"{pool[x][0]}:{slugs[x]}-{i}" for i, x in zip(idx.tolist(), b.tolist())]
            hashes = [hashlib.sha256(t.encode()).hexdigest() for t in titles]
            X = noisy_copies(pool_vec, b, rng)
            nodes = pa.table({"id": ids, "type": kinds[b].tolist(), "title": titles, "text_hash": hashes})
            t_terms, t_tfs = [], []  # node_terms: a row per node, its terms and their counts as lists
            for x, i in zip(b.tolist(), idx.tolist()):
                counts = pool_terms[x] if i < 10 else {**pool_terms[x], str(i): 1}
                t_terms.append(list(counts)); t_tfs.append(list(counts.values()))
            terms = pa.table({"node_id": ids, "terms": pa.array(t_terms, pa.list_(pa.string())),
                              "tfs": pa.array(t_tfs, pa.list_(pa.int32()))})
            vecs = pa.table({"text_hash": hashes,
                             "vector": pa.FixedSizeListArray.from_arrays(pa.array(X.reshape(-1)), EMBED_DIM)})
            # findings support a random claim
            fi = idx[kinds[b] == "finding"]
            dst = claims[rng.integers(len(claims), size=len(fi))] if len(claims) else np.zeros(0, np.int64)
            edges = pa.table({"src": [ids[i - c0] for i in fi.tolist()],
                              "dst": [f"{pool[base[j]][0]}:{slugs[base[j]]}-{j}" for j in dst.tolist()]})
            for name, tbl in (("_b_nodes", nodes), ("_b_terms", terms), ("_b_vecs", vecs), ("_b_edges", edges)):
                con.register(name, tbl)
            con.execute("""INSERT INTO nodes SELECT id, type, title, '', '{}', text_hash, 'bench', NULL, 'parsed',
                           $now, $now FROM _b_nodes""", {"now": now})
            con.execute("INSERT INTO node_terms SELECT * FROM _b_terms")
            con.execute("INSERT INTO embeddings SELECT text_hash, $m, vector, $now FROM _b_vecs",
                        {"m": MODEL_NAME, "now": now})
            con.execute("""INSERT INTO edges SELECT src, 'supports', dst, '{}', 'bench', NULL, 'parsed', $now, $now
                           FROM _b_edges""", {"now": now})
            for name in ("_b_nodes", "_b_terms", "_b_vecs", "_b_edges"):
                con.unregister(name)
            log(f"  generated {idx[-1] + 1} nodes ({time.perf_counter() - t0:.0f}s)")
        stats = {"nodes": sum(store.count_nodes().values()), "edges": sum(store.count_edges().values()),
                 "terms": store.sql("SELECT coalesce(sum(len(terms)), 0) FROM node_terms")[0][0]}
    stats["build_s"] = time.perf_counter() - t0
    return stats


def exact_candidates(X: np.ndarray, sample: np.ndarray, threshold: float) -> dict[int, list[int]]:
    """For each sampled position, every other position with cosine >= threshold, best first (ties by position),
    by brute force against every row of X."""
    out = {}
    for s0 in range(0, len(sample), 256):
        rows = sample[s0:s0 + 256]
        S = X[rows] @ X.T  # [r, n]
        for r, p in enumerate(rows.tolist()):
            s = S[r]
            s[p] = -2
            cand = np.flatnonzero(s >= threshold)
            out[p] = cand[np.lexsort((cand, -s[cand]))].tolist()
    return out


def exact_best(store: Store, sample: np.ndarray, ids: list[str], X: np.ndarray, threshold: float,
               per_node: int) -> set[tuple[str, str]]:
    """The best `per_node` pairs (cosine >= threshold, no typed edge) of each sampled position, by brute force."""
    linked = {tuple(sorted(r)) for r in store.sql("SELECT src, dst FROM edges")}
    out = set()
    for p, cand in exact_candidates(X, sample, threshold).items():
        pairs = (tuple(sorted((ids[p], ids[q]))) for q in cand)
        out.update([pair for pair in pairs if pair not in linked][:per_node])
    return out


def bench(args) -> dict:
    from claimgraph.graph.embed import MODEL_NAME, get_embedder
    from claimgraph.graph.queries import node_page
    from claimgraph.graph.search import keyword_search, search
    from claimgraph.graph.similarity import PER_NODE, suggest

    log = lambda *a: print(f"[{args.nodes}]", *a, file=sys.stderr, flush=True)
    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    res: dict = {"nodes": args.nodes, "pool": args.pool, "threshold": args.threshold, "per_node": PER_NODE,
                 "load_start": os.getloadavg()}
    pool = pool_sentences(args.pool, args.seed)
    pool_vec = pool_vectors(pool, work / f"pool_{len(pool)}_{args.seed}.npy")
    db = work / f"scale_{args.nodes}.duckdb"
    if not db.exists() or args.rebuild:
        for p in (db, Path(str(db) + ".wal")):
            p.unlink(missing_ok=True)
        log(f"building the store from a pool of {len(pool)} encoded sentences")
        res["build"] = build_store(db, args.nodes, pool, pool_vec, args.seed, log=log)
    with Store(db) as store:
        res["stored_nodes"] = sum(store.count_nodes().values())
        from claimgraph.graph import ann

        saved = ann.load(store, MODEL_NAME)
        res["suggest_reused"] = bool(args.reuse_suggest and saved is not None and saved.vectors is not None)
        if not res["suggest_reused"]:
            with store.transaction():
                store.con.execute("DELETE FROM suggestions")  # each run starts from no suggestions
            # -- suggest
            t, cpu = time.perf_counter(), time.process_time()
            got = suggest(store, threshold=args.threshold, limit=1000, progress=False)
            res["suggest_s"] = time.perf_counter() - t
            res["suggest_cpu_s"] = time.process_time() - cpu  # every thread of this process: what 2 cores can share
            res["returned"] = len(got)
        else:
            log("suggest not re-run (--reuse-suggest): its pairs and saved index are from an earlier run")
        res["pairs"] = store.sql("SELECT count(*) FROM suggestions WHERE state = 'open'")[0][0]
        log(f"suggest {res.get('suggest_s', float('nan')):.1f}s, {res['pairs']} pairs")
        # recall on a sample against brute force
        tbl = store.arrow("""SELECT n.id, e.vector FROM nodes n JOIN embeddings e ON e.text_hash = n.text_hash
            AND e.model = ? ORDER BY n.id""", [MODEL_NAME])
        ids = tbl.column("id").to_pylist()
        X = tbl.column("vector").combine_chunks().values.to_numpy().reshape(len(ids), EMBED_DIM)
        del tbl
        sample = np.random.default_rng(args.seed + 1).choice(len(ids), size=min(args.sample, len(ids)), replace=False)
        want = exact_best(store, sample, ids, X, args.threshold, PER_NODE)
        sampled = {ids[p] for p in sample.tolist()}
        have = {tuple(r) for r in store.sql("""SELECT a, b FROM suggestions WHERE state = 'open'
            AND (a IN (SELECT unnest($1)) OR b IN (SELECT unnest($1)))""", [sorted(sampled)])}
        res["recall"] = len(want & have) / max(len(want), 1)
        res["recall_pairs"] = len(want)
        log(f"recall {res['recall']:.4f} of {len(want)} exact best pairs of {len(sample)} nodes")
        res["method"] = "ann" if len(ids) >= ann.ANN_MIN_NODES else "exact"
        if res["method"] == "exact" and "suggest_s" in res:  # the floor: bare tile products over the same matrix, in the same process
            res["floor_s"] = floor_products(np.ascontiguousarray(X), 4096, similarity.STRIP)
            log(f"floor {res['floor_s']:.1f}s: suggest / floor {res['suggest_s'] / res['floor_s']:.2f}")
        del X
        # -- search, warm
        emb = get_embedder()
        r = random.Random(args.seed)
        titles = [row[0] for row in store.sql("SELECT title FROM nodes USING SAMPLE 10 ROWS (reservoir, 7)")]
        unseen = [t for _, t in pool_sentences(args.pool + 400, args.seed + 99)[-400:]]
        queries = titles + r.sample(unseen, 40)
        search(store, "warm up the caches", k=10)
        total, encode, keyword = [], [], []
        for q in queries:
            t0 = time.perf_counter()
            search(store, q, k=10)
            t1 = time.perf_counter()
            emb.encode([q], progress=False)
            t2 = time.perf_counter()
            keyword_search(store, q, k=10)
            t3 = time.perf_counter()
            total.append(t1 - t0); encode.append(t2 - t1); keyword.append(t3 - t2)
        res["search_ms"] = statistics.median(a - b for a, b in zip(total, encode)) * 1e3
        res["keyword_ms"] = statistics.median(keyword) * 1e3
        res["encode_ms"] = statistics.median(encode) * 1e3
        res["exact_first"] = sum(search(store, q, k=1)[0].title == q for q in titles)
        log(f"search {res['search_ms']:.1f} ms without encoding, keyword {res['keyword_ms']:.1f} ms")
        # -- node pages, warm
        page_ids = [row[0] for row in store.sql("SELECT id FROM nodes USING SAMPLE 21 ROWS (reservoir, 3)")]
        node_page(store, page_ids[0])
        ts = []
        for i in page_ids[1:]:
            t0 = time.perf_counter()
            node_page(store, i)
            ts.append(time.perf_counter() - t0)
        res["page_ms"] = statistics.median(ts) * 1e3
        log(f"node page {res['page_ms']:.1f} ms")
    # -- cold show in a new process (the store closed above)
    cold = []
    for i in page_ids[1:4]:
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, "-m", "claimgraph.cli.main", "--db", str(db), "--json", "show", i],
                             capture_output=True, text=True)
        cold.append(time.perf_counter() - t0)
        if out.returncode != 0:
            raise SystemExit(f"claimgraph show failed: {out.stderr}")
    res["cold_show_s"] = statistics.median(cold)
    log(f"cold show {res['cold_show_s']:.2f} s (new process)")
    res["load_end"] = os.getloadavg()
    return res


def render(res: dict, mach: dict, started: str) -> str:
    b = res.get("build")
    rows = [
        ("nodes stored (pool of encoded sentences)", f"{res['stored_nodes']} ({res['pool']})"),
        ("store generation, s (nodes, terms, vectors, edges in bulk)", f"{b['build_s']:.0f}" if b else "reused"),
        (f"suggest (cosine >= {res['threshold']}, best {res['per_node']} per node; {res.get('method', '?')}), s",
         f"{res['suggest_s']:.1f}" if "suggest_s" in res else "not re-run (--reuse-suggest)"),
        ("  matrix-product floor (bare tiles in suggest's strips, same matrix), s; suggest / floor",
         f"{res['floor_s']:.1f}; **{res['suggest_s'] / res['floor_s']:.2f}**" if "floor_s" in res else "not run (ANN)"),
        ("  CPU seconds in this process (all threads; on a loaded machine wall time is longer)",
         f"{res['suggest_cpu_s']:.0f}" if "suggest_cpu_s" in res else "—"),
        ("  open pairs stored", f"{res['pairs']}"),
        ("  recall of the exact best pairs of a sample (pairs)", f"{res['recall']:.4f} ({res['recall_pairs']})"),
        ("search, warm, without the query encoding, ms (median)", f"{res['search_ms']:.1f}"),
        ("  - keyword part, ms", f"{res['keyword_ms']:.1f}"),
        ("  - query encoding (not included), ms", f"{res['encode_ms']:.1f}"),
        ("exact-title queries ranked first", f"{res['exact_first']}/10"),
        ("node page (`show`), warm, ms (median)", f"{res['page_ms']:.1f}"),
        ("`claimgraph show` in a new process, s (median of 3)", f"{res['cold_show_s']:.2f}"),
    ]
    out = ["# Scale benchmark", "",
           f"`python bench/bench_scale.py --nodes {res['nodes']}` — started {started}, one process.", "",
           f"Machine: {mach['cores']} cores ({mach['cpu']}), shared (load average {res['load_start'][0]:.1f} at start, "
           f"{res['load_end'][0]:.1f} at end); torch {mach['torch']}, duckdb {mach['duckdb']}, numpy {mach['numpy']}.", "",
           "| measure | value |", "|---|---|"]
    out += [f"| {k} | {v} |" for k, v in rows]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nodes", type=int, default=1_000_000)
    ap.add_argument("--pool", type=int, default=20_000, help="encoded sentences the nodes are generated around")
    ap.add_argument("--threshold", type=float, default=0.65)
    ap.add_argument("--sample", type=int, default=1000, help="nodes whose exact best pairs measure recall")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "claimgraph-bench-scale",
                    help="keeps the pool vectors and the generated store between runs")
    ap.add_argument("--rebuild", action="store_true", help="generate the store again even if it exists")
    ap.add_argument("--reuse-suggest", action="store_true",
                    help="keep the suggestions and nearest-neighbour index of an earlier run (with its vector copy) "
                         "and measure the rest: search, node pages, cold show, recall")
    ap.add_argument("--out", type=Path, default=None, help="markdown file to write the table to")
    args = ap.parse_args(argv)
    started = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    res = bench(args)
    text = render(res, machine(), started)
    print(text)
    print(json.dumps(res, default=str), file=sys.stderr)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
