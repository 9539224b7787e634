"""Computed similarity: neighbours of a node, suggested relations, and turning a suggestion into an edge.

Similarity is never an edge by itself (docs: GUIDE, data model). `suggest` proposes pairs of nodes whose
stored vectors have cosine >= threshold and no typed edge in either direction; a person then `accept`s a
pair (a typed edge with provenance accepted-suggestion) or `reject`s it (never proposed again).

Decisions:
- `type` in `suggest` restricts both ends of a pair to that node type.
- A pair is a `duplicate` when both ends have the same node type and either cosine >= duplicate_threshold
  or their titles are equal once lowercased with every run of non-alphanumeric characters made one space
  (the SQL form of `ids.normalize_title` for ASCII titles). Same type is required because `duplicate_of`
  joins nodes of one type.
- The open rows of `suggestions` for the scope of a `suggest` call (all nodes, or both ends of `type`) are
  replaced by that call's pairs: an open pair that now has an edge or fell below the threshold is dropped.
  Accepted and rejected rows are never overwritten, and their pairs are never proposed again.
- Vectors are read from the store only: nothing here loads the encoder (run `embed_all` first).
"""
from __future__ import annotations

import functools
import itertools
import sys
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Literal

from . import ann
from .embed import MODEL_NAME
from .errors import InvalidInput, NotFound, StoreError
from .models import Edge, EdgeType, MadeBy, NodeType, Records, Suggestion, node_type_value
from .schema import EMBED_DIM
from .store import reads

if TYPE_CHECKING:
    import numpy as np

    from .store import Store


def _q(store: "Store", sql: str, params: dict[str, Any] | list[Any] | None = None) -> list[tuple]:
    """Run SQL with parameters on the store's connection; duckdb errors become StoreError."""
    import duckdb

    try:
        return store.con.execute(sql, params).fetchall()
    except duckdb.Error as e:
        raise StoreError(f"similarity query failed: {e}") from None


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


# -- neighbours of one node -----------------------------------------------------------------------
@reads
def computed_neighbors(store: "Store", node_id: str, *, k: int = 8, threshold: float = 0.65,
                       model: str = MODEL_NAME) -> list[tuple[str, float]]:
    """Up to `k` (node id, cosine >= threshold) most similar to `node_id` by stored vectors, best first.

    Excludes the node itself and every node it has a typed edge with (either direction). Empty when the
    node has no stored vector for `model`. Through the saved nearest-neighbour index when the store has one
    (`claimgraph.graph.ann`, written by `suggest` at scale: approximate, as fresh as the store); else, when this
    process already holds the store's vector matrix (`search.cached_vector_matrix`, kept warm by the web UI), one
    product with it; else one SQL scan. No encoder, no torch.
    """
    if not store.has_node(node_id):
        raise NotFound(f"no node {node_id!r}; `claimgraph search` or `claimgraph list` finds ids")
    saved = ann.load(store, model)
    if saved is not None:
        vec = ann.vectors_of(store, [node_id], model).get(node_id)
        if vec is None:
            return []
        linked = {r[0] for r in _q(store, "SELECT dst FROM edges WHERE src = $id UNION SELECT src FROM edges WHERE dst = $id",
                                   {"id": node_id})}
        near = ann.nearest(store, vec, k + len(linked) + 1, model) or []
        return [(i, c) for i, c in near if c >= threshold and i != node_id and i not in linked][:k]
    from .search import cached_vector_matrix

    cached = cached_vector_matrix(store, model)
    if cached is not None:
        return _neighbors_in_matrix(store, node_id, *cached, k=k, threshold=threshold)
    rows = _q(store, """
        WITH me AS (SELECT e.vector FROM nodes n JOIN embeddings e ON e.text_hash = n.text_hash AND e.model = $model
                    WHERE n.id = $id),
        linked AS (SELECT dst AS id FROM edges WHERE src = $id UNION SELECT src AS id FROM edges WHERE dst = $id),
        scored AS (  -- cosines first, then the join to nodes (joining the vectors themselves copies them)
            SELECT e.text_hash, array_cosine_similarity(e.vector, (SELECT vector FROM me)) AS score
            FROM embeddings e WHERE e.model = $model)
        SELECT n.id, s.score FROM scored s JOIN nodes n ON n.text_hash = s.text_hash
        WHERE s.score >= $threshold AND n.id <> $id AND n.id NOT IN (SELECT id FROM linked)
        ORDER BY s.score DESC, n.id LIMIT $k""",
           {"model": model, "id": node_id, "threshold": threshold, "k": k})
    return [(r[0], float(r[1])) for r in rows]


