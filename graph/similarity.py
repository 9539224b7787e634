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

import sys
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

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
    node has no stored vector for `model`. No encoder, no torch. One SQL scan; or, when this process already
    holds the store's vector matrix (`search.cached_vector_matrix`, kept warm by the web UI), one product with it.
    """
    if not store.has_node(node_id):
        raise NotFound(f"no node {node_id!r}; `claimgraph search` or `claimgraph list` finds ids")
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
def similar_pairs(X: "np.ndarray", threshold: float, *, block: int = 4096,
                  progress: bool | None = None) -> tuple["np.ndarray", "np.ndarray", "np.ndarray"]:
    """Every pair i < j of rows of X [n, d] with X[i] . X[j] >= threshold: (i [m] int64, j [m] int64, score [m] float32).

    Blocked products over the upper triangle of X X^T: at most a [block, block] tile is in memory, never
    [n, n]. Rows should be unit vectors for the dot product to be a cosine. A progress bar shows on stderr
    for more than a few tiles (when stderr is a terminal, or when `progress` is True).
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
    tile = min(block, n)
    upper = np.triu(np.ones((tile, tile), dtype=bool), k=1)  # [tile, tile] strict upper triangle of a diagonal tile
    out_i, out_j, out_s = [], [], []
    with tqdm(total=tiles, desc="similar pairs", unit="tile", disable=not show, file=sys.stderr) as bar:
        for i0 in starts:
            xi = X[i0:i0 + block]  # [bi, d]
            for j0 in range(i0, n, block):
                s = xi @ X[j0:j0 + block].T  # [bi, bj]
                hit = s >= threshold  # [bi, bj]
                if j0 == i0:
                    hit &= upper[:hit.shape[0], :hit.shape[1]]
                flat = np.flatnonzero(hit)  # [m]; 2-D np.nonzero costs ~25 ms per tile even with no hit
                if len(flat):
                    r, c = np.divmod(flat, hit.shape[1])  # [m], [m]
                    out_i.append(r + i0)
                    out_j.append(c + j0)
                    out_s.append(s[r, c])
                bar.update(1)
    if not out_i:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
    i, j, sc = np.concatenate(out_i), np.concatenate(out_j), np.concatenate(out_s)
    assert (i < j).all(), "pairs must lie in the strict upper triangle"
    return i.astype(np.int64), j.astype(np.int64), sc.astype(np.float32)


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


def suggest(store: "Store", *, threshold: float = 0.65, type: NodeType | str | None = None,
            limit: int | None = None, duplicate_threshold: float = DUPLICATE_THRESHOLD, block: int = 4096,
            model: str = MODEL_NAME, progress: bool | None = None) -> list[Suggestion]:
    """Every pair with cosine >= threshold and no typed edge, not accepted or rejected before, best first.

    Persists them as open rows of `suggestions` (see the module docstring for scope, duplicates and
    what is replaced) in one transaction, and returns the best `limit` (all when None). The pairs are
    computed between a reading turn and a writing one, so the store is not held meanwhile.
    """
    if not -1.0 <= threshold <= 1.0:
        raise InvalidInput(f"threshold is a cosine, between -1 and 1; got {threshold}")
    if limit is not None and limit < 0:
        raise InvalidInput(f"limit must be at least 0, got {limit}")
    tval = node_type_value(type)
    where, params = ["e.model = $model"], {"model": model}
    if tval is not None:
        where.append("n.type = $type")
        params["type"] = tval
    with store.session():
        tbl = store.con.execute(f"""SELECT n.id, n.type, {_TITLE_NORM.format(t="n")} AS tnorm, e.vector FROM nodes n
            JOIN embeddings e ON e.text_hash = n.text_hash WHERE {' AND '.join(where)}""", params).to_arrow_table()
        store.release()  # the pairs are computed without holding the store ...
        return _persist_suggestions(store, tbl, threshold=threshold, tval=tval, limit=limit,
                                    duplicate_threshold=duplicate_threshold, block=block, model=model,
                                    progress=progress)


