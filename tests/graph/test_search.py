"""Hybrid search over a small hand-written graph with the real embedder: exact keyword hits, paraphrases,
type filters, BM25 recomputed independently, and both semantic backends agreeing."""
from __future__ import annotations

import math
import os
import sys
from collections import Counter
from pathlib import Path

# Before torch loads: on a shared, busy CPU, OpenMP threads that spin while waiting make one query
# encode take ~1 s instead of ~30 ms (measured; see docs/benchmarks.md).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import pytest

from claimgraph.graph import DocumentRef, GraphDelta, InvalidInput, Node, NodeType
from claimgraph.graph import search as search_mod
from claimgraph.graph.embed import get_embedder, vectors_for
from claimgraph.graph.search import ALPHA, K1, B, keyword_search, search, semantic_search
from claimgraph.graph.text import tokens

sys.path.insert(0, str(Path(__file__).parent))
from sim_corpus import DUP_A, DUP_B, EDGES, IOI, NODES, POLY


@pytest.fixture
def graph(store, vectors):
    store.apply(GraphDelta(nodes=NODES, edges=EDGES), DocumentRef(path="/corpus.yaml", content_hash="c1",
                                                                   format="structured"),
                vectors=vectors, model=get_embedder().model_name)
    return store


def test_exact_title_ranks_first_with_both_parts(graph):
    for node in NODES[3:]:  # every claim, finding, method and question by its own title
        top = search(graph, node.title, k=3)
        if node.id in (DUP_A, DUP_B):  # the planted duplicates have the same index terms: they tie for first
            assert {top[0].id, top[1].id} == {DUP_A, DUP_B}
            continue
        assert top[0].id == node.id, (node.title, [r.id for r in top])
        assert top[0].keyword == max(r.keyword for r in top) and top[0].keyword > 0.8
        assert top[0].semantic > 0.4
        assert top[0].score == pytest.approx(ALPHA * top[0].semantic + (1 - ALPHA) * top[0].keyword, abs=1e-5)


def test_paraphrase_without_shared_words_is_found(graph):
    query = "individual cells react to many different meanings"
    query_terms = set(tokens(query))
    assert all(not (query_terms & set(tokens(n.embed_text()))) for n in NODES), "the query must share no index term"
    results = search(graph, query, k=5)
    assert results[0].id == POLY, [(r.id, r.semantic) for r in results]
    assert results[0].keyword is None  # no query term is in the index: cosine alone
    assert results[0].score == pytest.approx(results[0].semantic)


def test_partial_keyword_overlap_does_not_beat_a_strong_paraphrase(graph):
    # 'neurons' appears in four nodes; POLY is the one the sentence paraphrases.
    results = search(graph, "neurons that react to many different meanings", k=5)
    assert results[0].id == POLY
    others = [r for r in results[1:] if r.keyword]
    assert others and all(r.keyword < 1.0 for r in others)


def test_type_filter(graph):
    for t in (NodeType.method, "finding", NodeType.question):
        results = search(graph, "features in transformer activations", type=t, k=20)
        want = {n.id for n in NODES if n.type == NodeType(t)}
        assert results and {r.id for r in results} <= want
        assert all(r.type == NodeType(t) for r in results)
        # every node of the type has a vector, so all of them come back, best first
        assert {r.id for r in results} == want
        assert [r.score for r in results] == sorted((r.score for r in results), reverse=True)


def test_bad_input(graph):
    with pytest.raises(InvalidInput, match="empty"):
        search(graph, "   ")
    with pytest.raises(InvalidInput, match="unknown node type"):
        search(graph, "features", type="widget")
    with pytest.raises(InvalidInput, match="k must"):
        search(graph, "features", k=0)


def _bm25_reference(nodes: list[Node], query: str) -> tuple[dict[str, float], float]:
    """Textbook BM25 (Lucene idf), written independently of the SQL, and the sum of the query terms' idf."""
    docs = {n.id: Counter(tokens(n.embed_text())) for n in nodes}
    n_docs = len(docs)
    avgdl = sum(sum(c.values()) for c in docs.values()) / n_docs
    out = {}
    for nid, tf in docs.items():
        dl = sum(tf.values())
        s = 0.0
        for term in set(tokens(query)):
            if tf[term]:
                df = sum(1 for c in docs.values() if c[term])
                idf = math.log(1 + (n_docs - df + 0.5) / (df + 0.5))
                s += idf * tf[term] * (K1 + 1) / (tf[term] + K1 * (1 - B + B * dl / avgdl))
        if s:
            out[nid] = s
    dfs = [sum(1 for c in docs.values() if c[t]) for t in set(tokens(query))]
    ideal = sum(math.log(1 + (n_docs - df + 0.5) / (df + 0.5)) for df in dfs if df)
    return out, ideal


