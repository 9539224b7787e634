"""The store: round-trips, idempotent apply, updates from changed documents, validation, migrations,
plain-DuckDB readability, and two processes at once."""
from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from datetime import datetime

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from claimgraph.graph import (
    DocumentRef,
    Edge,
    GraphDelta,
    InvalidDocument,
    InvalidInput,
    MadeBy,
    Node,
    NodeType,
    NotFound,
    StatedSimilarity,
    Store,
    StoreBusy,
    StoreError,
    make_id,
    paper_id,
)
from claimgraph.graph.schema import MIGRATIONS, SCHEMA_VERSION


def doc(path="/docs/a.yaml", h="h1"):
    return DocumentRef(path=path, content_hash=h, format="structured")


def small_delta(claim_text="Some description.") -> GraphDelta:
    p = Node(id=paper_id(title="A Paper"), type="paper", title="A Paper",
             attrs={"year": 2024, "authors": ["Ada Lovelace"], "title_norm": "a paper"})
    c = Node(id=make_id("claim", "Features are model properties"), type="claim",
             title="Features are model properties", text=claim_text)
    f = Node(id=make_id("finding", "Shuffled models give single-token features"), type="finding",
             title="Shuffled models give single-token features")
    return GraphDelta(nodes=[p, c, f], edges=[
        Edge(src=c.id, type="extracted_from", dst=p.id),
        Edge(src=f.id, type="supports", dst=c.id, attrs={"stated": True}),
    ], similar=[StatedSimilarity(node_id=c.id, other_title="An untyped neighbour"),
                StatedSimilarity(node_id=c.id, other_id=f.id, other_title=f.title, other_type="finding", score=0.8)])


def test_apply_writes_nodes_edges_provenance(store):
    r = store.apply(small_delta(), doc())
    assert r.nodes_added == {"paper": 1, "claim": 1, "finding": 1}
    assert r.edges_added == {"extracted_from": 1, "supports": 1}
    c = store.get_node("claim:features-are-model-properties")
    assert c.text == "Some description."
    assert c.provenance.source == "/docs/a.yaml" and c.provenance.source_hash == "h1"
    assert c.provenance.made_by == MadeBy.parsed
    e = store.get_edge("finding:shuffled-models-give-single-token-features", "supports", c.id)
    assert e.attrs == {"stated": True} and e.provenance.source_hash == "h1"
    sims = store.stated_similar(c.id)
    assert [(s.other_id, s.score) for s in sims] == [("finding:shuffled-models-give-single-token-features", 0.8),
                                                     (None, None)]


def test_reapply_same_document_is_noop(store):
    store.apply(small_delta(), doc())
    before = (store.count_nodes(), store.count_edges(), store.sql("SELECT count(*) FROM node_terms"))
    r = store.apply(small_delta(), doc())
    assert r.unchanged and r.nodes_added == {} and len(r.node_ids) == 3
    assert (store.count_nodes(), store.count_edges(), store.sql("SELECT count(*) FROM node_terms")) == before


def test_changed_document_updates_in_place_and_drops_what_it_no_longer_says(store):
    store.apply(small_delta(), doc())
    store.link("claim:features-are-model-properties", "associated_with", "paper:a-paper")  # a person's edge
    d2 = small_delta("A revised description.")
    d2.nodes = [n for n in d2.nodes if n.type != NodeType.finding]
    d2.edges = [e for e in d2.edges if e.type.value != "supports"]
    r = store.apply(d2, doc(h="h2"))
    assert r.nodes_updated == {"claim": 1} and r.nodes_added == {}
    assert r.nodes_removed == {"finding": 1} and r.edges_removed == {"supports": 1}
    assert store.get_node("claim:features-are-model-properties").text == "A revised description."
    assert store.count_nodes() == {"claim": 1, "paper": 1}
    # the manual edge survives re-ingest
    assert store.get_edge("claim:features-are-model-properties", "associated_with", "paper:a-paper").provenance.made_by \
        == MadeBy.manual


