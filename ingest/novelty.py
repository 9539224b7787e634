"""Novelty reports: a paper's claimed contributions compared with candidate prior work.

Layout (by heading, in any order after the title line):

    <paper title>
    Overview / Overall Novelty Assessment   <- prose: taxonomy leaf, counts of candidates examined/refutable
    Taxonomy / Research Landscape Overview
    Claimed Contributions                   <- one description per line
    Core Task Comparisons
    Comparisons with papers in the same taxonomy category
    [n] Candidate title PDF
    Contribution Analysis
    Detailed comparisons for each claimed contribution
    <contribution heading>
    <its description>
    [n] Candidate title PDF ...

Graph: the paper; one claim per contribution (title = heading, text = description) -extracted_from->
paper, with `candidates_examined` / `refutable_candidates` from the overview's prose where stated and
`contribution` (A, B, ...); each candidate a paper with claim -compared_with-> candidate (attrs
`candidate`: its number); same-category papers -in_topic-> the leaf topic and paper -compared_with->
them; the leaf topic (attrs `paper_count`) -in_topic-> its parent topic; paper -in_topic-> leaf.
"""
from __future__ import annotations

import re

from pydantic import BaseModel, Field

from claimgraph.graph.errors import InvalidDocument, InvalidInput
from claimgraph.graph.ids import normalize_text, normalize_title, paper_id
from claimgraph.graph.models import EdgeType, NodeType

from .builder import DeltaBuilder, quote
from .words import NUMBER, clean_title, content_stems, overlap, parse_number, sentences

