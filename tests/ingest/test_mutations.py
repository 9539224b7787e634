"""Property-based mutation of the seeds (and their bundled copies): reordered sections, renamed headings, extra
whitespace, blank lines, wrapped paragraphs and extra sections must not lose anything the original gave — every
node (id, type, title, description), every edge and every stated similarity of the original is still there.

The quick part runs in the default suite; the `slow` part draws ten times as many variants.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from claimgraph.ingest import claim_page, novelty, parse_text, summary

REPO = Path(__file__).resolve().parents[2]
SEEDS = REPO.parent / "shared" / "seeds"
PAPERS = REPO / "data" / "papers"


BIRTH_TITLE = "The Birth of Knowledge: Emergent Features across Time, Space, and Scale in Large Language Models"


def docs(seed_prefixes: list[str], bundled: list[str]) -> list[str]:
    out = [(PAPERS / name).read_text() for name in bundled]
    if SEEDS.is_dir():
        out += [next(SEEDS.glob(p + "_*")).read_text() for p in seed_prefixes]
    return out


NOVELTY = docs(["000", "001"], ["novelty-report-useless-features-next-token-predictors.txt",
                                "novelty-report-transformers-associate-tokens-leading-terms.txt"])
CLAIM_PAGES = docs(["003"], ["claim-page-learned-features-reflect-model-functionality.txt"])
SUMMARIES = docs(["002"], ["summary-birth-of-knowledge-emergent-features.txt"])

QUICK = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
LONG = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def keeps(original, mutated, text: str) -> None:
    """Everything the original parse gave is in the mutated parse."""
    got = {n.id: n for n in mutated.delta.nodes}
    for n in original.delta.nodes:
        assert n.id in got, (n.id, text)
        m = got[n.id]
        assert (m.type, m.title, " ".join(m.text.split())) == (n.type, n.title, " ".join(n.text.split())), (n.id, text)
    edges = {e.key for e in mutated.delta.edges}
    assert {e.key for e in original.delta.edges} <= edges, text
    similar = {(s.node_id, s.other_id, s.other_title, s.score) for s in mutated.delta.similar}
    assert {(s.node_id, s.other_id, s.other_title, s.score) for s in original.delta.similar} <= similar, text


@st.composite
def whitespace(draw, lines: list[str]) -> str:
    """Indentation and trailing spaces on some lines, blank lines between some, and LF or CRLF endings."""
    out = []
    for line in lines:
        if draw(st.integers(0, 5)) == 0:
            out.append(draw(st.sampled_from(["", " ", "\t", "   "])))
        pad = draw(st.sampled_from(["", "", "", " ", "  ", "\t"]))
        out.append(pad + line + draw(st.sampled_from(["", "", " ", "\t", "  "])))
    return draw(st.sampled_from(["\n", "\r\n"])).join(out) + draw(st.sampled_from(["", "\n", "\n\n"]))


# -- novelty reports ---------------------------------------------------------------------------------------
NOVELTY_NAMES = {
    "overview": ["Overview", "Summary", "Novelty Overview", "## Overview", "1. Overview:"],
    "assessment": ["Overall Novelty Assessment", "Novelty assessment", "OVERALL NOVELTY ASSESSMENT"],
    "taxonomy": ["Taxonomy", "Taxonomy placement", "## Taxonomy"],
    "landscape": ["Research Landscape Overview", "Research landscape", "The landscape"],
    "claimed": ["Claimed Contributions", "Stated contributions", "Main Contributions:", "## Claimed contributions"],
    "core": ["Core Task Comparisons", "Core-task comparisons", "**Core Task Comparisons**"],
    "same_category": ["Comparisons with papers in the same taxonomy category", "Papers in the same category",
                      "Same-category papers"],
    "analysis": ["Contribution Analysis", "Analysis by contribution", "Contribution-by-contribution analysis"],
    "detailed": ["Detailed comparisons for each claimed contribution", "Detailed comparisons",
                 "Detailed comparisons for each contribution:"],
}


def blocks(lines: list[str], is_heading) -> tuple[list[str], list[list[str]]]:
    """(lines before the first heading, [heading + its lines, ...])."""
    starts = [i for i, s in enumerate(lines) if s.strip() and is_heading(s)]
    head = lines[:starts[0]]
    return head, [lines[a:b] for a, b in zip(starts, starts[1:] + [len(lines)])]


@st.composite
def novelty_variant(draw, text: str) -> str:
    head, body = blocks(text.split("\n"), novelty._heading)
    body = [list(b) for b in draw(st.permutations(body))]
    for b in body:
        b[0] = draw(st.sampled_from(NOVELTY_NAMES[novelty._heading(b[0]) or ""]))
    if draw(st.booleans()):
        body.insert(draw(st.integers(0, len(body))), ["Notes", "A note someone added to the report."])
    return draw(whitespace(head + [line for b in body for line in b]))


# -- claim pages -------------------------------------------------------------------------------------------
SIMILARITY_NAMES = ["Related by similarity", "Similar entries", "Nearest neighbours", "Semantically related"]


def claim_heading_variants(line: str) -> list[str]:
    h = claim_page.heading(line)
    assert h is not None
    if h.kind == "source":
        return ["Source paper", "Source", "Extracted from", "SOURCE PAPER", "Source paper:"]
    if h.kind == "neighborhood":
        return ["Neighborhood — ranked by edge-count", "Neighbourhood", "Connections", "Graph neighborhood"]
    labels = SIMILARITY_NAMES if h.kind == "similar" else [h.label, h.label.upper(), "Related " + h.label.lower()]
    n = h.count
    return [form.format(label=label, n=n) for label in labels
            for form in ("{label} ({n})", "{label}: {n}", "{n} {label}", "{label} · {n}")]


@st.composite
def claim_page_variant(draw, text: str) -> str:
    lines = text.split("\n")
    head, body = blocks(lines, lambda s: claim_page.heading(s.strip()) is not None)
    id_at = next(i for i, s in enumerate(head) if claim_page.ID_LINE.match(s))
    if draw(st.booleans()):  # type and status in the other order
        head[:id_at] = head[:id_at][::-1]
    body = [list(b) for b in draw(st.permutations(body))]
    for b in body:
        b[0] = draw(st.sampled_from(claim_heading_variants(b[0].strip())))
    if draw(st.booleans()):
        extra = draw(st.sampled_from([["Comments (1)", "A reader's comment on this claim."],
                                      ["Tags (2)", "- dictionary learning", "- features"]]))
        body.insert(draw(st.integers(0, len(body))), extra)
    return draw(whitespace(head + [line for b in body for line in b]))


# -- summaries ---------------------------------------------------------------------------------------------
GENERATED = ["Generated {b} {d:02d}, {y}", "Generated on {B} {d}, {y}", "Generated {y}-{m:02d}-{d:02d}",
             "Summary generated {b} {d}, {y}", "Generated: {d} {B} {y}"]
LEGENDS = ["Current paper (gray), citations (green), references (blue)",
           "Current paper (grey), citations (green) and references (blue)", "current paper (gray), citations (green), references (blue)."]
NO_CITATIONS = ["No citations found for this paper.", "No citations yet.", "No citing papers found."]
PART_LABELS = {0: ["Methodology: ", "Method: ", "Approach: "], 1: ["Significance: ", "Why it matters: ", "Impact: "],
               2: ["Contribution: ", "Key contribution: "], 3: ["Novelty: ", "What's new: "]}


def wrap(draw, paragraph: str) -> list[str]:
    """Hard-wrap a paragraph, breaking only before a lowercase word (as a reader's wrapping reads unambiguously)."""
    words = paragraph.split(" ")
    out, line = [], [words[0]]
    for w in words[1:]:
        if w[:1].islower() and not line[-1].endswith((".", "!", "?", ":")) and len(" ".join(line)) > 30 \
                and draw(st.integers(0, 3)) == 0:
            out.append(" ".join(line))
            line = [w]
        else:
            line.append(w)
    return out + [" ".join(line)]


@st.composite
def summary_variant(draw, text: str) -> str:
    lines = text.split("\n")
    front: list[str] = []
    if lines[0] == "---":
        end = lines.index("---", 1)
        front, lines = lines[:end + 1], lines[end + 1:]
    lines = [s for s in lines if s.strip()]
    gen = next(i for i, s in enumerate(lines) if summary.GENERATED.match(s))
    head, middle_end = lines[:gen], next(i for i, s in enumerate(lines) if i > gen and summary._is_marker(s))
    middle, tail = lines[gen + 1:middle_end], lines[middle_end:]
    if draw(st.booleans()):
        head = ["TL;DR: " + head[0]] + ["Abstract: " + head[1]] + head[2:]
    date = summary._iso_date(summary.GENERATED.match(lines[gen])["date"])
    y, m, d = (int(x) for x in date.split("-"))
    months = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
              "November", "December"]
    generated = draw(st.sampled_from(GENERATED)).format(b=months[m - 1][:3], B=months[m - 1], d=d, m=m, y=y)
    labelled = draw(st.booleans())
    paragraphs = [(PART_LABELS[k][draw(st.integers(0, len(PART_LABELS[k]) - 1))] if labelled else "") + p
                  for k, p in enumerate(middle)]
    paragraphs = draw(st.permutations(paragraphs)) if labelled else paragraphs  # unlabelled: cue words decide
    if not labelled and draw(st.booleans()):
        paragraphs = draw(st.permutations(paragraphs))
    body: list[str] = []
    for p in paragraphs:
        body += wrap(draw, p) if draw(st.booleans()) else [p]
    new_tail = []
    for s in tail:
        if summary.LEGEND.match(s):
            s = draw(st.sampled_from(LEGENDS))
        elif summary.NO_CITATIONS.match(s):
            s = draw(st.sampled_from(NO_CITATIONS))
        elif re.match(r"^Comments \(0\)$", s):
            s = draw(st.sampled_from(["Comments (0)", "Comments: 0", "Comments"]))
        new_tail.append(s)
    if draw(st.booleans()):
        new_tail.append("A reader's comment that is not part of the paper.")
    # YAML front matter keeps its own layout (indentation means something there)
    return "\n".join(front + [draw(whitespace(head + [generated] + body + new_tail))])