def _neighbors_in_matrix(store: "Store", node_id: str, ids: Any, mat: "np.ndarray", *, k: int,
                         threshold: float) -> list[tuple[str, float]]:
    """`computed_neighbors` over an in-process matrix: ids (pyarrow array [n]) and unit vectors [n, 384]."""
    import numpy as np
    import pyarrow.compute as pc

    row = pc.index(ids, node_id).as_py()
    if row < 0:
        return []
    linked = {r[0] for r in _q(store, "SELECT dst FROM edges WHERE src = $id UNION SELECT src FROM edges WHERE dst = $id",
                               {"id": node_id})} | {node_id}
    cos = mat @ mat[row]                                              # [n]
    hit = np.flatnonzero(cos >= np.float32(threshold))                # [m]
    keep = k + len(linked)
    if len(hit) > keep:  # the best `keep`, and every tie with the last of them (ties go by id)
        cut = np.partition(-cos[hit], keep - 1)[keep - 1]
        hit = hit[-cos[hit] <= cut]
    ranked = sorted(((ids[int(j)].as_py(), float(cos[j])) for j in hit), key=lambda p: (-p[1], p[0]))
    return [(i, s) for i, s in ranked if i not in linked][:k]


# -- the matrix routine ---------------------------------------------------------------------------
STRIP = 1024  # rows of X per product within a tile (see `similar_pairs`)


def similar_pairs(X: "np.ndarray", threshold: float, *, block: int = 4096,
                  progress: bool | None = None) -> tuple["np.ndarray", "np.ndarray", "np.ndarray"]:
    """Every pair i < j of rows of X [n, d] with X[i] . X[j] >= threshold: (i [m] int64, j [m] int64, score [m] float32),
    ordered by (i, j) within each [block, block] tile of the upper triangle of X X^T, tiles in row-major order.

    Blocked products over the upper triangle: never [n, n] in memory. Each tile is computed in strips of STRIP rows
    ([STRIP, block] products: the result stays in cache for the threshold pass, and at 50k nodes the bare products
    took 3.8 s against 4.5 s as whole [4096, 4096] tiles); the strips are shared out among as many threads as the
    BLAS library would use (each then runs its products on one BLAS thread), so that the single-threaded threshold
    pass runs beside the other products instead of after them. Rows should be unit vectors for the dot product to be
    a cosine. A progress bar shows on stderr for more than a few tiles (when stderr is a terminal, or when `progress`
    is True).
    """
    import numpy as np
    from tqdm import tqdm

    X = np.ascontiguousarray(X, dtype=np.float32)
    assert X.ndim == 2, f"X must be [n, d], got shape {X.shape}"
    if block < 1:
        raise InvalidInput(f"block must be at least 1, got {block}")
    n = X.shape[0]
    starts = range(0, n, block)
    tiles = len(starts) * (len(starts) + 1) // 2
    show = (tiles > 16 and sys.stderr.isatty()) if progress is None else progress
    items = strips(n, block)
    rows = max((r1 - r0 for r0, r1, _ in items), default=1)  # the longest strip: the buffers' height
    thr = np.float32(threshold)
    found: list[tuple["np.ndarray", "np.ndarray", "np.ndarray"] | None] = [None] * len(items)

    def run(take: Any, bar: Any) -> None:
        """Strips `take()` (the next item's position; len(items) or more once all are taken) until none is left."""
        # one product and one mask buffer per thread, reused: a fresh result per strip would be new pages to fault in
        width = min(block, n)
        sbuf = np.empty(rows * width, dtype=np.float32)
        hbuf = np.empty(rows * width, dtype=bool)
        while (k := take()) < len(items):
            r0, r1, j0 = items[k]
            xi, xj = X[r0:r1], X[j0:j0 + block]  # [bi, d], [bj, d]
            shape = (len(xi), len(xj))
            sc = sbuf[:shape[0] * shape[1]].reshape(shape)
            np.matmul(xi, xj.T, out=sc)  # [bi, bj]
            hit = np.greater_equal(sc, thr, out=hbuf[:shape[0] * shape[1]].reshape(shape))  # [bi, bj]
            if j0 < r1:  # a strip of a diagonal tile: only j > i
                hit &= np.arange(r0, r1)[:, None] < np.arange(j0, j0 + shape[1])[None, :]
            flat = np.flatnonzero(hit)  # [m]; 2-D np.nonzero costs far more even with no hit
            if len(flat):
                a, b = np.divmod(flat, shape[1])  # [m], [m]
                found[k] = (a + r0, b + j0, sc.reshape(-1)[flat].copy())
            if r1 == n or r1 % block == 0:
                bar.update(1)  # the tile's last strip

    threads = _blas_threads() if len(items) > 1 else 1
    with tqdm(total=tiles, desc="similar pairs", unit="tile", disable=not show, file=sys.stderr) as bar:
        shared = itertools.count()  # the next strip to take (next() on a count is atomic under the GIL)
        take = functools.partial(next, shared)
        if threads <= 1:
            run(take, bar)
        else:
            from concurrent.futures import ThreadPoolExecutor

            from threadpoolctl import threadpool_limits

            with threadpool_limits(limits=1, user_api="blas"), ThreadPoolExecutor(threads) as pool:
                for f in [pool.submit(run, take, bar) for _ in range(threads)]:
                    f.result()
    got = [f for f in found if f is not None]
    if not got:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
    i, j, sc = (np.concatenate(c) for c in zip(*got))
    assert (i < j).all(), "pairs must lie in the strict upper triangle"
    return i.astype(np.int64), j.astype(np.int64), sc.astype(np.float32)


