"""Keyword index candidates for search's BM25 part: build time, warm query time, agreement.

    python bench/bench_keyword.py --nodes 100000

One store of the benchmark's sentences (`bench_graph.make_corpus`; nodes and node_terms written in bulk,
no encoder). Each candidate indexes the same terms (`claimgraph.graph.text.tokens`, so stemming and stop
words are identical) and answers the same queries (10 exact titles, 40 unseen sentences), top 10:

- `in-memory` — what search uses: `search.keyword_search` over the CSR inverted index built from node_terms;
- `sql` — the BM25 query in SQL over node_terms that search ran before (joins per query);
- `duckdb-fts` — DuckDB's fts extension (`PRAGMA create_fts_index`, `match_bm25`), from the PyPI wheel
  duckdb-extension-fts built for duckdb 1.5.5, over the pre-tokenised text with its own stemmer off;
- `tantivy` — tantivy's Python bindings, pre-tokenised text with the whitespace tokenizer.

Agreement: the share of the in-memory index's top 10 each one returns (fts and tantivy store lengths and
document frequencies their own way, so scores differ slightly). Extras: pip install -e '.[bench]';
a candidate that is not installed is skipped.
"""
from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_graph import make_corpus

from claimgraph.graph import Store
from claimgraph.graph.ids import make_id
from claimgraph.graph.search import K1, B, keyword_index, keyword_search
from claimgraph.graph.text import term_counts, tokens

SQL_BM25 = """
WITH qt AS (SELECT DISTINCT unnest($terms::VARCHAR[]) AS term),
hits AS (SELECT t.node_id, t.term, t.tf FROM _term_rows t JOIN qt USING (term)),
df AS (SELECT term, count(*) AS df FROM hits GROUP BY term),
corpus AS (SELECT greatest((SELECT count(*) FROM nodes), 1)::DOUBLE AS n_docs,
                  greatest((SELECT coalesce(sum(tf), 0) FROM _term_rows), 1)::DOUBLE AS total),
idf AS (SELECT term, ln(1 + (c.n_docs - df + 0.5) / (df + 0.5)) AS idf FROM df CROSS JOIN corpus c),
dl AS (SELECT node_id, dl FROM _dl),
bm25 AS (
    SELECT h.node_id AS id,
           sum(idf.idf * h.tf * ($k1 + 1) / (h.tf + $k1 * (1 - $b + $b * dl.dl / (c.total / c.n_docs)))) AS bm25
    FROM hits h JOIN idf USING (term) JOIN dl USING (node_id) CROSS JOIN corpus c
    GROUP BY h.node_id)
SELECT id, bm25 FROM bm25 ORDER BY bm25 DESC, id LIMIT 10"""


def build(path: Path, n: int) -> tuple[list[str], list[str], list[str]]:
    """(ids, texts, queries): `n` benchmark sentences as nodes with their node_terms, written in bulk."""
    import pyarrow as pa

    corpus = make_corpus(n)
    texts = list(dict.fromkeys(corpus.texts))
    ids = [make_id("claim", t)[:60].rstrip("-") + f"-{i}" for i, t in enumerate(texts)]
    counts = [term_counts(x) for x in texts]
    with Store(path) as store, store.transaction():
        con = store.con
        con.register("_n", pa.table({"id": ids, "title": texts}))
        con.register("_t", pa.table({"node_id": ids, "terms": pa.array([list(c) for c in counts], pa.list_(pa.string())),
                                     "tfs": pa.array([list(c.values()) for c in counts], pa.list_(pa.int32()))}))
        con.execute("""INSERT INTO nodes SELECT id, 'claim', title, '', '{}', md5(title), NULL, NULL, 'parsed',
                       now()::TIMESTAMP, now()::TIMESTAMP FROM _n""")
        con.execute("INSERT INTO node_terms SELECT * FROM _t")
    r = random.Random(1)
    return ids, texts, r.sample(texts, 10) + r.sample(list(dict.fromkeys(make_corpus(n + 2000, seed=9).texts))[-1500:], 40)


