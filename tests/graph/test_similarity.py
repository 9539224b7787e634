"""Computed neighbours, suggestions and decisions on a small hand-written graph with the real embedder,
and the blocked pair routine against a brute-force reference."""
from __future__ import annotations

import itertools
import os
import subprocess
import sys
import textwrap
from pathlib import Path

# Before torch loads: spinning OpenMP threads make encoding ~3x slower on a shared, busy CPU.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import pytest

from claimgraph.graph import DocumentRef, EdgeType, GraphDelta, InvalidInput, MadeBy, Node, NodeType, NotFound, Store
from claimgraph.graph.embed import MODEL_NAME
from claimgraph.graph.similarity import (
    accept,
    best_per_node,
    computed_neighbors,
    reject,
    similar_pairs,
    suggest,
    suggestions,
)
from claimgraph.graph.store import text_hash

sys.path.insert(0, str(Path(__file__).parent))
from sim_corpus import DUP_A, DUP_B, EDGES, FUNC, MONO, NODES, SAE, SHUFFLE

DOC = DocumentRef(path="/corpus.yaml", content_hash="c1", format="structured")


@pytest.fixture(scope="module")
def cos(vectors):
    """Brute-force cosine of every pair of corpus nodes, from the same vectors the store holds."""
    vec = {n.id: vectors[text_hash(n)] for n in NODES}
    return {(a, b): float(vec[a] @ vec[b]) for a, b in itertools.combinations(sorted(vec), 2)}


def _build(store, vectors, edges=EDGES):
    store.apply(GraphDelta(nodes=NODES, edges=edges), DOC, vectors=vectors, model=MODEL_NAME)
    return store


@pytest.fixture
def graph(store, vectors):
    return _build(store, vectors)


def _linked(store) -> set[tuple[str, str]]:
    return {tuple(sorted((e.src, e.dst))) for e in store.edges()}


# -- the matrix routine ---------------------------------------------------------------------------
@pytest.mark.parametrize("n,block", [(96, 8), (96, 32), (96, 96), (96, 7), (96, 50), (96, 500), (97, 1), (1, 4)])
def test_blocked_pairs_equal_brute_force(n, block):
    rng = np.random.default_rng(n * 1000 + block)
    # low dimension so that many pairs are similar; a few planted near-copies
    X = rng.standard_normal((n, 6)).astype(np.float32)
    X[1::9] = X[0::9][: len(X[1::9])] + 0.01 * rng.standard_normal((len(X[1::9]), 6)).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    full = X.astype(np.float64) @ X.T.astype(np.float64)  # [n, n] reference, float64
    threshold = 0.6
    near = np.abs(full - threshold) < 1e-5  # float32 blocks may round either way here: leave those out
    want = {(i, j) for i in range(n) for j in range(i + 1, n) if full[i, j] >= threshold and not near[i, j]}
    i, j, s = similar_pairs(X, threshold, block=block, progress=False)
    got = {(a, b) for a, b in zip(i.tolist(), j.tolist()) if not near[a, b]}
    assert got == want
    assert len(set(zip(i.tolist(), j.tolist()))) == len(i), "each pair once"
    assert (i < j).all() and (s >= threshold).all()
    np.testing.assert_allclose(s, full[i, j], atol=1e-5)
    if n > 50:
        assert len(want) > 100  # the test has something to find


@pytest.mark.parametrize("strip", [1, 5, 1024])
def test_blocked_pairs_in_strips_and_threads_equal_one_pass(monkeypatch, strip):
    """Tiles cut into strips of rows and shared out among threads give the pairs of one thread and whole tiles,
    in the same order (strips are gathered in item order, not as threads finish)."""
    import claimgraph.graph.similarity as sim

    rng = np.random.default_rng(strip)
    X = rng.standard_normal((203, 6)).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    monkeypatch.setattr(sim, "_blas_threads", lambda: 1)
    one = similar_pairs(X, 0.5, block=64, progress=False)  # whole [64, 64] tiles, one thread
    monkeypatch.setattr(sim, "STRIP", strip)
    for threads in (1, 3):
        monkeypatch.setattr(sim, "_blas_threads", lambda t=threads: t)
        got = similar_pairs(X, 0.5, block=64, progress=False)
        np.testing.assert_array_equal(got[0], one[0])
        np.testing.assert_array_equal(got[1], one[1])
        np.testing.assert_allclose(got[2], one[2], rtol=0, atol=1e-6)
    assert len(one[0]) > 1000