def test_changed_document_mixing_new_and_changed_rows_writes_each_once(store):
    """One apply that adds some nodes and edges and changes others: the new ones are inserted, the changed
    ones updated in place (attrs merged), and nothing is duplicated."""
    store.apply(small_delta(), doc())
    d2 = small_delta("A revised description.")
    q = Node(id=make_id("question", "Are features real"), type="question", title="Are features real")
    d2.nodes.append(q)
    d2.edges = [e.model_copy(update={"attrs": {"quote": "as stated"}}) if e.type.value == "supports" else e
                for e in d2.edges] + [Edge(src=d2.nodes[1].id, type="addresses", dst=q.id)]
    r = store.apply(d2, doc(h="h2"))
    assert r.nodes_added == {"question": 1} and r.nodes_updated == {"claim": 1}
    assert r.edges_added == {"addresses": 1}
    edge = store.get_edge("finding:shuffled-models-give-single-token-features", "supports",
                          "claim:features-are-model-properties")
    assert edge.attrs == {"stated": True, "quote": "as stated"}
    assert store.get_node("claim:features-are-model-properties").text == "A revised description."
    assert store.count_nodes() == {"claim": 1, "finding": 1, "paper": 1, "question": 1}
    assert store.count_edges() == {"addresses": 1, "extracted_from": 1, "supports": 1}


def test_node_shared_by_two_documents_survives_one_dropping_it(store):
    store.apply(small_delta(), doc("/a"))
    store.apply(small_delta(), doc("/b"))
    d2 = small_delta()
    d2.nodes = [n for n in d2.nodes if n.type != NodeType.finding]
    d2.edges = [e for e in d2.edges if e.type.value != "supports"]
    r = store.apply(d2, doc("/a", "h2"))
    assert r.nodes_removed == {}
    assert store.has_node("finding:shuffled-models-give-single-token-features")


def test_papers_match_by_doi_or_title(store):
    store.apply(small_delta(), doc())
    other = Node(id=paper_id(doi="10.1/xyz"), type="paper", title="A  paper!",
                 attrs={"doi": "10.1/xyz", "title_norm": "a paper"})
    claim = Node(id="claim:another", type="claim", title="Another")
    r = store.apply(GraphDelta(nodes=[other, claim], edges=[Edge(src="claim:another", type="extracted_from",
                                                                 dst=other.id)]), doc("/b"))
    assert r.nodes_added == {"claim": 1}
    assert store.count_nodes()["paper"] == 1
    assert store.get_node("paper:a-paper").attrs["doi"] == "10.1/xyz"
    assert store.get_edge("claim:another", "extracted_from", "paper:a-paper")


def test_stated_facts_are_not_erased_by_a_document_that_omits_them(store):
    store.apply(small_delta(), doc("/a"))
    bare = Node(id="paper:a-paper", type="paper", title="A Paper", attrs={"title_norm": "a paper"})
    store.apply(GraphDelta(nodes=[bare]), doc("/b"))
    assert store.get_node("paper:a-paper").attrs["year"] == 2024


@pytest.mark.parametrize("edge, message", [
    (Edge(src="claim:features-are-model-properties", type="tests", dst="paper:a-paper"), "cannot start at a claim"),
    (Edge(src="claim:features-are-model-properties", type="cites", dst="paper:a-paper"), "cannot start at a claim"),
    (Edge(src="claim:features-are-model-properties", type="duplicate_of", dst="paper:a-paper"), "same type"),
    (Edge(src="claim:features-are-model-properties", type="supports", dst="claim:nowhere"), "unknown node"),
])
def test_bad_edges_are_refused_and_nothing_is_written(store, edge, message):
    d = small_delta()
    d.edges.append(edge)
    with pytest.raises(InvalidDocument, match=message) as e:
        store.apply(d, doc())
    assert "/docs/a.yaml" in str(e.value)
    assert store.count_nodes() == {} and store.documents() == []


def test_unknown_types_are_errors(store):
    with pytest.raises(ValueError):
        Node(id="gizmo:x", type="gizmo", title="x")
    with pytest.raises(ValueError):
        Edge(src="claim:a", type="likes", dst="claim:b")
    with pytest.raises(InvalidInput, match="unknown edge type"):
        store.link("claim:a", "likes", "claim:b")
    d = GraphDelta(nodes=[Node(id="finding:x", type="claim", title="x")])
    with pytest.raises(InvalidDocument, match="id says 'finding'"):
        store.apply(d, doc())


def test_bad_attrs_are_refused_with_the_field(store):
    d = GraphDelta(nodes=[Node(id="paper:p", type="paper", title="P", attrs={"year": "last spring"})])
    with pytest.raises(InvalidDocument, match="attrs.year"):
        store.apply(d, doc())


def test_transaction_rolls_back_on_error(store):
    with pytest.raises(RuntimeError):
        with store.transaction():
            store.add_node(Node(id="claim:x", type="claim", title="X"))
            raise RuntimeError("boom")
    assert not store.has_node("claim:x")