# Each heading kind and the wordings it is read from (case-insensitive, whole line; markdown marks, numbering
# and a trailing colon are ignored). "extra" sections are kept as text in the paper's attrs.report_sections.
HEADINGS: dict[str, str] = {
    "assessment": r"overall (?:novelty )?assessment|novelty assessment|assessment of novelty|novelty verdict",
    "overview": r"overview|summary|novelty (?:overview|summary)|executive summary|at a glance",
    "landscape": r"research landscape(?: overview)?|(?:the )?landscape|field overview",
    "taxonomy": r"taxonomy(?: placement| position| overview| tree)?|position in the taxonomy",
    "claimed": r"(?:claimed|stated|main|key|listed|the paper'?s) contributions?|contributions?(?: claimed| stated| listed)?"
               r"|what the paper claims",
    "core": r"core[- ]task comparisons?|comparisons? on the core task",
    "same_category": r"(?:comparisons? with )?(?:papers|work|works) in the same (?:taxonomy )?(?:category|leaf|branch)"
                     r"|same[- ](?:category|leaf) (?:papers|comparisons?)|sibling papers",
    "analysis": r"contribution analysis|contribution[- ]by[- ]contribution(?: analysis)?|analysis (?:of|by|per) "
                r"(?:each )?contributions?|per[- ]contribution analysis|contributions? in detail",
    "detailed": r"detailed comparisons?(?: (?:for|of) each (?:claimed )?contribution)?|prior work per contribution",
    "extra": r"limitations?(?: of (?:the|this) (?:search|assessment|analysis))?|search scope|scope of the search|"
             r"notes?|caveats?|references|appendix|methodology(?: of the search)?|discussion|comments?",
}
_HEADING_RX = {k: re.compile(rf"^(?:{v})$", re.I) for k, v in HEADINGS.items()}
_HEADING_NOISE = re.compile(r"^(?:#+\s*|\*\*|(?:\d+|[ivx]+)[.)]\s+)|\*\*$|\s*:$", re.I)
CANDIDATE = re.compile(r"^(?:[-•*]\s*)?(?:\[(?P<n>\d+)\]|\((?P<n2>\d+)\))\s*(?P<title>.*)$")
LIST_MARK = re.compile(r"^(?:[-•*]|\d{1,2}[.)]|\([a-z\d]\))\s+")
INLINE = re.compile(r"^(?P<h>[^.:;\u2014\u2013]{3,140}?)\s*(?::|\s[\u2014\u2013]\s)\s*(?P<d>[A-Z\"'\u201c(].*)$")
CONTRIBUTION_LABEL = re.compile(r"^contribution\s+(?P<letter>[A-Z]|\d+)\s*[:.\u2014\u2013-]\s*", re.I)
SENTENCE_START = re.compile(r"^(?:the authors|we|they|this|these|it|the paper|the work|our)\b", re.I)
TITLE_LABEL = re.compile(r"^(?:title|paper)\s*:\s*", re.I)
_Q = "['\u2018\u2019\"\u201c\u201d]"
LEAF_UNDER = re.compile(rf"in the {_Q}(?P<leaf>[^'\u2018\u2019\"\u201c\u201d]+){_Q} leaf under {_Q}(?P<parent>[^'\u2018\u2019\"\u201c\u201d]+){_Q}", re.I)
LEAF_QUOTED = re.compile(rf"\b(?:resides|sits|is placed|falls) in the {_Q}(?P<leaf>[^'\u2018\u2019\"\u201c\u201d]+){_Q} leaf\b", re.I)
LEAF_PLAIN = re.compile(r"\b(?:resides|sits|is placed|falls) in the (?P<leaf>[A-Z][^.,;'\"]*?) leaf\b")
BRANCH = re.compile(r"within the broader (?P<parent>[A-Z][^.,;'\"]*?) branch\b")
LEAF_COUNT = re.compile(rf"\bcontains (?:only |just )?(?P<n>{NUMBER}) papers?\b", re.I)
TAXONOMY_SIZE = re.compile(rf"\btaxonomy of (?P<papers>{NUMBER}) papers across (?P<leaves>{NUMBER}) leaf", re.I)
# The paper's total, stated at the start of a sentence: "Among twenty-one candidates examined, ...".
TOTAL_EXAMINED = [
    re.compile(rf"^(?:Among|Across|Of|In) (?:the |all )?(?P<e>(?i:{NUMBER})) candidates? (?:were )?examined\b"),
    re.compile(rf"^(?P<e>(?i:{NUMBER})) candidates? (?:were|was) examined\b"),
]
# Count statements: (refutable, examined) in the ways the reports phrase them.
COUNT_PATTERNS = [
    re.compile(rf"\brefuted by (?P<r>{NUMBER}) (?:of|out of) (?:the )?(?P<e>{NUMBER}) candidates?(?: examined)?", re.I),
    re.compile(rf"\b(?P<r>{NUMBER}) refut(?:ations?|able candidates?|ing candidates?) (?:among|out of|of|from|in) "
               rf"(?:the )?(?P<e>{NUMBER}) candidates?(?: examined)?", re.I),
    re.compile(rf"\bexamined (?P<e>{NUMBER}) candidates? (?:with|and) (?P<r>{NUMBER}) (?:refutable|refuting|refutations?)", re.I),
    re.compile(rf"\b(?P<e>{NUMBER}) candidates? examined,? (?:with |and )?(?P<r>{NUMBER}) (?:refutable|refuting|refutations?)", re.I),
    re.compile(rf"\b(?P<r>{NUMBER}) of (?:the )?(?P<e>{NUMBER}) candidates? examined (?:could|can|may|might|would|did) refute", re.I),
]
# "..., as was <another contribution>" / "..., and the same holds for <another contribution>"
AS_WAS = re.compile(r"^\s*(?:it|them|this|these)?\s*,?\s*(?:as (?:was|were|did|is|are)|(?:and )?the same (?:holds|goes|is true) for) (?P<subject>[^.;]+)")
LETTER = re.compile(r"\bContribution (?P<letter>[A-Z])\b")


class Contribution(BaseModel):
    """One claimed contribution as the report's analysis section gives it."""

    heading: str | None = None
    description: str = ""
    line: int | None = None
    candidates: list[tuple[int, str, int]] = Field(default_factory=list)  # (number, cleaned title, line)
    examined: int | None = None
    refutable: int | None = None


