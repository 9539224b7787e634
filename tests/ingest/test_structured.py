"""The structured YAML/JSON format: the graph it gives, refs, shorthand edges, and errors with lines."""
from __future__ import annotations

import json
import textwrap

import pytest

from claimgraph.graph import InvalidDocument
from claimgraph.graph.ids import make_id, paper_id
from claimgraph.ingest import ingest_paths, parse_text

DOC = textwrap.dedent("""\
    papers:
      - title: "Sparse Probing: A Study"
        doi: https://doi.org/10.1234/ABC.5
        year: 2024
        authors: [Ada Lovelace, Alan Turing]
        authors_more: 2
        abstract: We probe.
        topics: [Probing, {title: Linear probes, parent: Probing}]
        claims:
          - title: Probes find features
            text: Linear probes recover planted features.
        findings:
          - title: Probe accuracy is 0.9
            supports: ["claim:Probes find features"]
            refutes: ["claim:probes-never-work"]
        methods:
          - title: Linear probing
        questions:
          - title: Do probes find causal features?
            associated_with: ["finding:Probe accuracy is 0.9"]
        cites: ["paper:Other Paper, Volume 2"]
      - title: Other Paper, Volume 2
        arxiv: arXiv:2309.08600v3
    claims:
      - title: Probes never work
    edges:
      - {src: "method:Linear probing", type: supports, dst: "claim:probes-find-features", attrs: {weight: 2}}
      - src: "paper:Sparse Probing: A Study"
        type: uses_method
        dst: "method:Linear probing"
    """)


def test_structured_yaml_gives_the_graph_it_describes():
    d = parse_text(DOC, "/docs/probing.yaml")
    assert d.ref.format == "structured" and d.external_refs == {}
    nodes = {n.id: n for n in d.delta.nodes}
    p1, p2 = "paper:doi-10-1234-abc-5", "paper:arxiv-2309-08600"
    assert p1 == paper_id(doi="10.1234/ABC.5") and p2 == paper_id(arxiv="2309.08600")
    assert nodes[p1].attrs == {"year": 2024, "authors": ["Ada Lovelace", "Alan Turing"], "authors_more": 2,
                               "doi": "https://doi.org/10.1234/ABC.5", "title_norm": "sparse probing a study",
                               "title_known": True}
    assert nodes[p1].text == "We probe."
    claim, finding = make_id("claim", "Probes find features"), make_id("finding", "Probe accuracy is 0.9")
    method, question = "method:linear-probing", make_id("question", "Do probes find causal features?")
    assert set(nodes) == {p1, p2, claim, finding, method, question, "claim:probes-never-work",
                          "topic:probing", "topic:linear-probes"}
    assert nodes[claim].text == "Linear probes recover planted features."
    edges = {(e.src, e.type.value, e.dst): e.attrs for e in d.delta.edges}
    assert edges == {
        (claim, "extracted_from", p1): {}, (finding, "extracted_from", p1): {}, (method, "extracted_from", p1): {},
        (question, "extracted_from", p1): {},
        (p1, "in_topic", "topic:probing"): {}, (p1, "in_topic", "topic:linear-probes"): {},
        ("topic:linear-probes", "in_topic", "topic:probing"): {},
        (p1, "cites", p2): {},  # the ref by title finds the document's paper under its arXiv id
        (finding, "supports", claim): {}, (finding, "refutes", "claim:probes-never-work"): {},
        (question, "associated_with", finding): {},
        (method, "supports", claim): {"weight": 2}, (p1, "uses_method", method): {},
    }


def test_json_gives_the_same_graph_as_yaml():
    import yaml

    as_json = json.dumps(yaml.safe_load(DOC), indent=1)
    y, j = parse_text(DOC, "/docs/a.yaml"), parse_text(as_json, "/docs/a.json")
    assert j.ref.format == "structured"
    assert j.delta == y.delta