def test_blocked_pairs_threshold_above_everything():
    X = np.eye(5, dtype=np.float32)
    i, j, s = similar_pairs(X, 0.5, block=2, progress=False)
    assert len(i) == len(j) == len(s) == 0
    with pytest.raises(InvalidInput):
        similar_pairs(X, 0.5, block=0)


# -- suggest --------------------------------------------------------------------------------------
def _best_n_reference(pairs: dict[tuple, float], n_best: int) -> set[tuple]:
    """Each node's best `n_best` pairs by score, ties by the other end ascending, written independently."""
    by_node: dict = {}
    for (a, b), s in pairs.items():
        by_node.setdefault(a, []).append((-s, b, (a, b)))
        by_node.setdefault(b, []).append((-s, a, (a, b)))
    return {p for cands in by_node.values() for _, _, p in sorted(cands)[:n_best]}


@pytest.mark.parametrize("per_node", [1, 2, 3, 7, 1000])
def test_best_per_node_equals_brute_force(per_node):
    rng = np.random.default_rng(per_node)
    n = 60
    X = rng.standard_normal((n, 5)).astype(np.float32)
    X[30:40] = X[0:10]  # exact copies: equal scores, so ties must break by the other end's position
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    i, j, s = similar_pairs(X, 0.2, block=16, progress=False)
    keep = best_per_node(i, j, s, n, per_node)
    pairs = {(a, b): float(x) for a, b, x in zip(i.tolist(), j.tolist(), s.tolist())}
    got = {p for p, k in zip(pairs, keep.tolist()) if k}
    assert got == _best_n_reference(pairs, per_node)
    assert len(got) < len(pairs) or per_node == 1000
    assert best_per_node(i, j, s, n, None).all()


@pytest.mark.parametrize("per_node", [1, 3, 10])
def test_best_per_node_drops_by_histogram_exactly(per_node):
    """Many pairs per node (the histogram cut runs), ties at every score, pairs in no particular order."""
    rng = np.random.default_rng(7 + per_node)
    n = 300
    X = rng.standard_normal((n, 6)).astype(np.float32)
    X[100:200] = X[0:100]  # exact copies: equal scores everywhere, so the cut bucket has ties to break
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    i, j, s = similar_pairs(X, 0.3, block=64, progress=False)
    assert 2 * len(i) > 4 * per_node * n  # the branch under test
    shuffle = rng.permutation(len(i))
    i, j, s = i[shuffle], j[shuffle], s[shuffle]
    keep = best_per_node(i, j, s, n, per_node)
    pairs = {(a, b): float(x) for a, b, x in zip(i.tolist(), j.tolist(), s.tolist())}
    got = {p for p, k in zip(pairs, keep.tolist()) if k}
    assert got == _best_n_reference(pairs, per_node)