def strips(n: int, block: int, strip: int | None = None) -> list[tuple[int, int, int]]:
    """The products `similar_pairs` computes for n rows, in output order: (strip start, strip end, tile column
    start) for each strip of `strip` rows (default STRIP) of each [block, block] tile of the upper triangle; a
    strip never crosses its tile. The benchmark's floor times the same products."""
    rows = min(STRIP if strip is None else strip, block, max(n, 1))
    return [(r, min(r + rows, i0 + block, n), j0) for i0 in range(0, n, block) for j0 in range(i0, n, block)
            for r in range(i0, min(i0 + block, n), rows)]


def _blas_threads() -> int:
    """How many threads numpy's BLAS would run a product on (its own setting, OPENBLAS_NUM_THREADS and the like)."""
    from threadpoolctl import threadpool_info

    counts = [int(x.get("num_threads") or 1) for x in threadpool_info() if x.get("user_api") == "blas"]
    return max(counts) if counts else 1


# -- suggestions ----------------------------------------------------------------------------------
_TITLE_NORM = "trim(regexp_replace(lower({t}.title), '[^a-z0-9]+', ' ', 'g'))"
DUPLICATE_THRESHOLD = 0.95  # cosine at or above which a same-type pair is a duplicate


def _suggestion_rows(store: "Store", where: str, params: dict[str, Any], limit: int | None) -> list[Suggestion]:
    rows = _q(store, f"""
        SELECT s.a, s.b, s.score, s.duplicate, s.state, na.title, nb.title, na.type, nb.type
        FROM suggestions s JOIN nodes na ON na.id = s.a JOIN nodes nb ON nb.id = s.b
        WHERE {where} ORDER BY s.score DESC, s.a, s.b {'LIMIT $limit' if limit is not None else ''}""",
              {**params, **({"limit": limit} if limit is not None else {})})
    return [Suggestion(src=r[0], dst=r[1], score=float(r[2]), duplicate=bool(r[3]), state=r[4], src_title=r[5],
                       dst_title=r[6], src_type=NodeType(r[7]), dst_type=NodeType(r[8])) for r in rows]


Method = Literal["auto", "exact", "ann"]
PER_NODE = 10  # default: keep each node's best 10 eligible pairs