def test_refs_to_stored_nodes_are_allowed_and_to_unknown_nodes_fail_before_writing(store, tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text("papers:\n  - title: Base\n    claims:\n      - title: Base claim\n")
    ingest_paths(store, [base], embed=False)
    later = tmp_path / "later.yaml"
    later.write_text("papers: []\nfindings:\n  - title: New finding\n    supports: ['claim:Base claim', 'paper:Base']\n")
    with pytest.raises(InvalidDocument) as e:  # a paper cannot be supported: the edge rule is checked at parse time
        ingest_paths(store, [later], embed=False)
    assert e.value.line == 4 and "supports" in str(e.value)
    later.write_text("papers: []\nfindings:\n  - title: New finding\n    supports: ['claim:Base claim']\n"
                     "    associated_with: ['paper:BASE', 'question:nowhere']\n")
    with pytest.raises(InvalidDocument) as e:
        ingest_paths(store, [later], embed=False)
    assert e.value.line == 5 and "question:nowhere" in str(e.value)
    assert store.count_nodes() == {"paper": 1, "claim": 1}
    later.write_text("papers: []\nfindings:\n  - title: New finding\n    supports: ['claim:Base claim']\n"
                     "    associated_with: ['paper:BASE']\n")
    ingest_paths(store, [later], embed=False)
    assert {(e.src, e.type.value, e.dst) for e in store.edges("finding:new-finding", direction="out")} == {
        ("finding:new-finding", "supports", "claim:base-claim"), ("finding:new-finding", "associated_with", "paper:base")}


def test_paper_ref_by_title_matches_a_stored_paper_under_its_doi(store, tmp_path):
    a = tmp_path / "a.yaml"
    a.write_text("papers:\n  - title: 'Deep Nets: Why?'\n    doi: 10.1/xyz\n")
    b = tmp_path / "b.yaml"
    b.write_text("papers:\n  - title: Follow-up\n    cites: ['paper:Deep nets why']\n")
    reports = ingest_paths(store, [b, a], embed=False)  # b needs a: a is applied first
    assert [r.path for r in reports] == [str(a.resolve()), str(b.resolve())]
    assert store.get_edge("paper:follow-up", "cites", "paper:doi-10-1-xyz")


def test_documents_referring_to_each_other_in_a_cycle_are_refused(store, tmp_path):
    (tmp_path / "a.yaml").write_text("papers: []\nclaims:\n  - {title: A, supports: ['claim:B']}\n")
    (tmp_path / "b.yaml").write_text("papers: []\nclaims:\n  - {title: B, supports: ['claim:A']}\n")
    with pytest.raises(InvalidDocument, match="cycle"):
        ingest_paths(store, [tmp_path], embed=False)
    assert store.count_nodes() == {}


BAD = [
    # (document, line, field, words in the message)
    ("papers:\n  - title: A\n    claims:\n      - text: no title\n", 4, "papers[0].claims[0].title", "missing required field"),
    ("papers:\n  - title: A\n    clams: []\n", 3, "papers[0].clams", "unknown field 'clams'"),
    ("papers: []\nedges:\n  - src: claim:a\n    type: suports\n    dst: claim:b\n", 4, "edges[0].type", "unknown edge type 'suports'"),
    ("papers: []\nclaims:\n  - title: X\n    supports: ['widget:thing']\n", 4, "claims[0].supports[0]", "unknown node type 'widget'"),
    ("papers: []\nclaims:\n  - title: X\n    supports: ['no colon here']\n", 4, "claims[0].supports[0]", "not a ref"),
    ("papers:\n  - title: A\n    year: twenty\n", 3, "papers[0].year", "valid integer"),
    ("papers:\n  - title: A\n    title: B\n", 3, "title", "appears twice"),
    ("papers: [\n  {title: A\n", 3, None, "not valid YAML"),
    ("papers:\n  - title: A\n    claims:\n      - title: Same\n        text: one\n      - title: Same\n        text: two\n",
     6, "papers[0].claims[1]", "defined twice"),
    ("papers: []\nclaims:\n  - title: Loop\n    supports: ['claim:Loop']\n", 4, "claims[0].supports[0]", "itself"),
    ("papers: []\nmethods:\n  - title: M\n    cites: ['paper:P']\n", 4, "methods[0].cites", "unknown field"),
    ("- just a list\n", 1, None, "papers"),
    ("claims: []\n", 1, "papers", "missing required field 'papers'"),
]


@pytest.mark.parametrize("text, line, field, words", BAD)
def test_bad_yaml_documents_name_file_line_and_field(text, line, field, words):
    with pytest.raises(InvalidDocument) as e:
        parse_text(text, "/docs/bad.yaml")
    err = e.value
    assert err.path == "/docs/bad.yaml" and err.line == line, str(err)
    assert err.field == field, str(err)
    assert words in str(err)
    assert str(err).startswith(f"/docs/bad.yaml:{line}")


def test_json_errors_point_at_the_offending_key():
    text = '{\n  "papers": [\n    {\n      "title": "A",\n      "bogus": 1\n    }\n  ]\n}\n'
    with pytest.raises(InvalidDocument) as e:
        parse_text(text, "/docs/bad.json")
    assert (e.value.line, e.value.field) == (5, "papers[0].bogus")
    missing = '{"papers": [\n {"title": "A"},\n {"year": 2020}\n]}'
    with pytest.raises(InvalidDocument) as e:
        parse_text(missing, "/docs/bad.json")
    assert (e.value.line, e.value.field) == (3, "papers[1].title")
    with pytest.raises(InvalidDocument) as e:
        parse_text('{"papers": [\n  {"title": "A",}\n]}', "/docs/bad.json")
    assert e.value.line == 2 and "not valid JSON" in str(e.value)


def test_the_documented_example_parses(data_dir):
    import re

    doc = (data_dir.parent / "docs" / "document-format.md").read_text()
    example = re.search(r"```yaml\n(.*?)```", doc, re.S).group(1)
    d = parse_text(example, "/docs/example.yaml")
    types = sorted(n.type.value for n in d.delta.nodes)
    assert types == ["claim", "finding", "method", "paper", "question", "question", "topic", "topic"]
    assert set(d.external_refs) == {"paper:toy-models-of-superposition"}  # must be in the store when ingested
    edges = {(e.src.split(":")[0], e.type.value, e.dst.split(":")[0]) for e in d.delta.edges}
    assert ("finding", "supports", "claim") in edges and ("method", "supports", "claim") in edges
    assert ("topic", "in_topic", "topic") in edges and ("paper", "cites", "paper") in edges


def test_committed_json_schema_is_current(data_dir):
    from claimgraph.ingest.structured import schema

    committed = json.loads((data_dir.parent / "docs" / "schema" / "document.schema.json").read_text())
    assert committed == schema(), "regenerate with: python scripts/schema_docs.py"
    assert set(committed["properties"]) == {"papers", "claims", "findings", "methods", "questions", "topics", "edges"}
