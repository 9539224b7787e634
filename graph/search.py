"""Hybrid search: semantic similarity to the query's embedding plus BM25 over an in-memory inverted index.

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

The keyword index. `node_terms` (written in the same transaction as the node it indexes) is the truth; a
query reads it through an inverted index held in process (`KeywordIndex`: each term's postings as one
slice of a CSR array of node positions and precomputed BM25 term weights), so scoring a query touches only
the postings of its terms. The index is rebuilt from one consistent read of the store whenever the store's
fingerprint (node count, last node write, vector count) differs from the one it was built under, which every
query checks: a committed write by this or another process is seen by the next query, a rolled-back one never
(the index only ever holds what a snapshot of the store held). `bench/bench_keyword.py` measured it against
DuckDB's fts extension and tantivy (docs/benchmarks.md): as fast as tantivy per query, exact BM25, and no
second store to keep in step with DuckDB's transactions.

Semantic scan: numpy over an in-process copy of the vector matrix (cached per store and model beside the
keyword index, checked against the same fingerprint), or DuckDB's `array_cosine_similarity`;
`bench/bench_graph.py` measures both, and numpy is the default because a warm query is ~20x faster at 100k.
The two parts are combined in numpy over the positions of the keyword index; only the `k` results are
read back from the store.
"""
from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from . import ann
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


def _query(store: "Store", sql: str, params: dict[str, Any] | list[Any] | None = None) -> list[tuple]:
    """Run read SQL with parameters; duckdb errors become StoreError."""
    import duckdb

    try:
        return store.con.execute(sql, params).fetchall()
    except duckdb.Error as e:
        raise StoreError(f"search query failed: {e}") from None


# -- in-process caches ---------------------------------------------------------------------------
# Per kind, the last store asked for: (weak reference to the store, fingerprint, value). A warm search
# reuses the keyword index and the vector matrix; every call re-checks the fingerprint.
_CACHE: dict[str, tuple["weakref.ref[Store]", tuple, Any]] = {}


def _fingerprint(store: "Store", model: str | None = None) -> tuple:
    """(model, nodes, last node write, vectors of `model`, vectors, last vector write): changes whenever a node is
    added, removed or rewritten (and so its terms), or a vector is stored or removed. The four store-wide figures
    come from DuckDB's statistics (about 1 ms at a million nodes); the count for `model` needs a scan (3 ms), so
    it is counted once per state of the store and kept with it."""
    state = tuple(_query(store, """SELECT (SELECT count(*) FROM nodes), (SELECT max(updated_at) FROM nodes),
                                  (SELECT count(*) FROM embeddings), (SELECT max(created_at) FROM embeddings)""")[0])
    per_model = 0 if model is None or not state[2] else _cached(
        store, f"vectors of {model}", state,
        lambda: (state, _query(store, "SELECT count(*) FROM embeddings WHERE model = ?", [model])[0][0]))
    return (model, state[0], state[1], per_model, state[2], state[3])


@contextmanager
def _snapshot(store: "Store") -> Iterator[None]:
    """The reads inside see one state of the store (a read transaction, unless one is already open)."""
    if store._tx_depth:
        yield
        return
    con = store.con
    con.execute("BEGIN TRANSACTION")
    try:
        yield
    finally:
        con.execute("COMMIT")


def _cached(store: "Store", kind: str, fingerprint: tuple, fill: Callable[[], tuple[tuple, Any]]) -> Any:
    """The cached value of `kind` if it was built under `fingerprint`; else `fill()` -> (its fingerprint, value)."""
    hit = _CACHE.get(kind)
    if hit is not None and hit[0]() is store and hit[1] == fingerprint:
        return hit[2]
    _CACHE.pop(kind, None)  # drop the old copy before reading a new one
    built_under, value = fill()
    _CACHE[kind] = (weakref.ref(store), built_under, value)
    return value


# -- keyword part ---------------------------------------------------------------------------------
def _query_terms(query: str) -> list[str]:
    return sorted(set(tokens(query)))


