"""The variant corpus: documents in the seeds' layouts about other real papers, worded and laid out unlike the
seeds (tests/ingest/variants/). Each `<name>.expected.yaml` was written by hand from what the document states,
and gives the graph it should yield node by node and edge by edge, with the warnings it should raise.

Expected files name each node once (`name:`) and refer to it by that name in edges; ids are computed with the
store's own id functions (make_id, paper_id by title) unless the file gives one, which it does where the
identity is not the title (DOI, arXiv id, a source paper known by its first author).
"""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from claimgraph.graph.ids import make_id, paper_id
from claimgraph.ingest import ingest_paths, parse_document

CORPUS = Path(__file__).parent / "variants"
EXPECTED = sorted(CORPUS.glob("*.expected.yaml"))
KINDS = {"summary": "summary", "claim-page": "claim-page", "novelty": "novelty", "structured": "structured"}


def document_of(expected: Path) -> Path:
    stem = expected.name.removesuffix(".expected.yaml")
    [doc] = [p for p in CORPUS.glob(stem + ".*") if not p.name.endswith(".expected.yaml")]
    return doc


def node_id(spec: dict) -> str:
    if "id" in spec:
        return spec["id"]
    if spec["type"] == "paper":
        return paper_id(title=spec["title"])
    return make_id(spec["type"], spec["title"])


def test_the_corpus_has_five_documents_of_each_kind():
    kinds = [yaml.safe_load(p.read_text())["format"] for p in EXPECTED]
    assert {k: kinds.count(k) for k in KINDS} == dict.fromkeys(KINDS, 5), kinds


@pytest.mark.parametrize("expected", EXPECTED, ids=lambda p: p.name.removesuffix(".expected.yaml"))
def test_variant_gives_its_graph_node_by_node(expected):
    spec = yaml.safe_load(expected.read_text())
    doc = parse_document(document_of(expected), title=spec.get("title"))
    assert doc.ref.format == spec["format"]
    ids = {s["name"]: node_id(s) for s in spec["nodes"]}
    refs = spec.get("refs", {})  # nodes another document defines: edge ends only, checked as external refs
    assert set(doc.external_refs) == set(refs.values())
    got = {n.id: n for n in doc.delta.nodes}
    assert sorted(got) == sorted(ids.values()), "node ids differ"
    for s in spec["nodes"]:
        n = got[ids[s["name"]]]
        assert n.type.value == s["type"] and n.title == s["title"], s["name"]
        if "text_starts" in s or "text_ends" in s:
            assert n.text.startswith(s.get("text_starts", "")) and n.text.endswith(s.get("text_ends", "")), s["name"]
        else:
            assert n.text == s.get("text", ""), s["name"]
        for key, value in (s.get("attrs") or {}).items():
            assert n.attrs.get(key) == value, f"{s['name']}.attrs.{key}: {n.attrs.get(key)!r}"
    edges = {e.key: e.attrs for e in doc.delta.edges}
    ids |= refs
    want = {(ids[src], etype, ids[dst]): (attrs[0] if attrs else None) for src, etype, dst, *attrs in spec["edges"]}
    assert sorted(edges) == sorted(want), "edges differ"
    for key, attrs in want.items():
        if attrs is not None:
            assert {k: edges[key].get(k) for k in attrs} == attrs, key
    key = lambda row: tuple("" if x is None else str(x) for x in row)
    similar = sorted(((ids[s["of"]], ids.get(s.get("other")), s["title"], s.get("score"))
                      for s in spec.get("similar", [])), key=key)
    assert sorted(((s.node_id, s.other_id, s.other_title, s.score) for s in doc.delta.similar), key=key) == similar
    warnings = sorted((w.line or 0, w.message) for w in doc.warnings)
    assert len(warnings) == len(spec["warnings"]), warnings
    for (line, words), (got_line, message) in zip(sorted(spec["warnings"], key=lambda w: w[0]), warnings):
        assert got_line == line and words in message, (line, words, got_line, message)


def test_the_whole_corpus_ingests_into_one_store_and_again_as_a_no_op(store, seeds_dir, birth_title):
    """Titles for summaries that carry none come from the expected files, one document per call; the seeds first,
    since one variant links to the seed claim page."""
    ingest_paths(store, [seeds_dir], title=birth_title, embed=False)
    for expected in EXPECTED:
        spec = yaml.safe_load(expected.read_text())
        ingest_paths(store, [document_of(expected)], title=spec.get("title"), embed=False)
    nodes = store.count_nodes()
    for expected in EXPECTED:
        spec = yaml.safe_load(expected.read_text())
        [again] = ingest_paths(store, [document_of(expected)], title=spec.get("title"), embed=False)
        assert again.unchanged
    assert store.count_nodes() == nodes
    # Documents about the same techniques and papers meet in one node: causal tracing is named by the
    # summary of Meng et al. and is the subject of a method page.
    assert store.has_node("method:causal-tracing")
    srcs = {e.src for e in store.edges() if e.dst == "method:causal-tracing"}
    assert len(srcs) >= 2