def best_per_node(i: "np.ndarray", j: "np.ndarray", score: "np.ndarray", n: int,
                  per_node: int | None) -> "np.ndarray":
    """[m] bool: the pairs (i [m], j [m], score [m], i < j, positions < n; in any order) that are among the best
    `per_node` of either end, by score, ties by the other end's position (id order in `suggest`); all pairs when
    `per_node` is None.

    Each pair is an entry of both its ends. A histogram of each node's entries over 32 score buckets first finds
    the bucket holding the node's `per_node`-th best: entries below it are beaten by at least `per_node` others of
    that node and drop out unranked. Only the rest (at 100k nodes 1.1M of 8.0M entries) are sorted, on (node,
    score descending, other end).
    """
    import numpy as np

    m = len(i)
    if per_node is None or m == 0:
        return np.ones(m, dtype=bool)
    if per_node < 1:
        return np.zeros(m, dtype=bool)
    bits = score.astype(np.float32).view(np.int32).astype(np.int64)
    bits = np.where(bits < 0, bits ^ 0x7FFFFFFF, bits) + 2**31  # [m] order-preserving float -> [0, 2^32)
    desc_of = (2**32 - 1) - bits  # [m] score descending as an ascending key
    if 2 * m > 4 * per_node * n:  # many entries per node: most can be dropped before the sort
        B = 32
        lo, hi = score.min(), score.max()
        # [m] bucket 0..B-1: monotone in score (subtracting and scaling round monotonically), ties share one
        b = ((score - lo) * np.float32((B - 1) / max(float(hi - lo), 1e-12))).astype(np.int64)
        counts = (np.bincount(i * B + b, minlength=n * B) + np.bincount(j * B + b, minlength=n * B)).reshape(n, B)
        at_least = np.cumsum(counts[:, ::-1], axis=1)[:, ::-1]  # [n, B] the node's entries in this bucket or above
        cut = np.maximum((at_least >= per_node).sum(axis=1) - 1, 0)  # [n] the highest bucket reaching per_node
        si, sj = b >= cut[i], b >= cut[j]  # [m] the entry at i, at j, kept for ranking
        node, other = np.concatenate([i[si], j[sj]]), np.concatenate([j[si], i[sj]])
        pair = np.concatenate([np.flatnonzero(si), np.flatnonzero(sj)])
    else:
        node, other = np.concatenate([i, j]), np.concatenate([j, i])  # [2m] entry -> its node, the other end
        pair = np.concatenate([np.arange(m), np.arange(m)])  # [2m] entry -> its pair
    key = node.astype(np.int64) << 32 | desc_of[pair]  # node ascending, then score descending
    order = np.lexsort((other, key))  # then the other end ascending (as fast as one stable sort with the entries
    # pre-ordered, and right for pairs in any order)
    node_sorted = node[order]
    start = np.searchsorted(node_sorted, node_sorted, side="left")  # first entry of each entry's node
    keep = np.zeros(m, dtype=bool)
    keep[pair[order[np.arange(len(order)) - start < per_node]]] = True
    return keep


ANN_SLACK = 13  # neighbours asked beyond per_node + the node itself: room for pairs with an edge or a decision


def ann_pairs(index: Any, X: "np.ndarray", threshold: float, k: int) -> tuple["np.ndarray", "np.ndarray", "np.ndarray"]:
    """Pairs i < j (each once, ordered by i then j) with j among i's `k` nearest in `index` or i among j's,
    and exact cosine X[i] . X[j] >= threshold: (i [m] int64, j [m] int64, score [m] float32)."""
    import numpy as np

    n = len(X)
    keys, _ = ann.knn(index, X, k)  # [n, k]
    p = np.repeat(np.arange(n, dtype=np.int64), keys.shape[1])
    q = keys.reshape(-1)
    ok = (q >= 0) & (q != p)
    pair = np.unique(_pair_keys(p[ok], q[ok], n))  # sorted: i ascending, then j
    i, j = pair // n, pair % n
    score = np.empty(len(i), dtype=np.float32)
    for c0 in range(0, len(i), 1 << 20):  # exact cosines from the stored vectors, a chunk at a time
        sl = slice(c0, c0 + (1 << 20))
        score[sl] = np.einsum("nd,nd->n", X[i[sl]], X[j[sl]])
    keep = score >= threshold
    return i[keep], j[keep], score[keep]


def _pair_keys(a: "np.ndarray", b: "np.ndarray", n: int) -> "np.ndarray":
    """One int64 per unordered pair of positions < n."""
    import numpy as np

    return np.minimum(a, b).astype(np.int64) * n + np.maximum(a, b)


