"""Real documents vary: the parsers read structure and vocabulary, so reordered, reflowed or relabelled
variants of the seeds give the same graph."""
from __future__ import annotations

import re

from claimgraph.graph.ids import make_id
from claimgraph.ingest import parse_text


def graph(d):
    return ({n.id: (n.title, n.text, n.attrs) for n in d.delta.nodes},
            {e.key: e.attrs for e in d.delta.edges},
            [(s.other_id, s.other_title, s.score) for s in d.delta.similar])


def sections(text: str, headings: list[str]) -> dict[str, str]:
    """Split a report into {heading: block} at the given heading lines (the title is under '')."""
    out, key = {"": ""}, ""
    for line in text.split("\n"):
        if line.strip() in headings:
            key = line.strip()
            out[key] = ""
        out[key] += line + "\n"
    return out


def test_novelty_sections_in_another_order_with_crlf_and_blank_lines(seed):
    text = seed("000").read_text()
    base = parse_text(text, "/r.txt")
    heads = ["Overview", "Taxonomy", "Core Task Comparisons", "Contribution Analysis"]
    parts = sections(text, heads)
    reordered = (parts[""] + parts["Contribution Analysis"].rstrip("\n") + "\n\n" + parts["Overview"]
                 + parts["Core Task Comparisons"] + "\n" + parts["Taxonomy"])
    variant = parse_text(reordered.replace("\n", "\r\n"), "/r.txt")
    assert graph(variant)[0].keys() == graph(base)[0].keys()
    assert graph(variant) == graph(base)


def test_novelty_analysis_descriptions_reworded(seed):
    """The analysis repeats each description in other words: contributions still pair heading and text."""
    text = seed("001").read_text()
    claimed, analysis = text.split("Contribution Analysis")
    analysis = analysis.replace("The authors develop closed-form expressions", "Closed-form expressions are derived")
    analysis = analysis.replace("The authors identify three interpretable", "They find three interpretable")
    d = parse_text(claimed + "Contribution Analysis" + analysis, "/r.txt")
    claims = [n for n in d.delta.nodes if n.type.value == "claim"]
    assert [c.title for c in claims] == ["Closed-form weight characterizations via gradient leading terms",
                                         "Three basis functions for semantic associations",
                                         "Empirical validation on self-attention models and practical LLMs"]
    assert claims[0].text.startswith("Closed-form expressions are derived")
    assert [c.attrs["candidates_examined"] for c in claims] == [8, 5, 10]


def test_claim_page_with_title_on_its_own_line_and_wrapped_items(seed):
    text = seed("003").read_text()
    base = parse_text(text, "/p.txt")
    slug = "learned-features-reflect-the-functionality-of-the-model-and-not-just-the-data-distribution-as-evidenced-" \
           "by-interpretable-downstream-effects-not-used-in-dictionary-learning"
    variant = text.replace(f"claim:{slug}Learned", f"claim:{slug}\nLearned")
    variant = variant.replace("through MLP output weights and unembedding matrix",
                              "through MLP output weights\n  and unembedding matrix")
    assert graph(parse_text(variant, "/p.txt")) == graph(base)


def test_claim_page_of_a_finding_with_other_sections(seed):
    page = ("finding\nactive\nfinding:probe-accuracy-is-highProbe accuracy is high\nProbes reach 90%.\n"
            "Source paper\nextracted_from(2023) · Ada Lovelace\n"
            "Claims (1)\nclaim\n- Probes find featuressupportsThey do.\n"
            "Questions (1)\nquestion\n- Are probes causal?addressesOpen.\n")
    d = parse_text(page, "/p.txt")
    f = make_id("finding", "Probe accuracy is high")
    assert {e.key for e in d.delta.edges} == {
        (f, "extracted_from", "paper:lovelace-2023"),
        (make_id("claim", "Probes find features"), "supports", f),  # item -edge-> page, as the page states it
        (f, "addresses", make_id("question", "Are probes causal?")),  # a question addresses nothing: reversed
    }
    paper = next(n for n in d.delta.nodes if n.type.value == "paper")
    assert paper.title == "Ada Lovelace (2023)" and paper.attrs["et_al"] is False


def test_summary_with_labels_and_without_citations_note(seed, birth_title):
    text = seed("002").read_text()
    labelled = "TL;DR: " + text.replace("\nThis paper studies", "\nAbstract\nThis paper studies", 1)
    labelled = labelled.replace("No citations found for this paper.\n", "")
    d = parse_text(labelled, "/s.txt", title=birth_title)
    paper = next(n for n in d.delta.nodes if n.title == birth_title)
    assert paper.attrs["tldr"].startswith("Large language models exhibit") and paper.text.startswith("This paper")
    # Without the page's "no citations" note, citing and cited works cannot be told apart.
    assert [e["relation"] for e in paper.attrs["related_works"]] == ["citation or reference"] * 5
    assert sum(n.type.value == "finding" for n in d.delta.nodes) == 2


def test_number_words_and_letters_in_refutation_counts():
    report = "\n".join([
        "A Paper", "Overview", "Overall Novelty Assessment",
        "Among twenty-nine candidates examined, little overlaps. Contribution B (second idea) examined "
        "seventeen candidates with three refutable; the first idea about sparse probes was refuted by two of "
        "twelve candidates examined.",
        "Contribution Analysis", "First idea about sparse probes", "A long description of the first idea here.",
        "[1] Some Prior Work PDF", "Second idea", "Another long description of the second idea here.",
    ])
    d = parse_text(report, "/r.txt", format="novelty")
    claims = {n.title: n.attrs for n in d.delta.nodes if n.type.value == "claim"}
    assert claims["First idea about sparse probes"]["candidates_examined"] == 12
    assert claims["First idea about sparse probes"]["refutable_candidates"] == 2
    assert claims["Second idea"]["candidates_examined"] == 17 and claims["Second idea"]["refutable_candidates"] == 3
    paper = next(n for n in d.delta.nodes if n.type.value == "paper")
    assert paper.attrs["candidates_examined"] == 29
    assert not re.search(r"\bPDF\b", " ".join(n.title for n in d.delta.nodes))