def test_delete_node_removes_its_edges(store):
    store.apply(small_delta(), doc())
    store.delete_node("finding:shuffled-models-give-single-token-features")
    assert store.count_edges() == {"extracted_from": 1}
    with pytest.raises(NotFound):
        store.get_node("finding:shuffled-models-give-single-token-features")


text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), min_size=1, max_size=60)
json_value = st.recursive(st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.text(max_size=20),
                          lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=3),
                          max_leaves=6)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(title=text.filter(lambda s: s.strip()), body=st.text(max_size=200),
       attrs=st.dictionaries(st.text(min_size=1, max_size=10), json_value.filter(lambda v: v is not None), max_size=4),
       ntype=st.sampled_from([t for t in NodeType if t not in (NodeType.paper, NodeType.evidence)]))
def test_node_roundtrip(store, title, body, attrs, ntype):
    node = Node(id=make_id(ntype, title), type=ntype, title=title, text=body, attrs=attrs)
    store.add_node(node)
    back = store.get_node(node.id)
    assert (back.id, back.type, back.title, back.text, back.attrs) == (node.id, node.type, node.title.strip(),
                                                                      node.text, node.attrs)
    store.delete_node(node.id)


def test_file_is_plain_duckdb(db_path):
    with Store(db_path) as s:
        s.apply(small_delta(), doc())
    con = duckdb.connect(str(db_path), read_only=True)
    assert con.execute("SELECT count(*) FROM nodes").fetchone()[0] == 3
    assert con.execute("SELECT max(version) FROM schema_version").fetchone()[0] == SCHEMA_VERSION
    con.close()


def _store_at_schema(db_path, version: int) -> duckdb.DuckDBPyConnection:
    """A connection to a new file holding the schema as it was at `version`: each migration's statements up to it,
    recorded in schema_version (their backfills are not run: an empty store needs none)."""
    from claimgraph.graph.schema import VERSION_TABLE

    con = duckdb.connect(str(db_path))
    con.execute(VERSION_TABLE)
    for m in MIGRATIONS:
        if m.version > version:
            break
        for stmt in m.statements:
            con.execute(stmt)
        con.execute("INSERT INTO schema_version VALUES (?, ?, now())", [m.version, m.description])
    return con


def test_migration_from_version_1(db_path):
    _store_at_schema(db_path, 1).close()
    with Store(db_path) as s:
        assert s.schema_version() == SCHEMA_VERSION
        assert s.runs() == []
        assert [r[0] for r in s.sql("SELECT version FROM schema_version ORDER BY version")] == \
            [m.version for m in MIGRATIONS]


def test_migration_8_keeps_the_suggestions_and_drops_their_key(db_path):
    """A store at schema 7 (suggestions keyed by (a, b)) opens at the current schema with every suggestion row as it
    was, and the table has no key left to fill and commit on each `suggest`."""
    con = _store_at_schema(db_path, 7)
    rows = [("claim:a", "claim:b", 0.9, True, "open", None, "m", datetime(2026, 1, 1), None),
            ("claim:a", "claim:c", 0.7, False, "rejected", None, "m", datetime(2026, 1, 2), datetime(2026, 1, 3)),
            ("claim:b", "claim:c", 0.8, False, "accepted", "associated_with", "m", datetime(2026, 1, 2),
             datetime(2026, 1, 4))]
    con.executemany("INSERT INTO suggestions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    keyed = "SELECT count(*) FROM duckdb_constraints() WHERE table_name = 'suggestions' AND constraint_type = 'PRIMARY KEY'"
    assert con.execute(keyed).fetchone()[0] == 1
    con.close()
    with Store(db_path) as s:
        assert s.schema_version() == SCHEMA_VERSION
        assert s.sql("SELECT * FROM suggestions ORDER BY a, b") == rows
        assert s.sql(keyed) == [(0,)]


def test_newer_schema_is_refused(db_path):
    Store(db_path).close()
    con = duckdb.connect(str(db_path))
    con.execute("INSERT INTO schema_version VALUES (999, 'future', now())")
    con.close()
    with pytest.raises(StoreError, match="newer than this claimgraph"):
        Store(db_path)


def test_not_a_store(tmp_path):
    bad = tmp_path / "x.duckdb"
    bad.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError):
        Store(bad)


HOLD = textwrap.dedent("""
    import sys, time, duckdb
    con = duckdb.connect(sys.argv[1])
    print("holding", flush=True)
    time.sleep(float(sys.argv[2]))
""")