@dataclass
class KeywordIndex:
    """Every node of the store, in id order, with an inverted index of its `node_terms`.

    `ids` [n] (pyarrow strings, sorted) and `types` [n] (codes into `type_names`) describe the nodes;
    the postings of term t are `docs[indptr[t]:indptr[t + 1]]` (node positions) with `weight` the BM25
    term weight `tf (k1 + 1) / (tf + k1 (1 - b + b dl / avgdl))` of each; `df` [terms] their lengths.
    """

    ids: Any
    hashes: Any  # pyarrow strings [n]: each node's text hash (validates nearest-neighbour candidates in memory)
    types: "np.ndarray"
    type_names: list[str]
    vocab: dict[str, int]
    indptr: "np.ndarray"
    docs: "np.ndarray"
    weight: "np.ndarray"

    @property
    def n(self) -> int:
        return len(self.types)

    def current_hashes(self, node_ids: list[str]) -> dict[str, str]:
        """The text hash of each of these nodes that exists (as of this index: it is rebuilt after any write)."""
        from . import ann

        pos = ann.sorted_positions(self.ids, node_ids)
        return {i: self.hashes[p].as_py() for i, p in zip(node_ids, pos.tolist()) if p >= 0}

    def type_mask(self, type_value: str | None) -> "np.ndarray | None":
        """[n] bool of the nodes of one type (None: no filter)."""
        import numpy as np

        if type_value is None:
            return None
        if type_value not in self.type_names:
            return np.zeros(self.n, dtype=bool)
        return self.types == self.type_names.index(type_value)

    def bm25(self, terms: list[str]) -> tuple["np.ndarray", "np.ndarray", float]:
        """(score [n] float64, hit [n] bool, ideal) for the query terms: BM25 of every node (0 without a hit)."""
        import numpy as np

        score = np.zeros(self.n, dtype=np.float64)
        hit = np.zeros(self.n, dtype=bool)
        ideal = 0.0
        n_docs = max(self.n, 1)
        for term in terms:
            t = self.vocab.get(term)
            if t is None:
                continue
            a, b = int(self.indptr[t]), int(self.indptr[t + 1])
            idf = float(np.log(1 + (n_docs - (b - a) + 0.5) / ((b - a) + 0.5)))
            docs = self.docs[a:b]  # a node holds a term once: fancy-index add is exact here
            score[docs] += idf * self.weight[a:b]
            hit[docs] = True
            ideal += idf
        return score, hit, ideal


def _build_keyword_index(store: "Store") -> tuple[tuple, KeywordIndex]:
    import numpy as np
    import pyarrow as pa

    with _snapshot(store):
        fp = _fingerprint(store)
        nodes = store.con.execute("SELECT id, type, text_hash FROM nodes ORDER BY id").to_arrow_table()
        # node positions by a join in DuckDB (parallel hash join) rather than a lookup per posting here
        post = store.con.execute("""SELECT p.pos::INTEGER AS pos, unnest(t.terms) AS term, unnest(t.tfs) AS tf
            FROM node_terms t
            JOIN (SELECT id, (row_number() OVER (ORDER BY id) - 1) AS pos FROM nodes) p ON p.id = t.node_id
            """).to_arrow_table()  # one row per (node, term): the two lists unnest side by side
    n = nodes.num_rows
    ids = nodes.column("id").combine_chunks() if n else pa.array([], pa.string())
    hashes = nodes.column("text_hash").combine_chunks() if n else pa.array([], pa.string())
    tcol = nodes.column("type").combine_chunks().dictionary_encode() if n else None
    type_names = tcol.dictionary.to_pylist() if tcol is not None else []
    types = tcol.indices.to_numpy().astype(np.int16) if tcol is not None else np.zeros(0, np.int16)
    if post.num_rows:
        terms = post.column("term").combine_chunks().dictionary_encode()
        term_of = terms.indices.to_numpy()                                  # [nnz]
        vocab = {t: i for i, t in enumerate(terms.dictionary.to_pylist())}
        pos = post.column("pos").to_numpy()                                 # [nnz]
        tf = post.column("tf").to_numpy().astype(np.float64)                # [nnz]
    else:
        term_of, vocab = np.zeros(0, np.int32), {}
        pos, tf = np.zeros(0, np.int32), np.zeros(0, np.float64)
    dl = np.bincount(pos, weights=tf, minlength=n)                          # [n] terms per node
    avgdl = max(float(dl.sum()), 1.0) / max(n, 1)
    weight = tf * (K1 + 1) / (tf + K1 * (1 - B + B * dl[pos] / avgdl))     # [nnz]
    order = np.argsort(term_of, kind="stable")
    indptr = np.zeros(len(vocab) + 1, dtype=np.int64)
    np.cumsum(np.bincount(term_of, minlength=len(vocab)), out=indptr[1:])
    return fp[1:3], KeywordIndex(ids=ids, hashes=hashes, types=types, type_names=type_names, vocab=vocab, indptr=indptr,
                                 docs=pos[order].astype(np.int32), weight=weight[order])