def suggest(store: "Store", *, threshold: float = 0.65, type: NodeType | str | None = None,
            limit: int | None = None, duplicate_threshold: float = DUPLICATE_THRESHOLD, block: int = 4096,
            model: str = MODEL_NAME, progress: bool | None = None,
            per_node: int | None = PER_NODE, method: Method = "auto") -> list[Suggestion]:
    """Pairs with cosine >= threshold, no typed edge and not accepted or rejected before, best first:
    each node's best `per_node` such pairs (all of them when None).

    `method`: "exact" computes every pair's cosine in blocked products; "ann" finds each node's nearest
    neighbours through an HNSW index (`claimgraph.graph.ann`, saved beside the database for node pages and
    search) and then ranks them exactly as "exact" does; "auto" takes "ann" from `ann.ANN_MIN_NODES`
    embedded nodes. Persists the pairs as the open rows of `suggestions` (see the module docstring for
    scope, duplicates and what is replaced) in one transaction, and returns the best `limit` (all when None).

    The store is not held while the pairs are computed: vectors, edges and decisions are read in one reading
    turn, the pairs ranked between turns, and written in one writing turn (with the saved index). A pair whose
    node went, or that got an edge or a decision meanwhile, is dropped at the write (its nodes then keep
    fewer than `per_node` pairs until the next `suggest`).
    """
    import numpy as np
    import pyarrow as pa

    if not -1.0 <= threshold <= 1.0:
        raise InvalidInput(f"threshold is a cosine, between -1 and 1; got {threshold}")
    if limit is not None and limit < 0:
        raise InvalidInput(f"limit must be at least 0, got {limit}")
    if per_node is not None and per_node < 1:
        raise InvalidInput(f"per_node must be at least 1 (or None for every pair), got {per_node}")
    if method not in ("auto", "exact", "ann"):
        raise InvalidInput(f"unknown suggest method {method!r}; use auto, exact or ann")
    tval = node_type_value(type)
    where, params = ["e.model = $model"], {"model": model}
    if tval is not None:
        where.append("n.type = $type")
        params["type"] = tval
    with store.session():  # one reading turn, one snapshot
        con = store.con
        con.execute("BEGIN TRANSACTION")
        try:
            # positions in id order (ties break by id, and i < j means a < b); sorted here rather than taken from
            # the Arrow table afterwards: a take copies the 150 MB of vectors at 100k nodes (0.5 s, and as much again
            # to gather them into one matrix), while the sorted result's single chunk is read in place
            tbl = con.execute(f"""SELECT n.id, n.type, n.title, {_TITLE_NORM.format(t="n")} AS tnorm, n.text_hash,
                e.vector FROM nodes n JOIN embeddings e ON e.text_hash = n.text_hash WHERE {' AND '.join(where)}
                ORDER BY n.id""", params).to_arrow_table()
            built_after = con.execute("SELECT (SELECT max(updated_at) FROM nodes), (SELECT max(created_at) "
                                      "FROM embeddings)").fetchone()
            read_state = _pair_state(con)
            n = tbl.num_rows
            ids = tbl.column("id").combine_chunks() if n else pa.array([], pa.string())
            # pairs never to propose: a typed edge either way, or a decision; as keys over positions in `ids`
            con.register("_sg_ids", pa.table({"id": ids, "pos": pa.array(np.arange(n, dtype=np.int64))}))
            try:
                excl = con.execute("""
                    SELECT x.pos AS p, y.pos AS q FROM edges JOIN _sg_ids x ON x.id = edges.src
                    JOIN _sg_ids y ON y.id = edges.dst
                    UNION ALL
                    SELECT x.pos, y.pos FROM suggestions s JOIN _sg_ids x ON x.id = s.a JOIN _sg_ids y ON y.id = s.b
                    WHERE s.state <> 'open'""").to_arrow_table()
            finally:
                con.unregister("_sg_ids")
        finally:
            con.execute("COMMIT")
    # -- between turns: rank the pairs
    # [n, 384] read-only: one chunk is read in place, several are gathered once
    flat = [c.flatten().to_numpy(zero_copy_only=False) for c in tbl.column("vector").chunks]
    X = (flat[0] if len(flat) == 1 else np.concatenate(flat or [np.zeros(0, np.float32)])).reshape(n, EMBED_DIM)
    excluded = np.unique(_pair_keys(excl.column("p").to_numpy(), excl.column("q").to_numpy(), n))
    use_ann = method == "ann" or (method == "auto" and n >= ann.ANN_MIN_NODES)
    index = None
    if use_ann:
        if per_node is None:
            raise InvalidInput(f"every pair (per_node=None) needs method='exact'; {n} nodes have "
                               f"{n * (n - 1) // 2} pairs to score")
        index = ann.build(X)
        i, j, score = ann_pairs(index, X, threshold, per_node + 1 + ANN_SLACK)
    else:
        i, j, score = similar_pairs(X, threshold, block=block, progress=progress)
    if len(excluded):
        keys = _pair_keys(i, j, n)
        at = np.minimum(np.searchsorted(excluded, keys), len(excluded) - 1)
        ok = excluded[at] != keys
        i, j, score = i[ok], j[ok], score[ok]
    keep = best_per_node(i, j, score, n, per_node)
    i, j, score = i[keep], j[keep], score[keep]
    # duplicates: same type and (cosine >= duplicate_threshold or equal normalised titles)
    types = tbl.column("type").combine_chunks().dictionary_encode().indices.to_numpy() if n else np.zeros(0)
    tnorm = tbl.column("tnorm").combine_chunks().dictionary_encode().indices.to_numpy() if n else np.zeros(0)
    dup = (types[i] == types[j]) & ((score >= duplicate_threshold) | (tnorm[i] == tnorm[j]))
    # the ends as dictionary arrays over `ids` (positions, no string copies; DuckDB reads them as VARCHAR)
    new = pa.table({"a": pa.DictionaryArray.from_arrays(pa.array(i.astype(np.int32)), ids),
                    "b": pa.DictionaryArray.from_arrays(pa.array(j.astype(np.int32)), ids),
                    "score": pa.array(score.astype(np.float64)), "duplicate": pa.array(dup)})
    scope = "true" if tval is None else "split_part(a, ':', 1) = $type AND split_part(b, ':', 1) = $type"
    scope_params = {"type": tval} if tval else {}
    # -- one writing turn
    with store.transaction():
        con = store.con
        con.register("_sg_new", new)
        try:
            # unchanged since the reading turn (no node, edge or decision written or removed): the pairs are
            # still exactly the eligible ones and go in without each being checked again
            gone = _write_pairs(store, scope, scope_params, model, check=_pair_state(con) != read_state)
        finally:
            con.unregister("_sg_new")
        if index is not None and tval is None:  # the saved index serves node pages and search over every node;
            assert built_after is not None      # written in the writing turn, so no reader sees it half-replaced
            ann.save(store, model, index, ids, tbl.column("text_hash").combine_chunks(), built_after[0], built_after[1],
                     X=X)
    del index, X
    return _rank_returned(i, j, score, dup, gone, ids, tbl, n, limit)


