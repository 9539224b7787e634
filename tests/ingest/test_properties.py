"""Property-based tests: the structured format round-trips, and no input makes a parser fail other than
with InvalidDocument (random lines, truncated and shuffled documents, random bytes)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from claimgraph.graph import InvalidDocument
from claimgraph.graph.ids import parse_id
from claimgraph.graph.models import EdgeType
from claimgraph.ingest import FORMATS, parse_text
from claimgraph.ingest.builder import edge_allowed
from claimgraph.ingest.source import decode_source
from claimgraph.ingest.structured import (
    EdgeEntry,
    ItemEntry,
    PaperEntry,
    StructuredDocument,
    TopicEntry,
    document_delta,
    dump_document,
)

REPO = Path(__file__).resolve().parents[2]
SEEDS = REPO.parent / "shared" / "seeds"
CORPUS = [p.read_text() for p in sorted((REPO / "data" / "papers").iterdir())]
CORPUS += [p.read_text() for p in sorted(SEEDS.glob("*.txt"))] if SEEDS.is_dir() else []
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# -- round trip -------------------------------------------------------------------------------------------
chars = st.characters(codec="utf-8", categories=("L", "N", "P", "S", "Zs"))
words = st.text(alphabet=chars, min_size=1, max_size=30).filter(lambda s: s.strip())
attrs = st.dictionaries(st.text(alphabet="abcdefgh_", min_size=1, max_size=6),
                        st.one_of(st.integers(-5, 5), st.booleans(), st.text(alphabet=chars, max_size=8)), max_size=2)


@st.composite
def documents(draw) -> StructuredDocument:
    papers = []
    for _ in range(draw(st.integers(0, 2))):
        claims = [ItemEntry(title=t, text=draw(st.text(alphabet=chars, max_size=20)), attrs=draw(attrs))
                  for t in draw(st.lists(words, max_size=3, unique_by=str.casefold))]
        claim_refs = [f"claim:{c.title}" for c in claims]
        findings = [ItemEntry(title=t, supports=draw(st.lists(st.sampled_from(claim_refs), max_size=2, unique=True))
                              if claim_refs else [])
                    for t in draw(st.lists(words, max_size=3, unique_by=str.casefold))]
        methods = [ItemEntry(title=t) for t in draw(st.lists(words, max_size=2, unique_by=str.casefold))]
        papers.append(PaperEntry(
            title=draw(words), year=draw(st.none() | st.integers(1900, 2100)),
            doi=draw(st.none() | st.from_regex(r"10\.[0-9]{4}/[a-z0-9.]{1,8}", fullmatch=True)),
            authors=draw(st.lists(words, max_size=3)), et_al=draw(st.booleans()),
            abstract=draw(st.text(alphabet=chars, max_size=40)), attrs=draw(attrs),
            claims=claims, findings=findings, methods=methods,
            topics=[TopicEntry(title=t) for t in draw(st.lists(words, max_size=2, unique_by=str.casefold))]))
    items = [f"claim:{c.title}" for p in papers for c in p.claims] + [f"method:{m.title}" for p in papers for m in p.methods]
    edges = []
    if len(items) >= 2:
        for _ in range(draw(st.integers(0, 3))):
            src, dst = draw(st.permutations(items))[:2]  # two different refs (they may still name one node)
            edges.append(EdgeEntry(src=src, type=EdgeType.associated_with, dst=dst, attrs=draw(attrs)))
    questions = [ItemEntry(title=t, addresses=[]) for t in draw(st.lists(words, max_size=2, unique_by=str.casefold))]
    return StructuredDocument(papers=papers, questions=questions, edges=edges)


def outcome(fn):
    try:
        return "ok", fn()
    except InvalidDocument as e:  # the same document must fail the same way whichever way it arrives
        return "error", e.field, re.sub(r" \(first at line \d+\)", "", e.bare_message)


@given(doc=documents(), fmt=st.sampled_from(["yaml", "json"]))
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_structured_round_trip(doc, fmt):
    path = f"/docs/doc.{fmt}"
    direct = outcome(lambda: document_delta(doc, path)[0].build())
    text = dump_document(doc, fmt)
    parsed = outcome(lambda: parse_text(text, path).delta)
    event(direct[0])
    assert parsed == direct, text


# -- fuzzing ----------------------------------------------------------------------------------------------
LANDMARKS = ["claim", "active", "finding", "Source paper", "extracted_from(2024) · A B · C D +1",
             "Neighborhood — ranked by edge-count", "Findings (3)", "Methods (2)", "Related by similarity (8)",
             "cosine ≥ 0.65 · no typed edgeWhatever", "- Titlesupports", "- TitleassociatedwithX",
             "- A question?question0.794Desc", "- x finding1.5y", "claim:ab-cdAb Cd", "claim:",
             "Overview", "Overall Novelty Assessment", "Claimed Contributions", "Contribution Analysis",
             "Comparisons with papers in the same taxonomy category", "[1] A Title PDF", "[2]", "[x] y",
             "It resides in the Foo leaf, which contains twenty-nine papers total.",
             "Among one candidates examined; Contribution Z examined 3 candidates with 9 refutable.",
             "Generated Jun 07, 2025", "Generated Feb 30, 2025", "No key terms available for this paper.",
             "Current paper (gray), citations (green), references (blue)", "A B, C D et al.",
             "No citations found for this paper.", "Comments (0)", "---", "title: X", "papers:", "  - title: A",
             "{", '"papers": [', "]", "- ", "Key terms: a, b"]
all_lines = [line for doc in CORPUS for line in doc.split("\n")]
line = st.one_of(st.sampled_from(LANDMARKS), st.sampled_from(all_lines), st.text(max_size=60))


def check(text: str) -> None:
    """Every format, forced or detected: a delta that holds together, or InvalidDocument."""
    for fmt in ("auto",) + FORMATS:
        try:
            d = parse_text(text, "/fuzz.txt", format=fmt, title="A Title")
        except InvalidDocument as e:
            assert e.path == "/fuzz.txt"
            continue
        event(f"parsed as {d.ref.format}")
        ids = {n.id for n in d.delta.nodes}
        assert len(ids) == len(d.delta.nodes)
        for n in d.delta.nodes:
            assert parse_id(n.id)[0] == n.type and n.title.strip()
        for e in d.delta.edges:
            assert e.src != e.dst
            assert edge_allowed(e.type, parse_id(e.src)[0], parse_id(e.dst)[0])
            for end in (e.src, e.dst):
                assert end in ids or end in d.external_refs
        for s in d.delta.similar:
            assert s.node_id in ids and (s.other_id is None or s.other_id in ids)


@given(st.lists(line, min_size=1, max_size=25))
@FUZZ
def test_random_lines_never_crash_a_parser(lines):
    check("\n".join(lines))


@given(st.sampled_from(range(len(CORPUS))), st.data())
@FUZZ
def test_truncated_documents_never_crash_a_parser(k, data):
    text = CORPUS[k]
    cut = data.draw(st.integers(0, len(text)))
    check(text[:cut])


@given(st.sampled_from(range(len(CORPUS))), st.randoms(use_true_random=False))
@FUZZ
def test_shuffled_documents_never_crash_a_parser(k, rnd):
    lines = CORPUS[k].split("\n")
    rnd.shuffle(lines)
    check("\n".join(lines))


@given(st.binary(max_size=300))
@FUZZ
def test_random_bytes_are_refused_or_read(data):
    try:
        src = decode_source(data, "/fuzz.bin")
    except InvalidDocument as e:
        assert e.path == "/fuzz.bin"
        return
    check(src.text)


def test_corpus_is_there():
    assert len(CORPUS) >= 6, "the bundled documents are the fuzzing corpus"
    if not SEEDS.is_dir():
        pytest.skip("seeds not found: fuzzing used the bundled documents only")
