"""Paper summaries: a generated summary page with no title of its own.

    <TL;DR>                                 <- one or two sentences: the paper's main claims
    <abstract>
    Generated Jun 07, 2025
    <methodology> <significance> <contribution> <novelty>   <- one paragraph each
    No key terms available for this paper.
    Current paper (gray), citations (green), references (blue)
    A, B, C et al.                          <- related works, as author lists
    No citations found for this paper.
    Comments (0)

The title comes from the caller (`--title`) or a front matter block (`---` / `title: ...` / `---`).

Graph and decisions:
- the paper: text = abstract; attrs tldr, generated (ISO date), methodology, significance, novelty;
- one claim per TL;DR sentence (attrs kind "tldr") -extracted_from-> paper;
- the contribution statement is a claim too (attrs kind "contribution"): it says what the paper puts
  forward, as novelty reports' contributions do; significance and novelty are judgements about the
  paper, not claims to test, so they stay in the paper's attrs;
- findings: abstract sentences that report a result ("Results indicate ...", "... reveals ...")
  -extracted_from-> paper; a finding -supports-> a TL;DR claim when they clearly share words: at least
  3 content stems in common (stop words and generic words such as 'feature' or 'model' dropped) making
  up at least a quarter of the finding's content stems; the edge lists the shared stems;
- methods named in the methodology ("employs sparse autoencoders for ...") with paper -uses_method-> method;
- related works, titled by their author lists (title_known False, authors, et_al).
"""
from __future__ import annotations

import re
from datetime import datetime

from claimgraph.graph.errors import InvalidDocument, InvalidInput
from claimgraph.graph.ids import normalize_title, paper_id
from claimgraph.graph.models import EdgeType, NodeType

from .builder import DeltaBuilder
from .words import content_stems, parse_author_list, sentences

GENERATED = re.compile(r"^Generated(?: on)?\s+(?P<date>[A-Z][a-z]{2,8}\.? \d{1,2},? \d{4}|\d{4}-\d{2}-\d{2})\.?$")
LEGEND = re.compile(r"^Current paper \(\w+\),? citations \(\w+\),? (?:and )?references \(\w+\)\.?$", re.I)
NO_KEY_TERMS = re.compile(r"^No key terms\b", re.I)
KEY_TERMS = re.compile(r"^Key terms\s*:?\s*(?P<terms>.*)$", re.I)
NO_CITATIONS = re.compile(r"^No citations found\b", re.I)
COMMENTS = re.compile(r"^Comments\s*\((?P<n>\d+)\)$", re.I)
TLDR_LABEL = re.compile(r"^(?:TL;?DR|Abstract)\s*:?\s*", re.I)
RESULT = re.compile(r"\b(?:results? (?:indicate|show|suggest|reveal|demonstrate|confirm)s?|reveals?|revealed|"
                    r"we (?:find|found|show|observe|demonstrate)|finds? that|shows? that|demonstrates? that|"
                    r"indicates? that|uncovers?)\b", re.I)
METHOD_CUE = re.compile(r"\b(?:employs?|employing|uses?|using|utili[sz](?:es?|ing)|appl(?:ies|ying)|"
                        r"leverag(?:es?|ing)|adopts?|adopting)\s+(?P<m>.+?)"
                        r"(?=\s+(?:for|to|in order|on|with|in|across|that|which|as|via|from)\b|[,.;:()]|$)", re.I)

# Where each middle paragraph belongs, by the first cue word in it; order is the page's own order.
PARTS = ("methodology", "significance", "contribution", "novelty")
CUES = {
    "methodology": re.compile(r"\b(?:employ|uses?\b|using|utili[sz]|analy[sz]|methodolog|conduct|appl)", re.I),
    "significance": re.compile(r"\b(?:important|significan|matters?\b|impact|implication|insight)", re.I),
    "contribution": re.compile(r"\b(?:introduc|propos|present|contribut|develop)", re.I),
    "novelty": re.compile(r"\b(?:distinguish|novel|unlike|differ|first to|unique)", re.I),
}
MIN_SHARED, MIN_SHARE = 3, 0.25  # the finding -supports-> claim criterion (see module docstring)


def _is_marker(s: str) -> bool:
    return bool(LEGEND.match(s) or NO_KEY_TERMS.match(s) or KEY_TERMS.match(s) or NO_CITATIONS.match(s)
                or COMMENTS.match(s))


def _classify(paragraphs: list[str]) -> dict[str, str]:
    parts: dict[str, str] = {}
    rest: list[str] = []
    for p in paragraphs:
        head = " ".join(p.split()[:12])
        hits = [(m.start(), name) for name, rx in CUES.items() if (m := rx.search(head))]
        name = min(hits)[1] if hits else None
        if name and name not in parts:
            parts[name] = p
        else:
            rest.append(p)
    for p in rest:  # no cue, or a cue already taken: the first free part in page order
        free = next((n for n in PARTS if n not in parts), None)
        if free is None:
            parts["notes"] = (parts.get("notes", "") + "\n\n" + p).strip()
        else:
            parts[free] = p
    return parts


def _methods(text: str) -> list[str]:
    m = METHOD_CUE.search(text)
    if not m:
        return []
    out = []
    for name in re.split(r",\s*(?:and\s+)?|\s+and\s+", m["m"]):
        name = re.sub(r"^(?:a|an|the)\s+", "", name.strip(), flags=re.I)
        if name and len(name.split()) <= 6 and re.search(r"[^\W\d_]", name):
            out.append(name[0].upper() + name[1:])
    return out