def test_busy_store_waits_then_fails_clearly(db_path):
    Store(db_path).close()
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(db_path), "30"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        t0 = time.monotonic()
        with pytest.raises(StoreBusy, match=r"busy: another process \(process \d+\) holds it outside claimgraph.s queue"):
            Store(db_path, busy_timeout=0.5)
        assert time.monotonic() - t0 >= 0.5
    finally:
        holder.kill()
        holder.wait()
    with Store(db_path, busy_timeout=5) as s:  # released: works again
        assert s.count_nodes() == {}


def test_blocked_writer_waits_for_a_short_holder(db_path):
    Store(db_path).close()
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(db_path), "1.0"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        with Store(db_path, busy_timeout=20) as s:
            s.add_node(Node(id="claim:waited", type="claim", title="Waited"))
    finally:
        holder.wait()
    with Store(db_path) as s:
        assert s.has_node("claim:waited")


WRITER = textwrap.dedent("""
    import sys
    from claimgraph.graph import Store, Node, GraphDelta, DocumentRef, Edge
    path, who, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    for i in range(n):
        with Store(path, busy_timeout=60) as s:
            nodes = [Node(id=f"claim:{who}-{i}", type="claim", title=f"{who} {i}"),
                     Node(id=f"finding:{who}-{i}", type="finding", title=f"{who} finding {i}")]
            s.apply(GraphDelta(nodes=nodes, edges=[Edge(src=nodes[1].id, type="supports", dst=nodes[0].id)]),
                    DocumentRef(path=f"/{who}/{i}", content_hash="h", format="structured"))
""")


def test_two_writers_at_once_lose_nothing(db_path):
    Store(db_path).close()
    n = 15
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(db_path), who, str(n)], stderr=subprocess.PIPE,
                              text=True) for who in ("alice", "bob")]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    with Store(db_path) as s:
        assert s.count_nodes() == {"claim": 2 * n, "finding": 2 * n}
        assert s.count_edges() == {"supports": 2 * n}
        assert len(s.documents()) == 2 * n


def test_migration_9_folds_node_terms_into_a_row_per_node(db_path):
    """A store at schema 8 (node_terms a row per (node, term)) opens at the current schema with each node's terms as
    one row of two aligned lists, the same (node, term, tf) triples, and keyword search ranks from them as it did."""
    from claimgraph.graph.search import keyword_search
    from claimgraph.graph.text import term_counts

    texts = {"claim:a": "Sparse features features emerge", "claim:b": "Dense features vanish", "claim:c": "the of"}
    con = _store_at_schema(db_path, 8)
    for nid, text in texts.items():
        con.execute("INSERT INTO nodes VALUES (?, 'claim', ?, '', '{}', 'h', NULL, NULL, 'manual', now(), now())",
                    [nid, text])
        for t, n in term_counts(text).items():
            con.execute("INSERT INTO node_terms VALUES (?, ?, ?)", [nid, t, n])
    before = sorted(con.execute("SELECT * FROM node_terms").fetchall())
    con.close()
    with Store(db_path) as s:
        assert s.schema_version() == SCHEMA_VERSION
        rows = s.sql("SELECT node_id, terms, tfs FROM node_terms ORDER BY node_id")
        assert [r[0] for r in rows] == ["claim:a", "claim:b"]  # a node without a term had no row and has none
        assert all(r[1] == sorted(r[1]) for r in rows)
        assert sorted((nid, t, n) for nid, terms, tfs in rows for t, n in zip(terms, tfs)) == before
        assert [i for i, _ in keyword_search(s, "features")] == ["claim:a", "claim:b"]  # tf 2 ranks first
        s.add_node(Node(id="claim:d", type="claim", title="Features everywhere"))  # written in the new layout
        assert [i for i, _ in keyword_search(s, "everywhere")] == ["claim:d"]


def test_migration_3_backfills_paper_keys(db_path):
    """A store written before paper_keys existed: opening it indexes its papers, and ingest then matches them."""
    con = _store_at_schema(db_path, 2)
    con.execute("""INSERT INTO nodes VALUES ('paper:old-one', 'paper', 'An Old Paper', '', '{"doi": "10.5/old"}',
                   'h', NULL, NULL, 'manual', now(), now())""")
    con.close()
    with Store(db_path) as s:
        assert sorted(r[0] for r in s.sql("SELECT key FROM paper_keys")) == ["doi:10.5/old", "title:an old paper"]
        again = Node(id=paper_id(title="AN OLD PAPER."), type="paper", title="AN OLD PAPER.")
        assert s.resolve_papers(GraphDelta(nodes=[again])).nodes[0].id == "paper:old-one"
        s.delete_node("paper:old-one")
        assert s.sql("SELECT count(*) FROM paper_keys") == [(0,)]