def test_suggest_equals_brute_force_and_flags_planted_duplicate(graph, cos):
    threshold = 0.5
    got = suggest(graph, threshold=threshold, progress=False)
    linked = _linked(graph)
    want = {p: s for p, s in cos.items() if s >= threshold and p not in linked}
    assert {(g.src, g.dst) for g in got} == set(want)
    assert len(want) >= 5
    for g in got:
        assert g.src < g.dst and g.state == "open"
        assert g.score == pytest.approx(want[(g.src, g.dst)], abs=1e-5)
    assert [g.score for g in got] == sorted((g.score for g in got), reverse=True)
    dup = next(g for g in got if (g.src, g.dst) == tuple(sorted((DUP_A, DUP_B))))
    assert dup.duplicate and dup.score >= 0.95 and got[0] == dup
    # only the planted pair is a duplicate here (titles all differ, every other cosine is far below 0.95)
    assert [g for g in got if g.duplicate] == [dup]
    # persisted as open rows
    rows = graph.sql("SELECT a, b, state, model FROM suggestions ORDER BY a, b")
    assert [(a, b) for a, b, _, _ in rows] == sorted(want)
    assert {(st, m) for _, _, st, m in rows} == {("open", MODEL_NAME)}
    assert suggestions(graph) == got
    # small tiles that do not divide the node count give the same answer
    tiled = suggest(graph, threshold=threshold, block=5, progress=False)
    assert [(g.src, g.dst) for g in tiled] == [(g.src, g.dst) for g in got]


def test_suggest_keeps_each_nodes_best_pairs_and_a_rejection_frees_a_slot(graph, cos):
    threshold = 0.2
    linked = _linked(graph)
    eligible = {p: s for p, s in cos.items() if s >= threshold and p not in linked}
    everything = suggest(graph, threshold=threshold, per_node=None, progress=False)
    assert {(g.src, g.dst) for g in everything} == set(eligible)
    got = suggest(graph, threshold=threshold, per_node=2, progress=False)
    want = _best_n_reference(eligible, 2)
    assert {(g.src, g.dst) for g in got} == want and len(want) < len(eligible)
    assert {tuple(r) for r in graph.sql("SELECT a, b FROM suggestions WHERE state = 'open'")} == want
    # a rejected pair is gone for good and the next-best pair of its ends takes the slot
    target = got[0]
    reject(graph, target.src, target.dst)
    del eligible[(target.src, target.dst)]
    again = suggest(graph, threshold=threshold, per_node=2, progress=False)
    assert {(g.src, g.dst) for g in again} == _best_n_reference(eligible, 2)
    assert (target.src, target.dst) not in {(g.src, g.dst) for g in again}
    with pytest.raises(InvalidInput, match="per_node"):
        suggest(graph, per_node=0)


def test_suggest_skips_pairs_with_a_typed_edge(store, vectors, cos):
    with Store(None) as bare:  # the same nodes without edges: the linked pairs are similar enough to propose
        _build(bare, vectors, edges=[])
        plain = {(g.src, g.dst) for g in suggest(bare, threshold=0.3, progress=False)}
    linked = _linked(_build(store, vectors))
    assert linked & plain, "some edge pair must pass the threshold for this test to mean anything"
    got = {(g.src, g.dst) for g in suggest(store, threshold=0.3, progress=False)}
    assert got == plain - linked


def test_type_restricts_both_ends(graph, cos):
    got = suggest(graph, threshold=0.3, type=NodeType.finding, progress=False)
    assert got and all(g.src_type == g.dst_type == NodeType.finding for g in got)
    want = {p for p, s in cos.items() if s >= 0.3 and p[0].startswith("finding:") and p[1].startswith("finding:")}
    assert {(g.src, g.dst) for g in got} == want - _linked(graph)
    with pytest.raises(InvalidInput, match="unknown node type"):
        suggest(graph, type="gadget")


def test_rejected_pair_is_never_proposed_again(graph):
    first = suggest(graph, threshold=0.5, progress=False)
    target = next(g for g in first if not g.duplicate)
    r = reject(graph, target.dst, target.src)  # either order names the pair
    assert r.state == "rejected" and (r.src, r.dst) == (target.src, target.dst)
    again = suggest(graph, threshold=0.5, progress=False)
    assert (target.src, target.dst) not in {(g.src, g.dst) for g in again}
    assert len(again) == len(first) - 1
    lower = suggest(graph, threshold=0.2, progress=False)  # a wider search does not bring it back either
    assert (target.src, target.dst) not in {(g.src, g.dst) for g in lower}
    row = graph.sql("SELECT state, decided_at IS NOT NULL FROM suggestions WHERE a = ? AND b = ?",
                    [target.src, target.dst])
    assert row == [("rejected", True)]


