"""Hybrid search: semantic similarity to the query's embedding plus BM25 over the keyword index.

Scoring. Each node gets two components in [0, 1]-ish scales:

- `semantic`: cosine between the query's embedding and the node's stored vector.
- `keyword`: BM25 (k1 = 1.2, b = 0.75, Lucene's idf `ln(1 + (N - df + .5) / (df + .5))`) over `node_terms`,
  the query tokenised with the same `claimgraph.graph.text.tokens`, divided by
  `max(best BM25 among the nodes searched, ideal)`, where `ideal` is the score of an average-length node
  holding each indexed query term once (the sum of the terms' idf). So the best match scores 1 when it is a
  real match, and a node sharing one common word with a long query stays small instead of being inflated to 1
  (plain max-normalisation would do that, and a paraphrase sharing no words would then lose to it).

`score = ALPHA * semantic + (1 - ALPHA) * keyword`. A convex combination rather than reciprocal-rank
fusion because both components are on absolute scales (cosine; BM25 as a fraction of an ideal match), so
the magnitudes carry meaning that rank fusion would throw away (a weak best keyword hit is not rank 1 of
anything useful), and the two parts shown per result add up to the score. A node whose words match the
query exactly has both parts near their maximum and ranks first; a paraphrase with no shared word still
ranks on its cosine. A node without a stored vector counts semantic 0 (shown as None); when the query has no
indexed term, the score is the cosine alone; when the store has no vectors, the keyword part alone.

Semantic scan: numpy over an in-process copy of the vector matrix (cached per store and model with the
keyword index's document lengths, checked against a cheap fingerprint on every query), or DuckDB's
`array_cosine_similarity`; `bench/bench_graph.py`
measures both (docs/benchmarks.md), and numpy is the default because a warm query is ~40x faster at 100k.
"""
from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import TYPE_CHECKING, Any, Literal

from .errors import InvalidInput, StoreError
from .models import NodeType, Records, SearchResult, node_type_value
from .schema import EMBED_DIM
from .store import reads
from .text import tokens

if TYPE_CHECKING:
    import numpy as np

    from .embed import Embedder
    from .store import Store

ALPHA = 0.5   # weight of the semantic part; 1 - ALPHA goes to the keyword part
K1 = 1.2      # BM25 term-frequency saturation (standard)
B = 0.75      # BM25 length normalisation (standard)

Backend = Literal["numpy", "duckdb"]


def _prefix(type_value: str | None) -> str | None:
    """`claim:` for claim: ids are `type:slug` (checked on every write), so the type filter needs no join."""
    return None if type_value is None else type_value + ":"


def _query(store: "Store", sql: str, params: dict[str, Any]) -> list[tuple]:
    """Run read SQL with named parameters; duckdb errors become StoreError."""
    import duckdb

    try:
        return store.con.execute(sql, params).fetchall()
    except duckdb.Error as e:
        raise StoreError(f"search query failed: {e}") from None


# -- in-process caches ---------------------------------------------------------------------------
# Per kind, the last store asked for: (weak reference to the store, fingerprint, value). A warm search
# reuses the vector matrix and the keyword index's document lengths; every call re-checks the fingerprint.
_CACHE: dict[str, tuple["weakref.ref[Store]", tuple, Any]] = {}


def _fingerprint(store: "Store", model: str | None = None) -> tuple:
    """Changes whenever a node is added, removed or rewritten (and so its terms), or a vector is stored for `model`."""
    return (model,) + tuple(store.sql("""SELECT (SELECT count(*) FROM nodes), (SELECT max(updated_at) FROM nodes),
                                         (SELECT count(*) FROM embeddings WHERE model = ?)""", [model])[0])


def _cached(store: "Store", kind: str, fingerprint: tuple, fill: Callable[[], Any]) -> Any:
    hit = _CACHE.get(kind)
    if hit is not None and hit[0]() is store and hit[1] == fingerprint:
        return hit[2]
    _CACHE.pop(kind, None)  # drop the old copy before reading a new one
    value = fill()
    _CACHE[kind] = (weakref.ref(store), fingerprint, value)
    return value