def _heading(s: str) -> str | None:
    t = re.sub(r"\s+", " ", s).strip()
    if len(t.split()) > 10:
        return None
    t = _HEADING_NOISE.sub("", _HEADING_NOISE.sub("", t)).strip()
    return next((k for k, rx in _HEADING_RX.items() if rx.match(t)), None)


def _candidate(s: str, no: int, path: str) -> tuple[int, str, int] | None:
    m = CANDIDATE.match(s)
    if not m:
        return None
    n = m["n"] or m["n2"]
    title = clean_title(re.sub(r"\s*\[PDF\]\s*$|\s*\((?:19|20)\d{2}\)\s*$", "", m["title"]))
    if not re.search(r"[^\W_]", title):
        raise InvalidDocument(f"candidate [{n}] has no title", path=path, line=no)
    return int(n), title, no


def _same_text(a: str, b: str) -> bool:
    if normalize_text(a) == normalize_text(b):
        return True
    sa, sb = content_stems(a), content_stems(b)
    return bool(sa and sb) and len(sa & sb) / len(sa | sb) >= 0.6


def _looks_like_description(s: str, claimed: list[str]) -> bool:
    """A claimed contribution's description, or prose: a sentence of 8+ words (headings are short, unpunctuated)."""
    if any(_same_text(s, c) for c in claimed):
        return True
    return s.rstrip().endswith((".", "!", "?")) and len(s.split()) >= 8