def test_every_pair_keeps_one_row_through_decisions_and_suggesting_again(graph, cos):
    """The table has no key (schema migration 8), so the writers keep each pair to one row: a decision on an open
    pair updates its row, one on a pair never suggested inserts it, and suggesting again inserts only new pairs."""
    first = suggest(graph, threshold=0.4, progress=False)
    plain = [g for g in first if not g.duplicate]
    far = min((p for p in cos if p not in _linked(graph)), key=cos.get)  # the least similar pair: never suggested
    assert cos[far] < 0.4
    reject(graph, plain[0].src, plain[0].dst)            # had an open row
    accept(graph, plain[1].dst, plain[1].src)            # had an open row, named the other way round
    accept(graph, far[1], far[0])                        # had none: inserted
    twice = "SELECT a, b, count(*) FROM suggestions GROUP BY a, b HAVING count(*) > 1"
    assert graph.sql(twice) == []
    assert graph.sql("SELECT count(*) FROM suggestions")[0][0] == len(first) + 1
    suggest(graph, threshold=0.3, progress=False)        # more pairs than before, the decided ones kept out
    suggest(graph, threshold=0.3, progress=False)        # and the same again
    assert graph.sql(twice) == []
    states = dict(((a, b), st) for a, b, st in graph.sql("SELECT a, b, state FROM suggestions"))
    assert states[(plain[0].src, plain[0].dst)] == "rejected"
    assert states[(plain[1].src, plain[1].dst)] == "accepted"
    assert states[far] == "accepted"
    assert list(states.values()).count("open") == len(suggestions(graph, state="open")) > len(first) - 2


def test_accept_duplicate_makes_duplicate_of_edge(graph):
    suggest(graph, threshold=0.5, progress=False)
    e = accept(graph, DUP_B, DUP_A)
    assert (e.src, e.type, e.dst) == (DUP_B, EdgeType.duplicate_of, DUP_A)
    assert e.provenance.made_by == MadeBy.accepted_suggestion
    stored = graph.get_edge(DUP_B, "duplicate_of", DUP_A)
    assert stored.provenance.made_by == MadeBy.accepted_suggestion and stored.attrs["similarity"] >= 0.95
    a, b = sorted((DUP_A, DUP_B))
    assert graph.sql("SELECT state, edge_type FROM suggestions WHERE a = ? AND b = ?", [a, b]) == \
        [("accepted", "duplicate_of")]
    again = suggest(graph, threshold=0.5, progress=False)
    assert (a, b) not in {(g.src, g.dst) for g in again}
    assert suggestions(graph, state="accepted")[0].src == a


def test_accept_default_and_explicit_edge_types(graph):
    got = suggest(graph, threshold=0.4, progress=False)
    plain = next(g for g in got if not g.duplicate)
    e = accept(graph, plain.src, plain.dst)
    assert e.type == EdgeType.associated_with and e.provenance.made_by == MadeBy.accepted_suggestion
    # an explicit type, on a pair that was never suggested (scored from stored vectors)
    e2 = accept(graph, SHUFFLE, SAE, edge="uses_method")
    assert (e2.src, e2.type, e2.dst) == (SHUFFLE, EdgeType.uses_method, SAE)
    assert graph.sql("SELECT state FROM suggestions WHERE a = ? AND b = ?", sorted((SHUFFLE, SAE))) == [("accepted",)]