def _pair_state(con: Any) -> tuple:
    """What decides which pairs `suggest` may propose: the nodes, the typed edges and the decisions (each as a
    count and the last write time; a removal lowers the count, a write moves the time)."""
    return con.execute("""SELECT (SELECT count(*) FROM nodes), (SELECT max(updated_at) FROM nodes),
        (SELECT count(*) FROM edges), (SELECT max(updated_at) FROM edges),
        (SELECT count(*) FROM suggestions WHERE state <> 'open'),
        (SELECT max(decided_at) FROM suggestions WHERE state <> 'open')""").fetchone()


def _write_pairs(store: "Store", scope: str, scope_params: dict[str, Any], model: str, *, check: bool) -> list[tuple]:
    """Make the open pairs in scope exactly `_sg_new`'s: an open pair not proposed again is deleted, one proposed
    again keeps its row (and the time it was first proposed; score, duplicate flag and model are refreshed where
    they moved), a new one is inserted. Only what changed is written (while the table had its (a, b) key, a
    delete cost about 8 us a row: 5.4 s to replace 657k pairs at 100k nodes by deleting them all), so re-suggesting
    an unchanged store writes next to nothing. `check`: the store changed since the pairs were read, so each is
    checked against it as it is now; returns the pairs dropped for it (a node went, or an edge or a decision came)."""
    gone: list[tuple] = []
    src = "_sg_new"
    if check:
        # the linked pairs as one unordered key each: an OR of both directions inside EXISTS made DuckDB
        # join by nested loops (150 s at 100k nodes with 650k pairs); an equality join on the key is a hash join
        _q(store, """CREATE OR REPLACE TEMP TABLE _sg_linked AS
            SELECT DISTINCT least(src, dst) AS a, greatest(src, dst) AS b FROM edges""")
        _q(store, """CREATE OR REPLACE TEMP TABLE _sg_check AS
            SELECT n.a, n.b, n.score, n.duplicate,
                   l.a IS NOT NULL OR d.a IS NOT NULL OR n.a NOT IN (SELECT id FROM nodes)
                       OR n.b NOT IN (SELECT id FROM nodes) AS gone
            FROM _sg_new n
            LEFT JOIN _sg_linked l ON l.a = least(n.a, n.b) AND l.b = greatest(n.a, n.b)
            LEFT JOIN (SELECT a, b FROM suggestions WHERE state <> 'open') d ON d.a = n.a AND d.b = n.b""")
        gone = _q(store, "SELECT a, b FROM _sg_check WHERE gone")
        _q(store, "CREATE OR REPLACE TEMP TABLE _sg_ok AS SELECT a, b, score, duplicate FROM _sg_check WHERE NOT gone")
        _q(store, "DROP TABLE _sg_check")
        _q(store, "DROP TABLE _sg_linked")
        src = "_sg_ok"
    _q(store, f"""DELETE FROM suggestions WHERE state = 'open' AND {scope}
        AND NOT EXISTS (SELECT 1 FROM {src} n WHERE n.a = suggestions.a AND n.b = suggestions.b)""", scope_params)
    _q(store, f"""UPDATE suggestions SET score = n.score, duplicate = n.duplicate, model = $model FROM {src} n
        WHERE suggestions.a = n.a AND suggestions.b = n.b AND suggestions.state = 'open'
          AND (suggestions.score <> n.score OR suggestions.duplicate <> n.duplicate OR suggestions.model <> $model)""",
       {"model": model})
    # a pair of `src` with a row now is one of those kept open (decided pairs are not in `src`)
    _q(store, f"""INSERT INTO suggestions
        SELECT n.a, n.b, n.score, n.duplicate, 'open', NULL, $model, $now, NULL FROM {src} n
        WHERE NOT EXISTS (SELECT 1 FROM suggestions s WHERE s.a = n.a AND s.b = n.b)
        ORDER BY n.a, n.b  -- pair order: 0.9 s for 657k rows against 1.1 s unordered (no key since schema 8)""",
       {"model": model, "now": _now()})
    if check:
        _q(store, "DROP TABLE _sg_ok")
    return gone