def parse_novelty(lines: list[tuple[int, str]], path: str) -> tuple[DeltaBuilder, str]:
    """Parse a novelty report's numbered, non-blank lines; returns the builder and the paper title."""
    b = DeltaBuilder(path)
    first_heading = next((i for i, (_, s) in enumerate(lines) if _heading(s)), None)
    if first_heading is None:
        raise InvalidDocument("no report headings found (Overview, Claimed Contributions, Contribution Analysis)",
                              path=path, line=lines[0][0] if lines else None)
    if first_heading == 0:
        raise InvalidDocument("the first line should be the paper's title, not a heading", path=path, line=lines[0][0])
    title_no = lines[0][0]
    title = TITLE_LABEL.sub("", " ".join(s for _, s in lines[:first_heading]))  # a long title may wrap
    sections: dict[str, list[tuple[int, str]]] = {}
    extra: dict[str, list[str]] = {}
    current = extra_label = None
    for no, s in lines[first_heading:]:
        h = _heading(s)
        if h == "extra":
            extra_label = _HEADING_NOISE.sub("", s.strip()).strip()
            extra.setdefault(extra_label, [])
            b.warn(f"section {quote(extra_label)} is not one novelty reports are read for; its lines are kept in "
                   "the paper's attrs.report_sections", no)
            current = h
        elif h:
            current = h
            sections.setdefault(h, [])
        elif current == "extra":
            assert extra_label is not None
            extra[extra_label].append(s)
        else:
            assert current is not None, "the lines after the title start with a heading"
            sections[current].append((no, s))

    overview = [s for _, s in sections.get("assessment", []) + sections.get("overview", [])]
    prose = " ".join(overview + [s for k in ("taxonomy", "landscape") for _, s in sections.get(k, [])
                                 if not CANDIDATE.match(s)])
    claimed = _claimed(sections.get("claimed", []), b)
    contributions = _contributions(sections.get("detailed", []) + sections.get("analysis", []),
                                   [c.description for c in claimed], path)
    if claimed and len(claimed) == len(contributions):  # one analysis block per claimed contribution, in order
        for c, stated in zip(contributions, claimed):
            c.description = c.description or stated.description
            c.heading = c.heading or stated.heading
            c.line = c.line or stated.line
    else:  # claimed contributions the analysis does not cover still become claims
        if claimed and contributions:
            b.warn(f"the report claims {len(claimed)} contributions but analyses {len(contributions)}; claimed ones "
                   "matched by their wording, the rest added as they are", claimed[0].line)
        for stated in claimed:
            if not any(_same_text(stated.description, c.description)
                       or (stated.heading and c.heading and _same_text(stated.heading, c.heading))
                       for c in contributions):
                contributions.append(stated)
    if not contributions:
        raise InvalidDocument("the report states no contributions (sections 'Claimed Contributions' and "
                              "'Contribution Analysis' are empty or missing)", path=path, line=title_no)
    total = _apply_counts(prose, contributions)

    try:
        pid = paper_id(title=title)
    except InvalidInput as e:
        raise InvalidDocument(str(e), path=path, line=title_no) from None
    paper_attrs: dict = {"title_norm": normalize_title(title), "title_known": True, "candidates_examined": total}
    if overview:
        paper_attrs["novelty_overview"] = "\n\n".join(overview)
    if extra:
        paper_attrs["report_sections"] = extra
    size = TAXONOMY_SIZE.search(prose)
    if size:
        paper_attrs["taxonomy_papers"] = parse_number(size["papers"])
        paper_attrs["taxonomy_leaves"] = parse_number(size["leaves"])
    b.node(NodeType.paper, title, "", paper_attrs, id=pid, line=title_no)

    leaf = _taxonomy(b, prose, title_no)
    if leaf:
        b.edge(pid, EdgeType.in_topic, leaf, line=title_no)

    for key in ("same_category", "core", "taxonomy", "landscape"):
        for n, ctitle, no in [cand for no, s in sections.get(key, []) if (cand := _candidate(s, no, path))]:
            cid = _candidate_paper(b, ctitle, no)
            if cid == pid:
                continue
            same = key == "same_category"
            b.edge(pid, EdgeType.compared_with, cid, {"candidate": n, "same_category": True} if same
                   else {"candidate": n}, line=no)
            if leaf and same:
                b.edge(cid, EdgeType.in_topic, leaf, line=no)

    for k, c in enumerate(contributions):
        heading = c.heading or _short_title(c.description)
        attrs = {"contribution": chr(ord("A") + k) if k < 26 else str(k + 1),
                 "candidates_examined": c.examined, "refutable_candidates": c.refutable,
                 "candidates_listed": len(c.candidates)}
        claim = b.node(NodeType.claim, heading, c.description, attrs, line=c.line or title_no)
        b.edge(claim, EdgeType.extracted_from, pid, line=c.line or title_no)
        for n, ctitle, no in c.candidates:
            cid = _candidate_paper(b, ctitle, no)
            b.edge(claim, EdgeType.compared_with, cid, {"candidate": n}, line=no)
    return b, title


def _candidate_paper(b: DeltaBuilder, title: str, no: int) -> str:
    try:
        pid = paper_id(title=title)
    except InvalidInput as e:
        raise b.fail(str(e), no) from None
    return b.node(NodeType.paper, title, "", {"title_norm": normalize_title(title), "title_known": True}, id=pid, line=no)


def _short_title(description: str) -> str:
    first = (sentences(description) or [description])[0]
    words = first.split()
    return " ".join(words[:20]) + ("..." if len(words) > 20 else "")


def _split_inline(s: str) -> tuple[str | None, str]:
    """`Heading: description` or `Heading — description` -> (heading, description); else (None, s)."""
    s = CONTRIBUTION_LABEL.sub("", LIST_MARK.sub("", s)).strip()
    m = INLINE.match(s)
    if m and len(m["h"].split()) <= 14 and len(m["d"].split()) >= 6 and not SENTENCE_START.match(m["h"]):
        return m["h"].strip(), m["d"].strip()
    return None, s