def test_a_paper_key_given_up_passes_to_the_next_paper_that_carries_it(store):
    """Two stored papers with one DOI (add_node does not merge papers): when the first is deleted, or its DOI
    changes, ingest still resolves that DOI to the other one instead of adding a third paper."""
    first = Node(id="paper:first", type="paper", title="First", attrs={"doi": "10.1/shared"})
    second = Node(id="paper:second", type="paper", title="Second", attrs={"doi": "10.1/shared"})
    third = Node(id="paper:third", type="paper", title="Third", attrs={"doi": "10.1/other"})
    for n in (first, second, third):
        store.add_node(n)
    probe = lambda doi: store.resolve_papers(GraphDelta(nodes=[
        Node(id="paper:probe", type="paper", title="Probe", attrs={"doi": doi})])).nodes[0].id
    assert probe("10.1/shared") == "paper:first"
    store.add_node(first.model_copy(update={"attrs": {"doi": "10.1/changed"}}))
    assert probe("10.1/shared") == "paper:second" and probe("10.1/changed") == "paper:first"
    store.add_node(third.model_copy(update={"attrs": {"doi": "10.1/changed"}}))
    store.delete_node("paper:first")
    assert probe("10.1/changed") == "paper:third"


# -- many documents in one transaction (Store.apply_many / Store.bulk) ------------------------------------
def _vectors(delta: GraphDelta) -> dict:
    import numpy as np

    from claimgraph.graph.store import text_hash

    out = {}
    for n in delta.nodes:
        v = np.random.default_rng(abs(hash(n.title)) % 2**32).standard_normal(384).astype(np.float32)
        out[text_hash(n)] = v / np.linalg.norm(v)
    return out


def _node(ntype: str, title: str, text: str = "", **attrs) -> Node:
    nid = paper_id(title=title, doi=attrs.get("doi")) if ntype == "paper" else make_id(ntype, title)
    return Node(id=nid, type=ntype, title=title, text=text, attrs=attrs)


C = _node("claim", "Induction heads implement copying", "First text.", page_status="active")
F = _node("finding", "Ablating heads removes copying")
P1 = _node("paper", "Paper One", doi="10.1/one", year=2021)


def _item(path: str, nodes: list[Node], edges: list[Edge] = (), similar: list[StatedSimilarity] = (),
          h: str = "h1") -> tuple[GraphDelta, DocumentRef, dict]:
    d = GraphDelta(nodes=nodes, edges=list(edges), similar=list(similar))
    return d, DocumentRef(path=path, content_hash=h, format="structured", title=path), _vectors(d)


def _rounds() -> list[list[tuple[GraphDelta, DocumentRef, dict]]]:
    c_again = C.model_copy(update={"title": "Induction heads implement copying!", "text": "",
                                   "attrs": {"candidates_examined": 3}})  # same id, new title, no text
    p1_by_title = _node("paper", "paper one")  # no DOI: merged into P1 by its normalised title
    p4 = _node("paper", "Paper Four")
    d4 = _node("claim", "Previous-token heads feed induction heads")
    q = _node("question", "Do induction heads form in one step?")
    first = [
        _item("/a", [P1, C, F], [Edge(src=C.id, type="extracted_from", dst=P1.id),
                                 Edge(src=F.id, type="supports", dst=C.id, attrs={"stated": True})],
              [StatedSimilarity(node_id=C.id, other_title="An untyped neighbour", score=0.4)]),
        _item("/b", [p4, d4], [Edge(src=d4.id, type="extracted_from", dst=p4.id),
                               Edge(src=d4.id, type="associated_with", dst=C.id)]),  # an end queued by /a
        _item("/c", [c_again, q], [Edge(src=F.id, type="supports", dst=C.id, attrs={"quote": "q"}),
                                   Edge(src=C.id, type="addresses", dst=q.id)],
              [StatedSimilarity(node_id=C.id, other_title="An untyped neighbour", score=0.9)]),
        _item("/d", [p1_by_title, _node("finding", "Copying survives fine-tuning")],
              [Edge(src=make_id("finding", "Copying survives fine-tuning"), type="extracted_from",
                    dst=p1_by_title.id)]),
        _item("/e", [_node("topic", "Induction"), _node("topic", "Copying")],
              [Edge(src=make_id("topic", "Copying"), type="in_topic", dst=make_id("topic", "Induction"))],
              [StatedSimilarity(node_id=make_id("topic", t), other_title="Attention", score=0.3)  # one neighbour, two nodes
               for t in ("Induction", "Copying")]),
    ]
    changed_a = _item("/a", [P1, C], [Edge(src=C.id, type="extracted_from", dst=P1.id)], h="h2")  # drops F
    bad = _item("/g", [_node("claim", "Refers to nothing")],
                [Edge(src=make_id("claim", "Refers to nothing"), type="supports", dst="claim:not-stored")])
    second = [_item("/f", [_node("method", "Path patching")]), changed_a,
              _item("/f2", [_node("topic", "Copying", "Now described."), _node("method", "Mean ablation")]),
              bad, _item("/h", [_node("method", "Never applied")])]
    return [first, second, second[:3]]  # the last: the documents the second round committed, again