KINDS = {  # kind -> (corpus, variant strategy, path, title)
    "novelty": (NOVELTY, novelty_variant, "/r.txt", None),
    "claim-page": (CLAIM_PAGES, claim_page_variant, "/p.txt", None),
    "summary": (SUMMARIES, summary_variant, "/s.txt", BIRTH_TITLE),
}


def check(kind: str, data) -> None:
    corpus, variant_of, path, title = KINDS[kind]
    text = data.draw(st.sampled_from(corpus))
    variant = data.draw(variant_of(text))
    keeps(parse_text(text, path, title=title), parse_text(variant, path, title=title), variant)


@pytest.mark.parametrize("kind", KINDS)
@given(data=st.data())
@QUICK
def test_documents_keep_their_graph_under_mutation(kind, data):
    check(kind, data)


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
@given(data=st.data())
@LONG
def test_documents_keep_their_graph_under_many_mutations(kind, data):
    check(kind, data)


def test_the_mutations_change_the_text():
    """The strategies do mutate: a drawn variant differs from its original (checked on fixed draws)."""
    from hypothesis import Phase, find

    quick = settings(phases=[Phase.generate], database=None, max_examples=20)
    for corpus, strategy, _, _ in KINDS.values():
        for text in corpus:
            variant = find(strategy(text), lambda v, text=text: v.split() != text.split(), settings=quick)
            assert variant.split() != text.split()