def test_accept_and_reject_errors_write_nothing(graph):
    suggest(graph, threshold=0.5, progress=False)
    before = (graph.count_edges(), graph.sql("SELECT * FROM suggestions ORDER BY a, b"))
    with pytest.raises(NotFound, match="claim:no-such-node"):
        accept(graph, DUP_A, "claim:no-such-node")
    with pytest.raises(NotFound):
        reject(graph, "finding:nothing-here", DUP_A)
    with pytest.raises(InvalidInput, match="unknown edge type"):
        accept(graph, DUP_A, DUP_B, edge="resembles")
    with pytest.raises(InvalidInput, match="same type"):  # duplicate_of across types breaks the edge rules
        accept(graph, DUP_A, SAE, edge="duplicate_of")
    with pytest.raises(InvalidInput, match="same node"):
        reject(graph, DUP_A, DUP_A)
    assert (graph.count_edges(), graph.sql("SELECT * FROM suggestions ORDER BY a, b")) == before
    accept(graph, DUP_A, DUP_B)
    with pytest.raises(InvalidInput, match="unlink"):
        reject(graph, DUP_A, DUP_B)


def test_resuggest_replaces_stale_open_rows_keeps_decisions(graph):
    wide = suggest(graph, threshold=0.3, progress=False)
    rejected = next(g for g in wide if g.score < 0.4)
    reject(graph, rejected.src, rejected.dst)
    narrow = suggest(graph, threshold=0.5, progress=False)
    open_rows = set(graph.sql("SELECT a, b FROM suggestions WHERE state = 'open'"))
    assert open_rows == {(g.src, g.dst) for g in narrow}
    assert graph.sql("SELECT state FROM suggestions WHERE a = ? AND b = ?", [rejected.src, rejected.dst]) == \
        [("rejected",)]
    # an edge added since the last run removes the pair's open row on the next run
    g0 = narrow[1]
    graph.link(g0.src, "associated_with", g0.dst)
    suggest(graph, threshold=0.5, progress=False)
    assert not graph.sql("SELECT 1 FROM suggestions WHERE a = ? AND b = ?", [g0.src, g0.dst])
    assert len(suggest(graph, threshold=0.5, limit=2, progress=False)) == 2


# -- computed neighbours --------------------------------------------------------------------------
def test_computed_neighbors_exclude_typed_neighbours(graph, cos):
    typed = {MONO, SHUFFLE, SAE}  # FUNC's edges: extracted_from MONO, SHUFFLE supports it, uses_method SAE
    assert {e.dst if e.src == FUNC else e.src for e in graph.edges(FUNC)} == typed
    got = computed_neighbors(graph, FUNC, k=100, threshold=-1.0)
    assert {i for i, _ in got} == {n.id for n in NODES} - typed - {FUNC}
    ref = sorted(((b if a == FUNC else a, s) for (a, b), s in cos.items() if FUNC in (a, b)
                  and (b if a == FUNC else a) not in typed), key=lambda p: -p[1])
    assert [i for i, _ in got] == [i for i, _ in ref]
    np.testing.assert_allclose([s for _, s in got], [s for _, s in ref], atol=1e-5)
    top = computed_neighbors(graph, FUNC, k=3, threshold=0.3)
    assert len(top) <= 3 and all(s >= 0.3 for _, s in top) and top == got[:len(top)]
    assert computed_neighbors(graph, DUP_A, k=1)[0][0] == DUP_B
    with pytest.raises(NotFound):
        computed_neighbors(graph, "claim:not-there")


