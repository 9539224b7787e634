"""Web UI benchmark: a node page and a search through the whole web stack, against the graph API in-process.

    python bench/bench_web.py --size 100000 --out docs/benchmarks.md

Builds (or reuses, with --workdir) a store of `bench_graph.make_corpus` papers (claims, findings, methods,
questions; findings support claims), written with `Store.apply` in batches of documents. Stored vectors: with
`--vectors hashed` (default) each node's vector is a feature-hashed bag of its words projected to 384
dimensions and normalised -- the encoder's shape, count and dtype, so every scan costs the same, and texts that
share words are close, so the similarity sections are filled; `--vectors encoder` encodes every text with the real
model instead (about 8 minutes at 100k on 2 cores). Queries are always encoded with the real encoder.

Then, warm (3 requests first), one request after another (each opens the file for its turn in the store's
queue and releases it):
- node page: `GET /node/<id>` (HTML) and its JSON twin through the ASGI app (Starlette's TestClient: routing,
  middleware, a fresh read-only open of the file, node_page, the template) for 30 claims, against the baseline
  `queries.node_page` on a Store kept open (what `claimgraph show` computes, without opening the file);
- search: `GET /search?q=...` for the corpus's 50 queries, against `graph.search.search` on an open Store, both
  including the query's encoding.
Prints a markdown table (median / p95 ms and the web / API ratio) and appends it to --out.
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import argparse
import json
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_graph import machine, make_corpus, pct

from claimgraph.graph import DocumentRef, GraphDelta, Store
from claimgraph.graph.embed import MODEL_NAME, get_embedder
from claimgraph.graph.ids import sha256_hex
from claimgraph.graph.schema import EMBED_DIM
from claimgraph.graph.store import text_hash
from claimgraph.graph.text import tokens

BATCH_DOCS = 250


def hashed_vectors(texts: list[str], seed: int = 0) -> np.ndarray:
    """[n, 384] unit vectors: each word a fixed random direction (by its hash), a text the sum of its words."""
    vocab: dict[str, int] = {}
    rows, cols = [], []
    for i, t in enumerate(texts):
        for w in tokens(t):
            rows.append(i)
            cols.append(vocab.setdefault(w, len(vocab)))
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((len(vocab), EMBED_DIM)).astype(np.float32)  # [V, 384]
    X = np.zeros((len(texts), EMBED_DIM), np.float32)
    np.add.at(X, np.asarray(rows), W[np.asarray(cols)])
    X += 0.05 * rng.standard_normal(X.shape).astype(np.float32)  # no text is exactly zero
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def build(db: Path, n: int, vectors: str, seed: int) -> dict:
    from claimgraph.ingest.pipeline import parse_text

    corpus = make_corpus(n, seed=seed)
    t = time.perf_counter()
    docs = [parse_text(json.dumps(d), f"bench/paper_{i:06d}.json") for i, d in enumerate(corpus.docs)]
    with Store(db) as s:
        for b in range(0, len(docs), BATCH_DOCS):
            part = docs[b:b + BATCH_DOCS]
            delta = GraphDelta(nodes=[x for d in part for x in d.delta.nodes],
                               edges=[x for d in part for x in d.delta.edges])
            texts = {text_hash(x): x.embed_text() for x in delta.nodes}
            keys = list(texts)
            if vectors == "encoder":
                X = get_embedder().encode([texts[k] for k in keys], progress=False)
            else:
                X = hashed_vectors([texts[k] for k in keys], seed=seed + b)
            body = "".join(d.ref.content_hash for d in part)
            ref = DocumentRef(path=f"bench/batch_{b // BATCH_DOCS:05d}", content_hash=sha256_hex(body),
                              format="structured")
            s.apply(delta, ref, vectors=dict(zip(keys, X)), model=MODEL_NAME)
        stored = sum(s.count_nodes().values())
    return {"nodes": stored, "build_s": time.perf_counter() - t, "queries": corpus.queries}


def timed(fn, xs, pause: float) -> list[float]:
    out = []
    for x in xs:
        time.sleep(pause)
        t = time.perf_counter()
        fn(x)
        out.append(time.perf_counter() - t)
    return out


def stats(xs: list[float]) -> tuple[float, float]:
    return statistics.median(xs) * 1e3, pct(xs, 95) * 1e3


def bench(db: Path, queries: list[str], seed: int) -> dict:
    from starlette.testclient import TestClient

    from claimgraph.graph.queries import node_page
    from claimgraph.graph.search import search
    from claimgraph.web import Settings, create_app

    with Store(db, read_only=True) as s:
        ids = [r[0] for r in s.sql("""SELECT dst FROM edges WHERE type = 'supports' GROUP BY dst
                                     ORDER BY hash(dst || ?) LIMIT 30""", [str(seed)])]
    res: dict = {"pages": len(ids), "queries": len(queries)}
    emb = get_embedder()
    emb.encode(["warm up"], progress=False)
    pause = 0.0  # requests take their turn in the store's queue; no pause between them is needed
    app = create_app(Settings(db, port=8000))
    with TestClient(app, base_url="http://127.0.0.1:8000") as c:
        def page(i, suffix=""):
            r = c.get(f"/node/{i}{suffix}")
            assert r.status_code == 200, r.text[:300]

        def web_search(q):
            r = c.get("/search", params={"q": q, "k": 10})
            assert r.status_code == 200, r.text[:300]

        for i in ids[:3]:
            page(i)
        web_search(queries[0])
        res["web_page_ms"] = stats(timed(page, ids, pause))
        res["web_page_json_ms"] = stats(timed(lambda i: page(i, ".json"), ids, pause))
        res["web_search_ms"] = stats(timed(web_search, queries, pause))
    app.state.access.close()
    with Store(db, read_only=True) as s:
        for i in ids[:3]:
            node_page(s, i)
        search(s, queries[0], k=10, embedder=emb)
        res["api_page_ms"] = stats(timed(lambda i: node_page(s, i), ids, 0.0))
        res["api_search_ms"] = stats(timed(lambda q: search(s, q, k=10, embedder=emb), queries, 0.0))
    return res


def render(res: dict, mach: dict, started: str) -> str:
    ms = lambda p: f"{p[0]:.0f} / {p[1]:.0f}"
    ratio = lambda a, b: f"{res[a][0] / res[b][0]:.2f}x"
    n = res["nodes"]
    return "\n".join([
        f"## Web UI ({n} nodes, {res['vectors']} vectors; {started})",
        "",
        f"`python bench/bench_web.py --size {res['size']} --vectors {res['vectors']}`; {mach['cpu']}, "
        f"{mach['cores']} cores, load {mach['load'][0]:.1f}. Warm, each request alone; median / p95 ms over "
        f"{res['pages']} claim pages and {res['queries']} queries. Baseline: the same graph API call on a Store "
        "kept open, in the same process.",
        "",
        "| what | web (ASGI app, store opened per request) | graph API, open store | ratio | goal |",
        "|---|---|---|---|---|",
        f"| node page `/node/<id>` (HTML) | {ms(res['web_page_ms'])} | {ms(res['api_page_ms'])} | "
        f"{ratio('web_page_ms', 'api_page_ms')} | ≤ 200 ms |",
        f"| node page JSON twin | {ms(res['web_page_json_ms'])} | {ms(res['api_page_ms'])} | "
        f"{ratio('web_page_json_ms', 'api_page_ms')} | |",
        f"| search `/search?q=` (incl. encoding) | {ms(res['web_search_ms'])} | {ms(res['api_search_ms'])} | "
        f"{ratio('web_search_ms', 'api_search_ms')} | ≤ 300 ms |",
        "",
    ])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=100_000, help="nodes in the store")
    ap.add_argument("--vectors", choices=("hashed", "encoder"), default="hashed")
    ap.add_argument("--workdir", type=Path, default=None, help="keep (and reuse) the store here")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None, help="append the table to this markdown file")
    a = ap.parse_args(argv)
    started = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    work = a.workdir or Path(tempfile.mkdtemp(prefix="bench_web_"))
    work.mkdir(parents=True, exist_ok=True)
    db = work / f"web_{a.size}_{a.vectors}_{a.seed}.duckdb"
    if db.exists():
        with Store(db, read_only=True) as s:
            info = {"nodes": sum(s.count_nodes().values()), "build_s": None}
        info["queries"] = make_corpus(a.size, seed=a.seed).queries
        print(f"reusing {db} ({info['nodes']} nodes)", file=sys.stderr)
    else:
        print(f"building {db} ...", file=sys.stderr, flush=True)
        info = build(db, a.size, a.vectors, a.seed)
        print(f"built {info['nodes']} nodes in {info['build_s']:.0f}s", file=sys.stderr)
    res = {"size": a.size, "vectors": a.vectors, "nodes": info["nodes"], **bench(db, info["queries"], a.seed)}
    table = render(res, machine(), started)
    print(table)
    if a.out:
        with open(a.out, "a") as f:
            f.write("\n" + table)


if __name__ == "__main__":
    main()