def _rank_returned(i: "np.ndarray", j: "np.ndarray", score: "np.ndarray", dup: "np.ndarray", gone: list[tuple],
                   ids: Any, tbl: Any, n: int, limit: int | None) -> list[Suggestion]:
    """The written pairs (less those `gone`) as Suggestions, best first, the best `limit`."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    if gone:
        ga = pc.index_in(pa.array([g[0] for g in gone]), value_set=ids).to_numpy(zero_copy_only=False)
        gb = pc.index_in(pa.array([g[1] for g in gone]), value_set=ids).to_numpy(zero_copy_only=False)
        ok = ~np.isin(_pair_keys(i, j, n), _pair_keys(ga.astype(np.int64), gb.astype(np.int64), n))
        i, j, score, dup = i[ok], j[ok], score[ok], dup[ok]
    # best first, ties by (a, b): positions are in id order, so by (i, j)
    best = np.lexsort((j, i, -score))
    if limit is not None:
        best = best[:limit]
    titles, tcodes = tbl.column("title"), tbl.column("type")
    out = []
    for t in best.tolist():
        x, y = int(i[t]), int(j[t])
        out.append(Suggestion(src=ids[x].as_py(), dst=ids[y].as_py(), score=float(score[t]), duplicate=bool(dup[t]),
                              state="open", src_title=titles[x].as_py(), dst_title=titles[y].as_py(),
                              src_type=NodeType(tcodes[x].as_py()), dst_type=NodeType(tcodes[y].as_py())))
    return out


@reads
def suggestions(store: "Store", *, state: str | None = "open", type: NodeType | str | None = None,
                limit: int | None = None) -> Records[Suggestion]:
    """Stored suggestions (open ones by default; `state=None` for all), best first; computes nothing."""
    where, params = ["true"], {}
    if state is not None:
        if state not in ("open", "accepted", "rejected"):
            raise InvalidInput(f"unknown suggestion state {state!r}; use open, accepted or rejected")
        where.append("s.state = $state"); params["state"] = state
    tval = node_type_value(type)
    if tval is not None:
        where.append("na.type = $type AND nb.type = $type"); params["type"] = tval
    return Records(_suggestion_rows(store, " AND ".join(where), params, limit))


# -- decisions ------------------------------------------------------------------------------------
def _pair_row(store: "Store", src: str, dst: str, model: str) -> tuple[str, str, float, bool, str]:
    """(a, b, score, duplicate, state) of the pair's suggestion; made from stored vectors if none exists yet."""
    if src == dst:
        raise InvalidInput(f"{src} and {dst} are the same node; a suggestion joins two different nodes")
    nodes = store.get_nodes([src, dst])
    for end in (src, dst):
        if end not in nodes:
            raise NotFound(f"no node {end!r}; `claimgraph search` or `claimgraph suggest` lists ids")
    a, b = sorted((src, dst))
    row = _q(store, "SELECT score, duplicate, state FROM suggestions WHERE a = ? AND b = ?", [a, b])
    if row:
        return a, b, float(row[0][0]), bool(row[0][1]), row[0][2]
    got = _q(store, f"""SELECT array_cosine_similarity(ea.vector, eb.vector),
               na.type = nb.type AND {_TITLE_NORM.format(t="na")} = {_TITLE_NORM.format(t="nb")}
        FROM nodes na, nodes nb, embeddings ea, embeddings eb
        WHERE na.id = $a AND nb.id = $b AND ea.text_hash = na.text_hash AND eb.text_hash = nb.text_hash
          AND ea.model = $model AND eb.model = $model""", {"a": a, "b": b, "model": model})
    if not got:
        raise NotFound(f"no suggestion for {a} and {b}, and no stored vectors to score them; run "
                       "`claimgraph suggest` first, or link them directly with `claimgraph link`")
    score = float(got[0][0])
    duplicate = nodes[a].type == nodes[b].type and (score >= DUPLICATE_THRESHOLD or bool(got[0][1]))
    return a, b, score, duplicate, "new"