def _claimed(lines: list[tuple[int, str]], b: DeltaBuilder) -> list[Contribution]:
    """The 'Claimed Contributions' section: one description per line, each perhaps with a heading."""
    out: list[Contribution] = []
    pending: tuple[int, str] | None = None  # a heading on a line of its own, waiting for its description
    for no, raw in lines:
        heading, desc = _split_inline(raw)
        if heading is None and not _looks_like_description(desc, []):
            if pending is not None:
                b.warn(f"{quote(pending[1])} in the claimed contributions has no description; read as one on its "
                       "own", pending[0])
                out.append(Contribution(heading=pending[1], description="", line=pending[0]))
            pending = (no, desc)
            continue
        if pending is not None:
            heading, no = pending[1], pending[0]
            pending = None
        out.append(Contribution(heading=heading, description=desc, line=no))
    if pending is not None:
        out.append(Contribution(heading=pending[1], description="", line=pending[0]))
    return out


def _contributions(lines: list[tuple[int, str]], claimed: list[str], path: str) -> list[Contribution]:
    """Headings, descriptions and candidate lists of the analysis section, in order."""
    out: list[Contribution] = []
    for no, raw in lines:
        cand = _candidate(raw, no, path)
        if cand:
            if not out:
                raise InvalidDocument("a candidate line comes before any contribution heading", path=path, line=no)
            out[-1].candidates.append(cand)
            continue
        heading, s = _split_inline(raw)
        if heading is not None:
            out.append(Contribution(heading=heading, description=s, line=no))
            continue
        current = out[-1] if out else None
        if _looks_like_description(s, claimed):
            if current is None or current.description or current.candidates:
                out.append(Contribution(heading=None, description=s, line=no))
            else:
                current.description = s
        else:
            out.append(Contribution(heading=s, line=no))
    return out


def _taxonomy(b: DeltaBuilder, prose: str, line: int) -> str | None:
    """The leaf topic the overview places the paper in (with its paper count and parent), or None."""
    for sent in sentences(prose):
        m = LEAF_UNDER.search(sent) or LEAF_QUOTED.search(sent) or LEAF_PLAIN.search(sent)
        if not m:
            continue
        leaf_title = m["leaf"].strip()
        count = LEAF_COUNT.search(sent[m.end():])
        leaf = b.node(NodeType.topic, leaf_title, "",
                      {"paper_count": parse_number(count["n"]) if count else None, "taxonomy_level": "leaf"}, line=line)
        branch = BRANCH.search(sent)
        parent = m.groupdict().get("parent") or (branch["parent"] if branch else None)
        if parent and parent.strip().casefold() != leaf_title.casefold():
            pid = b.node(NodeType.topic, parent.strip(), "", line=line)
            b.edge(leaf, EdgeType.in_topic, pid, line=line)
        return leaf
    return None


def _apply_counts(prose: str, contributions: list[Contribution]) -> int | None:
    """Read '(refutable of) examined' statements from the overview onto the contributions; returns the total."""
    total = None
    headings = [c.heading or c.description for c in contributions]
    for sent in sentences(prose):
        for rx in TOTAL_EXAMINED:
            if total is None and (tm := rx.match(sent)):
                total = parse_number(tm["e"])
        hits = sorted((m for p in COUNT_PATTERNS for m in p.finditer(sent)), key=lambda m: m.start())
        end = 0
        for m in hits:
            if m.start() < end:
                continue
            r, e = parse_number(m["r"]), parse_number(m["e"])
            clause_start = max(end, sent.rfind(";", 0, m.start()) + 1)
            subjects = [sent[clause_start:m.start()]]
            end = m.end()
            more = AS_WAS.match(sent[end:])
            if more:
                subjects.append(more["subject"])
                end += more.end()
            for subject in subjects:
                k = _which(subject, headings)
                if k is not None and r is not None and e is not None:
                    contributions[k].refutable, contributions[k].examined = r, e
    return total


def _which(subject: str, headings: list[str]) -> int | None:
    """The contribution a clause is about: by letter ('Contribution B'), else by clearly best word overlap."""
    m = LETTER.search(subject)
    if m:
        k = ord(m["letter"]) - ord("A")
        return k if k < len(headings) else None
    scores = [overlap(subject, h) for h in headings]
    if not scores:
        return None
    best = max(scores)
    if best >= 2 and scores.count(best) == 1:
        return scores.index(best)
    return None