@reads
def keyword_index(store: "Store", fp: tuple | None = None) -> KeywordIndex:
    """The store's keyword index, cached in-process and rebuilt when the store changed.
    `fp`: a `_fingerprint` the caller just took (saves a query)."""
    return _cached(store, "keywords", (fp or _fingerprint(store))[1:3], lambda: _build_keyword_index(store))


def _top(score: "np.ndarray", cand: "np.ndarray", k: int, tiebreak: "np.ndarray | None" = None) -> "np.ndarray":
    """Indices of the `k` best candidates (bool mask `cand`) by score descending, then by `tiebreak` ascending
    (default: the index itself, which is id order for positions of the keyword index)."""
    import numpy as np

    idx = np.flatnonzero(cand)
    if len(idx) > k:  # everything at or above the k-th best score, so ties at the cut are ordered by id
        kth = np.partition(-score[idx], k - 1)[k - 1]
        idx = idx[-score[idx] <= kth]
    second = idx if tiebreak is None else tiebreak[idx]
    return idx[np.lexsort((second, -score[idx]))][:k]


@reads
def keyword_search(store: "Store", query: str, *, type: NodeType | str | None = None,
                   k: int = 10) -> list[tuple[str, float]]:
    """The `k` best (node id, raw BM25) for `query`, best first; the keyword part of `search` on its own."""
    tval = node_type_value(type)
    terms = _query_terms(query)
    if not terms:
        return []
    index = keyword_index(store)
    score, hit, _ = index.bm25(terms)
    mask = index.type_mask(tval)
    top = _top(score, hit if mask is None else hit & mask, k)
    return [(index.ids[int(i)].as_py(), float(score[i])) for i in top]


# -- semantic part --------------------------------------------------------------------------------
def _prefix(type_value: str | None) -> str | None:
    """`claim:` for claim: ids are `type:slug` (checked on every write), so the type filter needs no join."""
    return None if type_value is None else type_value + ":"


def _vectors(store: "Store", model: str, fp: tuple | None = None) -> tuple[Any, "np.ndarray", "np.ndarray"]:
    """(node ids [m], float32 matrix [m, 384], positions [m] of those nodes in the keyword index) of every
    embedded node, cached in-process. `fp`: a `_fingerprint(store, model)` the caller just took."""
    import numpy as np

    def fill() -> tuple[tuple, tuple[Any, "np.ndarray", "np.ndarray"]]:
        with _snapshot(store):
            built_under = _fingerprint(store, model)
            tbl = store.con.execute("""SELECT p.pos::INTEGER AS pos, n.id, e.vector FROM nodes n
                JOIN embeddings e ON e.text_hash = n.text_hash AND e.model = ?
                JOIN (SELECT id, (row_number() OVER (ORDER BY id) - 1) AS pos FROM nodes) p ON p.id = n.id""",
                                    [model]).to_arrow_table()
        ids = tbl.column("id").combine_chunks()
        vec = tbl.column("vector").combine_chunks()
        mat = vec.values.to_numpy(zero_copy_only=False).reshape(len(ids), EMBED_DIM)  # [m, 384]
        return built_under, (ids, mat, tbl.column("pos").to_numpy().astype(np.int64))

    return _cached(store, "vectors", fp or _fingerprint(store, model), fill)


@reads
def vector_matrix(store: "Store", model: str, fp: tuple | None = None) -> tuple[Any, "np.ndarray"]:
    """(pyarrow array of node ids [m], float32 matrix [m, 384]) of every embedded node, cached in-process.
    `fp`: a `_fingerprint(store, model)` the caller just took (saves a query)."""
    ids, mat, _ = _vectors(store, model, fp)
    return ids, mat