def timed(fn, queries) -> tuple[float, list[list[str]]]:
    out, ts = [], []
    fn(queries[0])
    for q in queries:
        t = time.perf_counter()
        out.append(fn(q))
        ts.append(time.perf_counter() - t)
    return statistics.median(ts) * 1e3, out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nodes", type=int, default=100_000)
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args(argv)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="claimgraph-bench-kw-"))
    work.mkdir(parents=True, exist_ok=True)
    db = work / f"kw_{args.nodes}.duckdb"
    db.unlink(missing_ok=True)
    ids, texts, queries = build(db, args.nodes)
    qterms = {q: " ".join(sorted(set(tokens(q)))) for q in queries}
    rows = []
    with Store(db) as store, store.session(write=True):  # the SQL alternatives make temp tables and indexes
        con = store.con
        t = time.perf_counter()
        keyword_index(store)
        build_s = time.perf_counter() - t
        ms, ref = timed(lambda q: [i for i, _ in keyword_search(store, q, k=10)], queries)
        rows.append(("in-memory (search.keyword_search)", build_s, ms, 1.0))
        # the SQL alternatives read a row per (node, term), the layout node_terms had before schema 9
        con.execute("CREATE TEMP TABLE _term_rows AS SELECT node_id, unnest(terms) AS term, unnest(tfs) AS tf "
                    "FROM node_terms")
        agree = lambda got: statistics.mean(len(set(a) & set(b)) / max(len(b), 1) for a, b in zip(got, ref))  # zip: fts has 10

        t = time.perf_counter()
        con.execute("CREATE TEMP TABLE _dl AS SELECT node_id, sum(tf) AS dl FROM _term_rows GROUP BY node_id")
        sql_build = time.perf_counter() - t
        ms, got = timed(lambda q: [r[0] for r in con.execute(SQL_BM25, {"terms": sorted(set(tokens(q))), "k1": K1,
                                                                          "b": B}).fetchall()], queries)
        rows.append(("BM25 in SQL over node_terms (before)", sql_build, ms, agree(got)))

        try:
            import duckdb_extension_fts

            ext = Path(duckdb_extension_fts.__file__).parent / "extensions" / "v1.5.5" / "fts.duckdb_extension"
            con.execute(f"LOAD '{ext}'")
            con.execute("CREATE TABLE _docs AS SELECT t.node_id AS id, string_agg(t.term, ' ') AS toks "
                        "FROM (SELECT node_id, term FROM _term_rows, range(tf)) t GROUP BY t.node_id")
            t = time.perf_counter()
            con.execute("PRAGMA create_fts_index('_docs', 'id', 'toks', stemmer='none', stopwords='none', "
                        "ignore='\\s+', strip_accents=0, lower=0, overwrite=1)")
            fts_build = time.perf_counter() - t
            ms, got = timed(lambda q: [r[0] for r in con.execute(
                "SELECT id FROM (SELECT id, fts_main__docs.match_bm25(id, $q, k := 1.2, b := 0.75) AS s FROM _docs) "
                "WHERE s IS NOT NULL ORDER BY s DESC, id LIMIT 10", {"q": qterms[q]}).fetchall()], queries[:10])
            rows.append(("DuckDB fts extension (match_bm25)", fts_build, ms, agree(got)))
        except ImportError as e:
            rows.append((f"DuckDB fts extension: not installed ({e})", float("nan"), float("nan"), float("nan")))

        try:
            import tantivy

            folder = work / "tantivy"
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            sb = tantivy.SchemaBuilder()
            sb.add_text_field("id", stored=True, tokenizer_name="raw")
            sb.add_text_field("toks", stored=False, tokenizer_name="whitespace")
            index = tantivy.Index(sb.build(), path=str(folder))
            docs = con.execute("SELECT node_id, string_agg(term, ' ') FROM (SELECT node_id, term FROM _term_rows, "
                               "range(tf)) GROUP BY node_id").fetchall()
            t = time.perf_counter()
            w = index.writer(heap_size=200_000_000, num_threads=1)
            for i, toks in docs:
                w.add_document(tantivy.Document(id=i, toks=toks))
            w.commit()
            w.wait_merging_threads()
            index.reload()
            tv_build = time.perf_counter() - t
            searcher = index.searcher()

            def tv(q):
                hits = searcher.search(index.parse_query(qterms[q], ["toks"]), 10).hits
                return [searcher.doc(a)["id"][0] for _, a in hits]

            ms, got = timed(tv, queries)
            rows.append(("tantivy", tv_build, ms, agree(got)))
        except ImportError as e:
            rows.append((f"tantivy: not installed ({e})", float("nan"), float("nan"), float("nan")))
    print(f"{len(ids)} nodes, {len(queries)} queries (fts: the 10 exact titles only, it is slow); load "
          f"{os.getloadavg()[0]:.1f}\n")
    print("| index | build s | warm query ms (median) | share of the in-memory top 10 |\n|---|---|---|---|")
    for name, b, q, a in rows:
        print(f"| {name} | {b:.2f} | {q:.2f} | {a:.2f} |")
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