def _apply_each(store: Store, items) -> tuple[list, str | None]:
    reports = []
    for delta, ref, vectors in items:
        try:
            reports.append(store.apply(delta, ref, vectors=vectors, model="m"))
        except InvalidDocument as e:
            return reports, str(e)
    return reports, None


def test_apply_many_writes_what_apply_one_by_one_writes(tmp_path, store_rows):
    """The same documents, one `apply` each and all in one `apply_many`: the same rows in every table and the
    same reports, for documents naming one node or edge (attrs merged, last title wins, empty text keeps the
    old), a paper merged by title into another document's, an edge end defined by an earlier document, a
    changed document inside the group, a refused one (the ones before it committed, those after not applied)
    and the whole group again (a no-op)."""
    one, many = Store(tmp_path / "one.duckdb"), Store(tmp_path / "many.duckdb")
    for k, items in enumerate(_rounds()):
        want, want_err = _apply_each(one, items)
        try:
            got, err = many.apply_many(items, model="m"), None
        except InvalidDocument as e:
            got, err = None, str(e)
        assert err == want_err
        if err is None:
            assert [r.model_dump() for r in got] == [r.model_dump() for r in want]
        assert store_rows(many) == store_rows(one)
        if k == 0:  # what the first round says, merged
            node = many.get_node(C.id)
            assert (node.title, node.text) == ("Induction heads implement copying!", "First text.")
            assert node.attrs == {"page_status": "active", "candidates_examined": 3}
            assert many.get_edge(F.id, "supports", C.id).attrs == {"stated": True, "quote": "q"}
            assert [s.score for s in many.stated_similar(C.id)] == [0.9]
            assert many.count_nodes()["paper"] == 2  # /d's paper merged into /a's
        if k == 1:  # the changed /a dropped F; the refused /g and the /h after it wrote nothing
            assert not many.has_node(F.id) and many.document("/g") is None and many.document("/h") is None
            assert "/bad" not in str(err) and "/g" in str(err)
    assert err is None and all(r.unchanged for r in got)


def test_apply_many_refusal_writes_nothing_of_that_document(store):
    good = _item("/ok", [_node("method", "Path patching")])
    bad = _item("/bad", [_node("claim", "A bad year")], [Edge(src=make_id("claim", "A bad year"), type="supports",
                                                             dst=make_id("claim", "A bad year"))])
    later = _item("/later", [_node("method", "Mean ablation")])
    with pytest.raises(InvalidDocument, match="/bad.*itself"):
        store.apply_many([good, bad, later])
    assert [d.path for d in store.documents()] == ["/ok"]
    assert store.count_nodes() == {"method": 1}
    assert store.sql("SELECT count(*) FROM node_sources WHERE path <> '/ok'") == [(0,)]


def test_bulk_write_error_rolls_back_every_queued_document(store, store_rows):
    """A database error while writing the queued documents writes none of them (the caller replays)."""
    store.apply(*_item("/first", [_node("method", "Path patching")])[:2])
    before = store_rows(store)
    with store.session(write=True):
        with pytest.raises(StoreError):
            with store.bulk("m") as bulk:
                bulk.apply(*_item("/x", [_node("method", "Mean ablation")])[:2])
                bulk.apply(*_item("/y", [_node("method", "Activation patching")])[:2])
                store.con.execute("INSERT INTO documents VALUES ('/y', 'other', 'structured', NULL, now())")
    assert store_rows(store) == before