def _doc_lengths(store: "Store", fp: tuple | None = None) -> Any:
    """Arrow table (node_id, dl): each node's number of index terms, cached in-process.

    Computing it inside the BM25 query means probing every row of node_terms with long id strings, the
    query's main cost at 100k nodes; a warm search joins this table instead. `fp`: a `_fingerprint` the
    caller just took (saves a query).
    """
    nodes_fp = (fp or _fingerprint(store))[1:3]  # node count and last write: node_terms changes only with them
    return _cached(store, "doc_lengths", nodes_fp, lambda: store.con.execute(
        "SELECT node_id, sum(tf)::INTEGER AS dl FROM node_terms GROUP BY node_id").to_arrow_table())


# -- keyword part ---------------------------------------------------------------------------------
def _query_terms(query: str) -> list[str]:
    return sorted(set(tokens(query)))


# Per-node BM25 for the query terms `$terms`, and the ideal score (see module docstring). Needs the
# document lengths registered as `_search_dl` (see `_keyword_source`).
_BM25_SQL = """
WITH qt AS (SELECT DISTINCT unnest($terms::VARCHAR[]) AS term),
hits AS (SELECT t.node_id, t.term, t.tf FROM node_terms t JOIN qt USING (term)),
df AS (SELECT term, count(*) AS df FROM hits GROUP BY term),
corpus AS (SELECT greatest((SELECT count(*) FROM nodes), 1)::DOUBLE AS n_docs,
                  greatest((SELECT coalesce(sum(dl), 0) FROM _search_dl), 1)::DOUBLE AS total),  -- = sum(tf)
idf AS (SELECT term, ln(1 + (c.n_docs - df + 0.5) / (df + 0.5)) AS idf FROM df CROSS JOIN corpus c),
dl AS (SELECT node_id, dl FROM _search_dl),
bm25 AS (
    SELECT h.node_id AS id,
           sum(idf.idf * h.tf * ($k1 + 1) / (h.tf + $k1 * (1 - $b + $b * dl.dl / (c.total / c.n_docs)))) AS bm25
    FROM hits h JOIN idf USING (term) JOIN dl USING (node_id) CROSS JOIN corpus c
    GROUP BY h.node_id),
ideal AS (SELECT coalesce(sum(idf), 0) AS ideal FROM idf)
"""


@contextmanager
def _keyword_source(store: "Store", fp: tuple | None = None) -> Iterator[None]:
    """Registers the document lengths as `_search_dl` for `_BM25_SQL`."""
    con = store.con
    con.register("_search_dl", _doc_lengths(store, fp))
    try:
        yield
    finally:
        con.unregister("_search_dl")


@reads
def keyword_search(store: "Store", query: str, *, type: NodeType | str | None = None,
                   k: int = 10) -> list[tuple[str, float]]:
    """The `k` best (node id, raw BM25) for `query`, best first; the keyword part of `search` on its own."""
    tval = node_type_value(type)
    terms = _query_terms(query)
    if not terms:
        return []
    with _keyword_source(store):
        rows = _query(store, _BM25_SQL + """
            SELECT id, bm25 FROM bm25 WHERE $prefix IS NULL OR starts_with(id, $prefix)
            ORDER BY bm25 DESC, id LIMIT $k""", {"terms": terms, "k1": K1, "b": B, "prefix": _prefix(tval), "k": k})
    return [(r[0], float(r[1])) for r in rows]