@pytest.mark.parametrize("query", ["sparse autoencoder features", "indirect object name heads",
                                   "superposition of sparse features in toy models"])
def test_keyword_part_is_bm25(graph, query):
    ref, ideal = _bm25_reference(NODES, query)
    got = dict(keyword_search(graph, query, k=100))
    assert set(got) == set(ref)
    for nid, s in ref.items():
        assert got[nid] == pytest.approx(s, rel=1e-6)
    # in the hybrid, the keyword part is BM25 / max(best BM25, ideal)
    hybrid = {r.id: r for r in search(graph, query, k=len(NODES))}
    scale = max(max(ref.values()), ideal)
    for nid, s in ref.items():
        assert hybrid[nid].keyword == pytest.approx(s / scale, rel=1e-5)
    assert all(r.keyword == 0.0 for r in hybrid.values() if r.id not in ref)


def test_backends_agree_and_match_numpy(graph, vectors):
    q = get_embedder().encode(["circuits of attention heads in GPT-2"], progress=False)[0]
    by_numpy = semantic_search(graph, q, model=get_embedder().model_name, k=5, backend="numpy")
    by_duckdb = semantic_search(graph, q, model=get_embedder().model_name, k=5, backend="duckdb")
    ids = [n.id for n in NODES]
    mat = np.stack([vectors[h] for h in (search_mod._query(graph, "SELECT text_hash FROM nodes WHERE id = $i",
                                                           {"i": i})[0][0] for i in ids)])
    cos = mat @ q
    ref = sorted(zip(ids, cos.tolist()), key=lambda p: -p[1])[:5]
    assert [p[0] for p in by_numpy] == [p[0] for p in ref] == [p[0] for p in by_duckdb]
    for (_, a), (_, b), (_, c) in zip(by_numpy, by_duckdb, ref):
        assert a == pytest.approx(c, abs=1e-5) and b == pytest.approx(c, abs=1e-5)
    typed = semantic_search(graph, q, model=get_embedder().model_name, k=3, type="finding")
    assert all(i.startswith("finding:") for i, _ in typed)
    hybrid_n = search(graph, "attention heads", k=5, backend="numpy")
    hybrid_d = search(graph, "attention heads", k=5, backend="duckdb")
    assert [r.id for r in hybrid_n] == [r.id for r in hybrid_d]


def test_vector_cache_sees_new_nodes(graph):
    assert search(graph, "attention heads", k=1)[0].id != "claim:attention-heads-are-interpreted-by-gardeners"
    new = Node(id="claim:attention-heads-are-interpreted-by-gardeners", type="claim",
               title="Attention heads are interpreted by gardeners")
    graph.add_node(new)
    vecs = vectors_for(graph, [new], progress=False)
    graph.put_embeddings(vecs, get_embedder().model_name)
    top = search(graph, "Attention heads are interpreted by gardeners", k=1)[0]
    assert top.id == new.id and top.semantic == pytest.approx(1.0, abs=1e-5)
    # the cached document lengths follow too: BM25 equals the reference over the grown corpus
    ref, _ = _bm25_reference(NODES + [new], "attention heads gardeners")
    got = dict(keyword_search(graph, "attention heads gardeners", k=100))
    assert set(got) == set(ref) and all(got[i] == pytest.approx(ref[i], rel=1e-6) for i in ref)
    graph.delete_node(IOI)
    ref, _ = _bm25_reference([n for n in NODES if n.id != IOI] + [new], "indirect object circuit")
    got = dict(keyword_search(graph, "indirect object circuit", k=100))
    assert set(got) == set(ref) and all(got[i] == pytest.approx(ref[i], rel=1e-6) for i in ref)


def test_keyword_only_store_never_loads_vectors(store):
    store.apply(GraphDelta(nodes=NODES, edges=EDGES), DocumentRef(path="/c.yaml", content_hash="c", format="structured"))
    results = search(store, "Activation patching localises the indirect object identification circuit", k=3)
    assert results[0].id == IOI and results[0].semantic is None
    assert results[0].score == pytest.approx(results[0].keyword) and results[0].keyword > 0.9
    assert all(r.semantic is None and r.score == r.keyword for r in results)