@reads
def cached_vector_matrix(store: "Store", model: str) -> tuple[Any, "np.ndarray"] | None:
    """`vector_matrix(store, model)` if it is already cached for this store and still current, else None (reads
    no vectors). A long-lived process (the web UI) keeps it warm; a one-off command does not pay to load it."""
    hit = _CACHE.get("vectors")
    if hit is None or hit[0]() is not store:
        return None
    if hit[1] != _fingerprint(store, model):
        return None
    ids, mat, _ = hit[2]
    return ids, mat


def _duckdb_cosines(store: "Store", qvec: "np.ndarray", model: str) -> tuple[Any, "np.ndarray"]:
    """(node ids [m], cosines [m]) of every embedded node to the unit query vector, scanned in DuckDB with
    array_cosine_similarity (the query vector goes in as a one-row Arrow table: binding it as a 384-element
    list parameter costs ~60 ms). Needs no in-process vector matrix."""
    import pyarrow as pa

    con = store.con
    con.register("_search_q", pa.table({"v": pa.FixedSizeListArray.from_arrays(pa.array(qvec), EMBED_DIM)}))
    try:
        # cosines first, then the join: joining nodes to the vectors themselves copies every vector (4x slower)
        tbl = con.execute("""SELECT n.id, c.cos FROM (
                      SELECT e.text_hash, array_cosine_similarity(e.vector, q.v) AS cos FROM embeddings e
                      CROSS JOIN _search_q q WHERE e.model = ?) c
                  JOIN nodes n ON n.text_hash = c.text_hash""", [model]).to_arrow_table()
    finally:
        con.unregister("_search_q")
    return tbl.column("id").combine_chunks(), tbl.column("cos").to_numpy()


def _cosines(store: "Store", qvec: "np.ndarray", model: str, backend: Backend, index: KeywordIndex,
             fp: tuple | None = None) -> "np.ndarray":
    """[n] float32 cosine of each node of `index` to the unit query vector; NaN where a node has no vector."""
    import numpy as np
    import pyarrow.compute as pc

    out = np.full(index.n, np.nan, dtype=np.float32)
    if backend == "numpy":
        _, mat, pos = _vectors(store, model, fp)
        out[pos] = mat @ qvec  # [m]
    elif backend == "duckdb":
        ids, cos = _duckdb_cosines(store, qvec, model)
        pos = pc.index_in(ids, value_set=index.ids).to_numpy(zero_copy_only=False)
        out[pos.astype(np.int64)] = cos
    else:
        raise InvalidInput(f"unknown search backend {backend!r}; use numpy or duckdb")
    return out


@reads
def semantic_search(store: "Store", qvec: "np.ndarray", *, model: str, type: NodeType | str | None = None,
                    k: int = 10, backend: Backend = "numpy") -> list[tuple[str, float]]:
    """The `k` (node id, cosine) most similar to a unit query vector [384], best first; no encoder."""
    import numpy as np

    tval = node_type_value(type)
    qvec = np.asarray(qvec, dtype=np.float32).reshape(EMBED_DIM)
    if backend == "numpy":
        ids, mat, pos = _vectors(store, model)
        cos = mat @ qvec  # [m]
        mask = np.ones(len(cos), dtype=bool)
        if tval is not None:
            tmask = keyword_index(store).type_mask(tval)
            assert tmask is not None
            mask = tmask[pos]
        return [(ids[int(i)].as_py(), float(cos[i])) for i in _top(cos, mask, k, tiebreak=pos)]
    if backend != "duckdb":
        raise InvalidInput(f"unknown search backend {backend!r}; use numpy or duckdb")
    import pyarrow as pa

    ids, cos = _duckdb_cosines(store, qvec, model)
    con = store.con
    con.register("_search_sem", pa.table({"id": ids, "cos": pa.array(cos, pa.float32())}))
    try:
        rows = _query(store, """SELECT id, cos FROM _search_sem WHERE $prefix IS NULL OR starts_with(id, $prefix)
                                ORDER BY cos DESC, id LIMIT $k""", {"prefix": _prefix(tval), "k": k})
    finally:
        con.unregister("_search_sem")
    return [(r[0], float(r[1])) for r in rows]