# -- semantic part --------------------------------------------------------------------------------
def vector_matrix(store: "Store", model: str, fp: tuple | None = None) -> tuple[Any, "np.ndarray"]:
    """(pyarrow array of node ids [n], float32 matrix [n, 384]) of every embedded node, cached in-process.
    `fp`: a `_fingerprint(store, model)` the caller just took (saves a query)."""
    def fill() -> tuple[Any, "np.ndarray"]:
        tbl = store.con.execute("""SELECT n.id, e.vector FROM nodes n
            JOIN embeddings e ON e.text_hash = n.text_hash AND e.model = ?""", [model]).to_arrow_table()
        ids = tbl.column("id").combine_chunks()
        vec = tbl.column("vector").combine_chunks()
        return ids, vec.values.to_numpy(zero_copy_only=False).reshape(len(ids), EMBED_DIM)  # [n, 384]

    return _cached(store, "vectors", fp or _fingerprint(store, model), fill)


def cached_vector_matrix(store: "Store", model: str) -> tuple[Any, "np.ndarray"] | None:
    """`vector_matrix(store, model)` if it is already cached for this store and still current, else None (reads
    no vectors). A long-lived process (the web UI) keeps it warm; a one-off command does not pay to load it."""
    hit = _CACHE.get("vectors")
    if hit is None or hit[0]() is not store:
        return None
    return hit[2] if hit[1] == _fingerprint(store, model) else None


@contextmanager
def _semantic_source(store: "Store", qvec: "np.ndarray", model: str, backend: Backend,
                     fp: tuple | None = None) -> Iterator[str]:
    """SQL of a relation (id, cos): every embedded node's cosine to the unit query vector [384].

    numpy: computed here over the cached matrix and handed to DuckDB as an Arrow table. duckdb: scanned
    in SQL with array_cosine_similarity (the query vector goes in as a one-row Arrow table: binding it
    as a 384-element list parameter costs ~60 ms).
    """
    import numpy as np
    import pyarrow as pa

    qvec = np.asarray(qvec, dtype=np.float32).reshape(EMBED_DIM)
    if backend == "numpy":
        ids, mat = vector_matrix(store, model, fp)
        cos = mat @ qvec  # [n]
        name, tbl = "_search_sem", pa.table({"id": ids, "cos": pa.array(cos, pa.float32())})
        sql = "SELECT id, cos FROM _search_sem"
    elif backend == "duckdb":
        name, tbl = "_search_q", pa.table({"v": pa.FixedSizeListArray.from_arrays(pa.array(qvec), EMBED_DIM)})
        # cosines first, then the join: joining nodes to the vectors themselves copies every vector (4x slower)
        sql = f"""SELECT n.id, c.cos FROM (
                      SELECT e.text_hash, array_cosine_similarity(e.vector, q.v) AS cos FROM embeddings e
                      CROSS JOIN _search_q q WHERE e.model = '{model.replace("'", "''")}') c
                  JOIN nodes n ON n.text_hash = c.text_hash"""
    else:
        raise InvalidInput(f"unknown search backend {backend!r}; use numpy or duckdb")
    con = store.con
    con.register(name, tbl)
    try:
        yield sql
    finally:
        con.unregister(name)


@reads
def semantic_search(store: "Store", qvec: "np.ndarray", *, model: str, type: NodeType | str | None = None,
                    k: int = 10, backend: Backend = "numpy") -> list[tuple[str, float]]:
    """The `k` (node id, cosine) most similar to a unit query vector [384], best first; no encoder."""
    import numpy as np

    tval = node_type_value(type)
    qvec = np.asarray(qvec, dtype=np.float32).reshape(EMBED_DIM)
    if backend == "numpy" and tval is None:  # all in numpy: top k without a join
        ids, mat = vector_matrix(store, model)
        cos = mat @ qvec  # [n]
        top = np.argsort(-cos, kind="stable")[:k] if len(cos) <= k else np.argpartition(-cos, k)[:k]
        return sorted(((ids[int(i)].as_py(), float(cos[i])) for i in top), key=lambda p: (-p[1], p[0]))
    with _semantic_source(store, qvec, model, backend) as sem:
        rows = _query(store, f"""WITH sem AS ({sem}) SELECT id, cos FROM sem
            WHERE $prefix IS NULL OR starts_with(id, $prefix) ORDER BY cos DESC, id LIMIT $k""",
                      {"prefix": _prefix(tval), "k": k})
    return [(r[0], float(r[1])) for r in rows]