def _write_decision(store: "Store", a: str, b: str, score: float, duplicate: bool, state: str,
                    edge_type: str | None, model: str, *, had_row: bool) -> None:
    """Record the decision on the pair's one row: its existing row (`had_row`, read by `_pair_row` in the same
    transaction) is updated, else the row is inserted. The table has no key (schema migration 8): this and
    `_write_pairs` keep each pair to one row."""
    now = _now()
    if had_row:
        _q(store, "UPDATE suggestions SET state = $state, edge_type = $edge, decided_at = $now WHERE a = $a AND b = $b",
           {"a": a, "b": b, "state": state, "edge": edge_type, "now": now})
        return
    _q(store, "INSERT INTO suggestions VALUES ($a, $b, $score, $dup, $state, $edge, $model, $now, $now)",
       {"a": a, "b": b, "score": score, "dup": duplicate, "state": state, "edge": edge_type, "model": model,
        "now": now})


def accept(store: "Store", src: str, dst: str, *, edge: EdgeType | str | None = None,
           model: str = MODEL_NAME) -> Edge:
    """Turn the pair into the typed edge `src -edge-> dst` (made_by accepted-suggestion) and mark it accepted.

    The default edge is duplicate_of for a duplicate pair of one node type, else associated_with. The
    pair need not have been suggested before if both nodes have stored vectors.
    """
    etype: EdgeType | None = None
    if edge is not None:
        try:
            etype = EdgeType(edge)
        except ValueError:
            raise InvalidInput(f"unknown edge type {edge!r}; known: {', '.join(t.value for t in EdgeType)}") from None
    with store.transaction():
        a, b, score, duplicate, state = _pair_row(store, src, dst, model)
        if etype is None:
            same_type = src.split(":", 1)[0] == dst.split(":", 1)[0]
            etype = EdgeType.duplicate_of if duplicate and same_type else EdgeType.associated_with
        made = store.link(src, etype, dst, attrs={"similarity": round(score, 4)}, made_by=MadeBy.accepted_suggestion)
        _write_decision(store, a, b, score, duplicate, "accepted", etype.value, model, had_row=state != "new")
    return made


def reject(store: "Store", src: str, dst: str, *, model: str = MODEL_NAME) -> Suggestion:
    """Record that the pair is unrelated, so `suggest` never proposes it again; returns the rejected suggestion."""
    with store.transaction():
        a, b, score, duplicate, state = _pair_row(store, src, dst, model)
        linked = _q(store, """SELECT src, type, dst FROM edges WHERE (src = $a AND dst = $b) OR (src = $b AND dst = $a)
                              ORDER BY type""", {"a": a, "b": b}) if state == "accepted" else []
        if linked:
            how = " and ".join(f"`claimgraph unlink {s} {t} {d}`" for s, t, d in linked)
            raise InvalidInput(f"{a} and {b} were accepted as a typed edge; remove it with {how}, "
                               "then reject the pair")
        _write_decision(store, a, b, score, duplicate, "rejected", None, model, had_row=state != "new")
        return _suggestion_rows(store, "s.a = $a AND s.b = $b", {"a": a, "b": b}, None)[0]