# -- hybrid ---------------------------------------------------------------------------------------
def search(store: "Store", query: str, *, type: NodeType | str | None = None, k: int = 10,
           embedder: "Embedder | None" = None, backend: Backend = "numpy") -> Records[SearchResult]:
    """The `k` nodes best matching `query` (optionally of one type), best first, with both score parts.

    Encodes the query (loading the encoder on first use) only when the store holds vectors for the
    embedder's model; otherwise the search is keyword-only.
    """
    import numpy as np

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
    with store.session():
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
                fp = _fingerprint(store, model)  # a new turn: the store may have changed meanwhile
                use_sem = bool(fp[3])
        index = keyword_index(store, fp)
        bm25, hit, ideal = index.bm25(terms)
        mask = index.type_mask(tval)
        searched = hit if mask is None else hit & mask  # the nodes the keyword part ranks
        cos = np.full(index.n, np.nan, dtype=np.float32)  # [n] semantic part, NaN without a vector (or not scored)
        if use_sem:
            assert embedder is not None
            if qvec is None:
                qvec = embedder.encode([query], progress=False)[0]  # [384], unit norm
            qvec = np.asarray(qvec, dtype=np.float32)
            saved = ann.load(store, model) if backend == "numpy" and fp[3] >= ann.ANN_MIN_NODES else None
            if saved is not None:
                cand = _ann_candidates(store, qvec, model, saved, index, bm25, searched, cos, max(8 * k, 100))
            else:
                cos = _cosines(store, qvec, model, backend, index, fp)
                cand = ~np.isnan(cos) | hit
        else:
            cand = hit.copy()
        if mask is not None:
            cand &= mask
        # keyword = BM25 / max(best BM25 among the nodes searched, ideal); undefined when both are 0
        scale = max(float(bm25[searched].max()) if searched.any() else 0.0, ideal)
        pos = np.flatnonzero(cand)
        c = cos[pos].astype(np.float64)
        if scale == 0:
            kw = None
            score = c
        else:
            kw = bm25[pos] / scale
            score = ALPHA * np.nan_to_num(c, nan=0.0) + (1 - ALPHA) * kw if use_sem else kw
        top = _top(score, np.ones(len(pos), dtype=bool), k, tiebreak=pos)
        ids = [index.ids[int(pos[t])].as_py() for t in top]
        rows = {r[0]: r[1:] for r in _query(store, "SELECT id, type, title FROM nodes WHERE id = ANY(?)",
                                            [ids])} if ids else {}
    return Records(SearchResult(id=nid, type=NodeType(rows[nid][0]), title=rows[nid][1], score=float(score[t]),
                                semantic=None if np.isnan(c[t]) else float(c[t]),
                                keyword=None if kw is None else float(kw[t])) for nid, t in zip(ids, top))


def _ann_candidates(store: "Store", qvec: "np.ndarray", model: str, saved: Any, index: KeywordIndex,
                    bm25: "np.ndarray", searched: "np.ndarray", cos: "np.ndarray", width: int) -> "np.ndarray":
    """At scale: [n] bool of the nodes worth scoring, the `width` nearest by the saved index and the `width`
    best by BM25, with their cosines written into `cos`. The best hybrid scores are among them unless a node
    outside both lists beats all of them on the sum, which needs it near the top of both."""
    import numpy as np

    cand = np.zeros(index.n, dtype=bool)
    near = ann.nearest(store, qvec, width, model, current=index.current_hashes) or []
    pos = ann.sorted_positions(index.ids, [nid for nid, _ in near])
    found = pos >= 0
    cos[pos[found]] = np.asarray([c for _, c in near], dtype=np.float32)[found]
    cand[pos[found]] = True
    kw_top = _top(bm25, searched, width)
    cand[kw_top] = True
    need = [index.ids[int(p)].as_py() for p in kw_top if np.isnan(cos[p])]
    got = ann.vectors_of(store, need, model, current=index.current_hashes)
    if got:
        at = ann.sorted_positions(index.ids, list(got))
        cos[at] = [float(vec @ qvec) for vec in got.values()]  # one dot each, as the nearest ones got
    return cand
