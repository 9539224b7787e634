"""The bundled documents in data/papers ingest together, link the papers, and share the seeds' node ids."""
from __future__ import annotations

import pytest

from claimgraph.graph.ids import make_id, paper_id
from claimgraph.ingest import ingest_paths, parse_document

BUNDLED = {
    "000": "novelty-report-useless-features-next-token-predictors.txt",
    "001": "novelty-report-transformers-associate-tokens-leading-terms.txt",
    "002": "summary-birth-of-knowledge-emergent-features.txt",
    "003": "claim-page-learned-features-reflect-model-functionality.txt",
}
MONOSEMANTICITY = "Towards Monosemanticity: Decomposing Language Models With Dictionary Learning"
CLAIM = ("claim:learned-features-reflect-the-functionality-of-the-model-and-not-just-the-data-distribution-as-"
         "evidenced-by-interpretable-downstream-effects-not-used-in-dictionary-learning")


@pytest.fixture
def papers_dir(data_dir):
    return data_dir / "papers"


def test_bundled_documents_ingest_in_one_command(store, papers_dir):
    reports = ingest_paths(store, [papers_dir], embed=False)
    by_name = {r.path.rsplit("/", 1)[-1]: r for r in reports}
    assert set(by_name) == set(BUNDLED.values()) | {"towards-monosemanticity-bricken-2023.yaml",
                                                    "cross-paper-links-feature-emergence.json"}
    assert {r.format for r in reports} == {"novelty", "summary", "claim-page", "structured"}
    # The JSON links claims of both novelty reports, so it is applied after them.
    order = [r.path.rsplit("/", 1)[-1] for r in reports]
    assert order.index("cross-paper-links-feature-emergence.json") > max(order.index(BUNDLED["000"]),
                                                                           order.index(BUNDLED["001"]))

    mono = paper_id(title=MONOSEMANTICITY)
    assert store.get_node(mono).attrs["year"] == 2023
    # The claim page's claim, findings and methods are the ones the hand-written YAML attributes to the paper.
    edges = {(e.src, e.type.value, e.dst) for e in store.edges()}
    assert (CLAIM, "extracted_from", mono) in edges and (CLAIM, "extracted_from", "paper:carauleanu-2024") in edges
    for finding in ("Causal validation of base64 feature function via pinned feature sampling",
                    "Causal validation that the Arabic feature has the predicted downstream effect on generation"):
        fid = make_id("finding", finding)
        assert {(fid, "supports", CLAIM), (fid, "associated_with", CLAIM), (fid, "extracted_from", mono)} <= edges
    # One sparse-autoencoder method shared by two papers.
    birth = [n for n in store.list_nodes("paper") if n.title.startswith("The Birth of Knowledge")]
    assert len(birth) == 1 and birth[0].attrs["arxiv"] == "2505.19440"
    assert (birth[0].id, "uses_method", "method:sparse-autoencoders") in edges
    assert ("method:sparse-autoencoders", "extracted_from", mono) in edges
    question = make_id("question", "How does the training gradient decide which features a transformer learns, and when?")
    assert {src for src, t, dst in edges if dst == question and t == "addresses"} == {
        birth[0].id, make_id("claim", "Closed-form weight characterizations via gradient leading terms"),
        make_id("claim", "Decomposition of gradient signal into direct learning, pre-caching, and circuit sharing")}
    # Taxonomy: one 'Mechanistic Interpretability' topic joins the novelty report's leaf and the YAML's topic.
    mi = make_id("topic", "Mechanistic Interpretability")
    assert {src for src, t, dst in edges if dst == mi} == {make_id("topic", "Sparse dictionary learning"),
                                                             make_id("topic", "Feature Emergence and Development Dynamics")}
    again = ingest_paths(store, [papers_dir], embed=False)
    assert all(r.unchanged for r in again)


@pytest.mark.parametrize("prefix", ["000", "001", "003"])
def test_bundled_page_has_the_seeds_ids_and_edges_in_other_words(papers_dir, seed, prefix):
    ours, theirs = parse_document(papers_dir / BUNDLED[prefix]), parse_document(seed(prefix))
    assert ours.ref.format == theirs.ref.format
    assert [n.id for n in ours.delta.nodes] == [n.id for n in theirs.delta.nodes]
    assert [(e.key, e.attrs) for e in ours.delta.edges] == [(e.key, e.attrs) for e in theirs.delta.edges]
    assert [(s.other_id, s.score) for s in ours.delta.similar] == [(s.other_id, s.score) for s in theirs.delta.similar]
    counts = lambda d: {n.id: {k: v for k, v in n.attrs.items() if k != "novelty_overview"} for n in d.delta.nodes}
    assert counts(ours) == counts(theirs)  # candidates examined/refutable, leaf counts, page counts, authors
    described = [(a.text, b.text) for a, b in zip(ours.delta.nodes, theirs.delta.nodes) if b.text]
    assert described and all(a != b for a, b in described), "descriptions are paraphrased, not copied"


def test_bundled_summary_matches_the_seed_paper_method_and_related_works(papers_dir, seed, birth_title):
    ours = parse_document(papers_dir / BUNDLED["002"])  # title from its front matter
    theirs = parse_document(seed("002"), title=birth_title)
    ids = lambda d, t: {n.id for n in d.delta.nodes if n.type.value == t}
    assert ids(ours, "paper") == ids(theirs, "paper")
    # The named technique is shared; each page's methodology node is named from its own main clause.
    techniques = lambda d: {n.id for n in d.delta.nodes if n.type.value == "method" and "kind" not in n.attrs}
    assert techniques(ours) == techniques(theirs) == {"method:sparse-autoencoders"}
    assert [n.title for n in ours.delta.nodes if n.attrs.get("kind") == "methodology"] == [
        "Using sparse autoencoders for mechanistic interpretability"]
    related = lambda d: [(e["authors"], e["et_al"], e["relation"]) for e in d.delta.nodes[0].attrs["related_works"]]
    assert related(ours) == related(theirs) and len(related(ours)) == 5
    assert len(ids(ours, "claim")) == len(ids(theirs, "claim")) == 3
    assert len(ids(ours, "finding")) == len(ids(theirs, "finding")) == 2
    assert sorted(e.type.value for e in ours.delta.edges) == sorted(e.type.value for e in theirs.delta.edges)
    paper = next(n for n in ours.delta.nodes if n.id == paper_id(title=birth_title))
    assert paper.attrs["authors"] == ["Shashata Sawmya", "Micah Adler", "Nir Shavit"] and paper.attrs["year"] == 2025