# -- hybrid ---------------------------------------------------------------------------------------
def search(store: "Store", query: str, *, type: NodeType | str | None = None, k: int = 10,
           embedder: "Embedder | None" = None, backend: Backend = "numpy") -> Records[SearchResult]:
    """The `k` nodes best matching `query` (optionally of one type), best first, with both score parts.

    Encodes the query (loading the encoder on first use) only when the store holds vectors for the
    embedder's model; otherwise the search is keyword-only.
    """
    if not query or not query.strip():
        raise InvalidInput("the search query is empty; give some words, e.g. `claimgraph search \"sparse features\"`")
    if k < 1:
        raise InvalidInput(f"k must be at least 1, got {k}")
    if backend not in ("numpy", "duckdb"):
        raise InvalidInput(f"unknown search backend {backend!r}; use numpy or duckdb")
    tval = node_type_value(type)
    terms = _query_terms(query)
    if embedder is None:
        from .embed import MODEL_NAME
        model = MODEL_NAME
    else:
        model = embedder.model_name
    params: dict[str, Any] = {"terms": terms, "k1": K1, "b": B, "prefix": _prefix(tval), "k": k, "alpha": ALPHA}
    with store.session(), ExitStack() as stack:
        fp = _fingerprint(store, model)  # one read serves both caches and says whether vectors exist
        use_sem = bool(fp[3])
        qvec = None
        if use_sem:
            if embedder is None:
                from .embed import get_embedder
                embedder = get_embedder()
            if not embedder.loaded:
                store.release()  # loading the encoder takes seconds: not while holding the store
                qvec = embedder.encode([query], progress=False)[0]  # [384], unit norm
                fp = _fingerprint(store, model)
                use_sem = bool(fp[3])
        stack.enter_context(_keyword_source(store, fp))
        if use_sem:
            assert embedder is not None
            if qvec is None:
                qvec = embedder.encode([query], progress=False)[0]  # [384], unit norm
            sem = stack.enter_context(_semantic_source(store, qvec, model, backend, fp))
        else:
            sem = "SELECT NULL::VARCHAR AS id, NULL::FLOAT AS cos WHERE false"
        rows = _query(store, _BM25_SQL + f""",
            sem AS ({sem}),
            joined AS (  -- the type from the id's prefix: ids are `type:slug`, checked on every write
                SELECT coalesce(sem.id, bm25.id) AS id, sem.cos, bm25.bm25
                FROM sem FULL OUTER JOIN bm25 ON bm25.id = sem.id
                WHERE $prefix IS NULL OR starts_with(coalesce(sem.id, bm25.id), $prefix)),
            scaled AS (
                SELECT *, coalesce(bm25, 0) / nullif(greatest(max(bm25) OVER (), (SELECT ideal FROM ideal)), 0) AS kw
                FROM joined),
            top AS (
                SELECT id, cos, kw,
                       CASE WHEN kw IS NULL THEN cos
                            WHEN {'true' if use_sem else 'false'} THEN $alpha * coalesce(cos, 0) + (1 - $alpha) * kw
                            ELSE kw END AS score
                FROM scaled ORDER BY score DESC, id LIMIT $k)
            SELECT top.id, n.type, n.title, top.cos, top.kw, top.score FROM top JOIN nodes n ON n.id = top.id
            ORDER BY top.score DESC, top.id""", params)
    return Records(SearchResult(id=r[0], type=NodeType(r[1]), title=r[2], score=float(r[5]),
                         semantic=None if r[3] is None else float(r[3]),
                         keyword=None if r[4] is None else float(r[4])) for r in rows)