def _persist_suggestions(store: "Store", tbl: Any, *, threshold: float, tval: str | None, limit: int | None,
                         duplicate_threshold: float, block: int, model: str, progress: bool | None) -> list[Suggestion]:
    import numpy as np
    import pyarrow as pa

    n = tbl.num_rows
    if n:
        vec = tbl.column("vector").combine_chunks()
        X = vec.values.to_numpy(zero_copy_only=False).reshape(n, EMBED_DIM)  # [n, 384]
    else:
        X = np.zeros((0, EMBED_DIM), np.float32)
    i, j, score = similar_pairs(X, threshold, block=block, progress=progress)
    nodes_tbl = pa.table({"idx": pa.array(np.arange(n, dtype=np.int64)), "id": tbl.column("id"),
                          "type": tbl.column("type"), "tnorm": tbl.column("tnorm")})
    pairs_tbl = pa.table({"i": pa.array(i), "j": pa.array(j), "score": pa.array(score)})
    scope = "true" if tval is None else "split_part(a, ':', 1) = $type AND split_part(b, ':', 1) = $type"
    with store.transaction():  # ... and written in one transaction, dropping pairs whose nodes went meanwhile
        con = store.con
        con.register("_sg_nodes", nodes_tbl)
        con.register("_sg_pairs", pairs_tbl)
        try:
            _q(store, """CREATE OR REPLACE TEMP TABLE _sg_new AS
                WITH p AS (
                    SELECT least(x.id, y.id) AS a, greatest(x.id, y.id) AS b, p.score::DOUBLE AS score,
                           x.type = y.type AND (p.score >= $dup OR x.tnorm = y.tnorm) AS duplicate
                    FROM _sg_pairs p JOIN _sg_nodes x ON x.idx = p.i JOIN _sg_nodes y ON y.idx = p.j),
                linked AS (SELECT DISTINCT least(src, dst) AS a, greatest(src, dst) AS b FROM edges),
                decided AS (SELECT a, b FROM suggestions WHERE state <> 'open')
                SELECT * FROM p ANTI JOIN linked USING (a, b) ANTI JOIN decided USING (a, b)
                WHERE a IN (SELECT id FROM nodes) AND b IN (SELECT id FROM nodes)
                ORDER BY a, b  -- key order: inserting into the primary key index in order is ~3x faster""",
               {"dup": duplicate_threshold})
            _q(store, f"""DELETE FROM suggestions s WHERE state = 'open' AND {scope}
                AND NOT EXISTS (SELECT 1 FROM _sg_new n WHERE n.a = s.a AND n.b = s.b)""",
               {"type": tval} if tval else None)
            _q(store, """INSERT INTO suggestions
                SELECT a, b, score, duplicate, 'open', NULL, $model, $now, NULL FROM _sg_new
                ON CONFLICT (a, b) DO UPDATE SET score = excluded.score, duplicate = excluded.duplicate,
                    model = excluded.model WHERE suggestions.state = 'open'""", {"model": model, "now": _now()})
            rows = _q(store, f"""
                SELECT t.a, t.b, t.score, t.duplicate, na.title, nb.title, na.type, nb.type
                FROM (SELECT * FROM _sg_new ORDER BY score DESC, a, b {'LIMIT $limit' if limit is not None else ''}) t
                JOIN nodes na ON na.id = t.a JOIN nodes nb ON nb.id = t.b ORDER BY t.score DESC, t.a, t.b""",
                      {"limit": limit} if limit is not None else None)
            _q(store, "DROP TABLE _sg_new")
        finally:
            con.unregister("_sg_nodes")
            con.unregister("_sg_pairs")
    return [Suggestion(src=r[0], dst=r[1], score=float(r[2]), duplicate=bool(r[3]), state="open", src_title=r[4],
                       dst_title=r[5], src_type=NodeType(r[6]), dst_type=NodeType(r[7])) for r in rows]


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
                    edge_type: str | None, model: str) -> None:
    now = _now()
    _q(store, """INSERT INTO suggestions VALUES ($a, $b, $score, $dup, $state, $edge, $model, $now, $now)
        ON CONFLICT (a, b) DO UPDATE SET state = excluded.state, edge_type = excluded.edge_type,
            decided_at = excluded.decided_at""",
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
        a, b, score, duplicate, _state = _pair_row(store, src, dst, model)
        if etype is None:
            same_type = src.split(":", 1)[0] == dst.split(":", 1)[0]
            etype = EdgeType.duplicate_of if duplicate and same_type else EdgeType.associated_with
        made = store.link(src, etype, dst, attrs={"similarity": round(score, 4)}, made_by=MadeBy.accepted_suggestion)
        _write_decision(store, a, b, score, duplicate, "accepted", etype.value, model)
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
        _write_decision(store, a, b, score, duplicate, "rejected", None, model)
        return _suggestion_rows(store, "s.a = $a AND s.b = $b", {"a": a, "b": b}, None)[0]