def _iso_date(raw: str) -> str:
    for fmt in ("%b %d, %Y", "%B %d, %Y", "%b %d %Y", "%B %d %Y", "%b. %d, %Y", "%Y-%m-%d"):
        try:
            return datetime.strptime(raw, fmt).date().isoformat()
        except ValueError:
            continue
    return raw


def parse_summary(lines: list[tuple[int, str]], path: str, *, title: str | None,
                  meta: dict | None = None) -> tuple[DeltaBuilder, str]:
    """Parse a summary page's numbered, non-blank lines for the paper called `title`."""
    meta = meta or {}
    title = (title or meta.get("title") or "").strip()
    if not title:
        raise InvalidDocument("summary pages carry no paper title; pass it with --title \"...\" "
                              "(or put `title: ...` in a front matter block)", path=path, field="title")
    b = DeltaBuilder(path)
    gen_at = next((i for i, (_, s) in enumerate(lines) if GENERATED.match(s)), None)
    if gen_at is None:
        raise InvalidDocument("no 'Generated <date>' line, which separates the TL;DR and abstract from the "
                              "analysis; is this a summary page?", path=path, line=lines[0][0] if lines else None)
    head = [TLDR_LABEL.sub("", s) for _, s in lines[:gen_at]]
    head = [s for s in head if s]
    if not head:
        raise InvalidDocument("no TL;DR before the 'Generated' line", path=path, line=lines[gen_at][0])
    tldr, abstract = head[0], " ".join(head[1:])
    gen = GENERATED.match(lines[gen_at][1])
    assert gen is not None  # gen_at is the line this pattern found
    generated = _iso_date(gen["date"])

    middle: list[str] = []
    related: list[tuple[int, str]] = []
    key_terms: list[str] = []
    no_citations, in_related, done = False, False, False
    for no, s in lines[gen_at + 1:]:
        if done:
            continue
        if LEGEND.match(s):
            in_related = True
        elif NO_CITATIONS.match(s):
            no_citations, in_related = True, False
        elif COMMENTS.match(s):
            done = True  # what follows are readers' comments, not the paper
        elif NO_KEY_TERMS.match(s):
            continue
        elif (km := KEY_TERMS.match(s)) and not in_related:
            key_terms += [t.strip() for t in km["terms"].split(",") if t.strip()]
        elif in_related:
            related.append((no, s))
        else:
            middle.append(s)
    parts = _classify(middle)

    try:
        pid = paper_id(title=title, doi=meta.get("doi"), arxiv=meta.get("arxiv"))
    except InvalidInput as e:
        raise InvalidDocument(str(e), path=path, field="title") from None
    authors = meta.get("authors")
    if isinstance(authors, str):
        authors = [a.strip() for a in authors.split(",") if a.strip()]
    year = meta.get("year")
    if year is not None and not isinstance(year, int):
        raise InvalidDocument(f"front matter year must be a number, got {year!r}", path=path, field="year")
    first = lines[0][0]
    b.node(NodeType.paper, title, abstract, {
        "title_norm": normalize_title(title), "title_known": True, "tldr": tldr, "generated": generated,
        "methodology": parts.get("methodology"), "significance": parts.get("significance"),
        "novelty": parts.get("novelty"), "summary_notes": parts.get("notes"), "key_terms": key_terms or None,
        "year": year, "authors": authors, "doi": meta.get("doi"), "arxiv": meta.get("arxiv"),
    }, id=pid, line=first)

    claims = []
    for sent in sentences(tldr):
        cid = b.node(NodeType.claim, sent, "", {"kind": "tldr"}, line=first)
        b.edge(cid, EdgeType.extracted_from, pid, line=first)
        claims.append((cid, sent))
    if parts.get("contribution"):
        first_sentence, *rest = sentences(parts["contribution"]) or [parts["contribution"]]
        cid = b.node(NodeType.claim, first_sentence, " ".join(rest), {"kind": "contribution"}, line=first)
        b.edge(cid, EdgeType.extracted_from, pid, line=first)

    for sent in sentences(abstract):
        if not RESULT.search(sent):
            continue
        fid = b.node(NodeType.finding, sent, "", line=first)
        b.edge(fid, EdgeType.extracted_from, pid, line=first)
        fstems = content_stems(sent)
        for cid, claim in claims:
            shared = sorted(fstems & content_stems(claim))
            if len(shared) >= MIN_SHARED and len(shared) >= MIN_SHARE * len(fstems):
                b.edge(fid, EdgeType.supports, cid, {"shared_terms": shared}, line=first)

    for name in _methods(parts.get("methodology", "")) or _methods(abstract):
        mid = b.node(NodeType.method, name, "", line=first)
        b.edge(pid, EdgeType.uses_method, mid, line=first)

    for no, s in related:
        names = parse_author_list(s)
        if names:
            authors_, et_al = names
            attrs = {"authors": authors_, "et_al": et_al, "title_known": False}
            try:
                rid = b.node(NodeType.paper, s, "", attrs, id=paper_id(fallback=s), line=no)
            except InvalidInput as e:
                raise b.fail(str(e), no) from None
        else:  # a related work shown by its title rather than its authors
            try:
                rid = b.node(NodeType.paper, s, "", {"title_norm": normalize_title(s), "title_known": True},
                             id=paper_id(title=s), line=no)
            except InvalidInput as e:
                raise b.fail(str(e), no) from None
        if rid == pid:
            continue
        if no_citations:
            # The legend colours citing works green and cited works blue; the page states that nothing
            # cites this paper, so every listed work is one it cites (a reference).
            b.edge(pid, EdgeType.cites, rid, line=no)
        else:
            # Citations and references are told apart only by colour, which the text lost.
            b.edge(pid, EdgeType.associated_with, rid,
                   {"stated": True, "relation": "cites or is cited by (the page does not say which)"}, line=no)
    return b, title