def test_computed_neighbors_does_not_import_torch(db_path, vectors):
    with Store(db_path) as s:
        _build(s, vectors)
    code = textwrap.dedent(f"""
        import sys
        from claimgraph.graph import Store
        from claimgraph.graph.similarity import computed_neighbors
        with Store({str(db_path)!r}, read_only=True) as s:
            got = computed_neighbors(s, {DUP_A!r}, k=3, threshold=0.5)
        assert got and got[0][0] == {DUP_B!r}, got
        heavy = sorted(m for m in ("torch", "sentence_transformers", "transformers") if m in sys.modules)
        print("loaded:", heavy)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "loaded: []"


def test_computed_neighbors_from_a_warm_vector_matrix_equal_the_sql_scan(graph):
    """With the store's vector matrix cached in-process (as the web UI keeps it), the neighbours come from one
    product with it; same ids, order and scores as the SQL scan, and a write makes the cache stale again."""
    from claimgraph.graph.embed import MODEL_NAME
    from claimgraph.graph.search import cached_vector_matrix, vector_matrix

    assert cached_vector_matrix(graph, MODEL_NAME) is None
    cases = [(n.id, k, t) for n in NODES for k, t in ((100, -1.0), (3, 0.3), (1, 0.65))]
    sql = [computed_neighbors(graph, i, k=k, threshold=t) for i, k, t in cases]
    vector_matrix(graph, MODEL_NAME)
    assert cached_vector_matrix(graph, MODEL_NAME) is not None
    warm = [computed_neighbors(graph, i, k=k, threshold=t) for i, k, t in cases]
    for a, b in zip(sql, warm):
        assert [i for i, _ in a] == [i for i, _ in b]
        np.testing.assert_allclose([s for _, s in a], [s for _, s in b], atol=1e-5)
    graph.link(NODES[0].id, "associated_with", warm[0][0][0] if warm[0] else NODES[1].id)
    assert cached_vector_matrix(graph, MODEL_NAME) is not None  # an edge changes no vector...
    after = computed_neighbors(graph, NODES[0].id, k=100, threshold=-1.0)
    assert warm[0][0][0] not in {i for i, _ in after}  # ...and the new typed neighbour is excluded
    graph.add_node(NODES[1].model_copy(update={"text": "rewritten"}))
    assert cached_vector_matrix(graph, MODEL_NAME) is None  # a rewritten node: stale


def test_suggest_lets_go_of_the_store_while_ranking_and_drops_pairs_decided_meanwhile(file_store, vectors, cos,
                                                                                      monkeypatch):
    """The pairs are ranked between a reading turn and a writing one: another Store (as another process would)
    writes while they are computed, and a pair it rejected, linked or whose node it deleted is not written
    nor returned."""
    from claimgraph.graph import similarity

    graph = _build(file_store, vectors)
    threshold = 0.3
    linked = _linked(graph)
    eligible = sorted((p for p, s in cos.items() if s >= threshold and p not in linked), key=lambda p: -cos[p])
    rejected, linked_now = eligible[0], eligible[1]
    gone_node = next(x for p in eligible[2:] for x in p if x not in rejected + linked_now)
    real = similarity.similar_pairs

    def meanwhile(*a, **kw):
        other = Store(graph.path, busy_timeout=5, on_wait=None)  # times out if suggest held the store
        reject(other, *rejected)
        other.link(linked_now[0], "associated_with", linked_now[1])
        other.delete_node(gone_node)
        return real(*a, **kw)

    monkeypatch.setattr(similarity, "similar_pairs", meanwhile)
    got = {(g.src, g.dst) for g in suggest(graph, threshold=threshold, per_node=None, progress=False)}
    stored = {tuple(r) for r in graph.sql("SELECT a, b FROM suggestions WHERE state = 'open'")}
    want = {p for p in eligible if p not in (rejected, linked_now) and gone_node not in p}
    assert got == stored == want
    assert graph.sql("SELECT state FROM suggestions WHERE a = ? AND b = ?", list(rejected)) == [("rejected",)]


def _add_a_node_while_ranking(graph, monkeypatch):
    """Make the next `suggest` see the store change between its reading and writing turns: another Store adds
    an unrelated node while the pairs are ranked, so the pairs are written checked one by one."""
    from claimgraph.graph import similarity

    real = similarity.similar_pairs

    def meanwhile(*a, **kw):
        Store(graph.path, busy_timeout=5, on_wait=None).add_node(
            Node(id="claim:unrelated-newcomer", type="claim", title="Unrelated newcomer"))
        return real(*a, **kw)

    monkeypatch.setattr(similarity, "similar_pairs", meanwhile)


@pytest.mark.parametrize("changed", [False, True], ids=["store unchanged", "store changed meanwhile"])
def test_suggest_again_rewrites_only_the_open_pairs_that_changed(file_store, vectors, monkeypatch, changed):
    """An open pair proposed again keeps its row: a marker planted in every open row (in edge_type, which open
    rows never use) survives on the pairs left alone, while a planted stale open pair is deleted, a planted wrong
    score is put right and a pair whose row was removed comes back (writing every pair again would wipe the
    markers). Both ways of writing: straight in, and checked one by one when the store changed meanwhile."""
    from claimgraph.graph import similarity

    graph = _build(file_store, vectors)
    suggest(graph, threshold=0.3, per_node=None, progress=False)
    rows = graph.sql("SELECT a, b, score FROM suggestions WHERE state = 'open' ORDER BY score DESC")
    assert len(rows) > 5
    (wrong_a, wrong_b, right), (lost_a, lost_b, _) = rows[0][:3], rows[1][:3]
    ids = sorted(n.id for n in NODES)
    eligible = {(a, b) for a, b, _ in rows}
    stale = next((a, b) for a, b in itertools.combinations(ids, 2) if (a, b) not in eligible
                 and not graph.sql("SELECT 1 FROM suggestions WHERE a = ? AND b = ?", [a, b]))
    with graph.transaction():
        graph.sql("UPDATE suggestions SET edge_type = 'marker' WHERE state = 'open'")
        graph.sql("UPDATE suggestions SET score = 0.123 WHERE a = ? AND b = ?", [wrong_a, wrong_b])
        graph.sql("DELETE FROM suggestions WHERE a = ? AND b = ?", [lost_a, lost_b])
        graph.sql("INSERT INTO suggestions VALUES (?, ?, 0.99, false, 'open', 'marker', ?, now(), NULL)",
                  [*stale, MODEL_NAME])
    checked: list[bool] = []
    real_write = similarity._write_pairs
    monkeypatch.setattr(similarity, "_write_pairs", lambda *a, **kw: checked.append(kw["check"]) or real_write(*a, **kw))
    if changed:
        _add_a_node_while_ranking(graph, monkeypatch)
    suggest(graph, threshold=0.3, per_node=None, progress=False)
    assert checked == [changed]
    now = {(a, b): (score, mark) for a, b, score, mark in
           graph.sql("SELECT a, b, score, edge_type FROM suggestions WHERE state = 'open'")}
    assert set(now) == eligible  # the stale pair went, the lost one came back
    assert now[(wrong_a, wrong_b)][0] == pytest.approx(right)
    assert now[(lost_a, lost_b)][1] is None  # a new row
    kept = [p for p in eligible if p != (lost_a, lost_b)]
    assert all(now[p][1] == "marker" for p in kept)  # rows left in place, not written again


@pytest.mark.parametrize("changed", [False, True], ids=["store unchanged", "store changed meanwhile"])
def test_an_open_pair_proposed_again_keeps_the_time_it_was_first_proposed(file_store, vectors, monkeypatch, changed):
    """Both ways of writing the pairs: straight in when nothing that decides eligibility changed since the
    reading turn, checked one by one when something did (here: a node added while the pairs were ranked)."""
    from claimgraph.graph import similarity

    graph = _build(file_store, vectors)
    suggest(graph, threshold=0.3, per_node=None, progress=False)
    first = dict(((a, b), t) for a, b, t in graph.sql("SELECT a, b, created_at FROM suggestions WHERE state = 'open'"))
    assert len(first) > 5
    checked: list[bool] = []
    real_write = similarity._write_pairs
    monkeypatch.setattr(similarity, "_write_pairs", lambda *a, **kw: checked.append(kw["check"]) or real_write(*a, **kw))
    if changed:
        _add_a_node_while_ranking(graph, monkeypatch)
    again = suggest(graph, threshold=0.3, per_node=None, progress=False)
    assert checked == [changed]
    now = dict(((a, b), t) for a, b, t in graph.sql("SELECT a, b, created_at FROM suggestions WHERE state = 'open'"))
    assert now == first and {(g.src, g.dst) for g in again} == set(first)
