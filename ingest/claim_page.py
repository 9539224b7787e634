"""Claim pages: a scraped page about one node whose fields run together.

    claim                                   <- node type of the page
    active                                  <- curation status
    claim:<slug><Title>                     <- id glued to the title
    <description>
    Source paper
    extracted_from(2024) · Author · Author +1
    Neighborhood — ranked by edge-count
    Findings (3)                            <- any node-type plural with the stated count
    finding
    - <title><edge types><Description>      <- e.g. `...featuresassociated_withsupportsControls for...`
    Related by similarity (8)
    cosine ≥ 0.65 · no typed edge<explanation>
    - <title><node type><cosine><description>   or a bare title

Graph: the page node (attrs page_status, stated_counts, listed_counts, similarity_threshold); the source
paper (title unknown: "<First> et al. (<year>)", title_known False) with page -extracted_from-> paper;
each neighbourhood item as a node with item -edge-> page for every stated edge type (attrs stated: true),
or -associated_with-> page (stated: false) when the page states none; each similarity neighbour as a
StatedSimilarity, and as a node too when the page gives its type.
"""
from __future__ import annotations

import re
from collections.abc import Callable

from claimgraph.graph.errors import InvalidDocument, InvalidInput
from claimgraph.graph.ids import make_id, paper_id, slugify
from claimgraph.graph.models import EdgeType, NodeType

from .builder import DeltaBuilder, edge_allowed
from .words import surname

_TYPES = [t.value for t in NodeType]
_TYPE_ALT = "|".join(sorted(_TYPES, key=len, reverse=True))
_EDGE_ALT = "|".join(sorted((e.value for e in EdgeType), key=len, reverse=True))

ID_LINE = re.compile(rf"^(?P<type>{_TYPE_ALT}):(?P<rest>[a-z0-9].*)$")
SOURCE_HEADING = re.compile(r"^source paper$", re.I)
SOURCE_LINE = re.compile(r"^(?P<edge>[a-z_]+)?\s*\((?P<year>\d{4})\)\s*(?P<rest>.*)$")
NEIGHBORHOOD = re.compile(r"^neighbou?rhood\b", re.I)
SECTION = re.compile(r"^(?P<label>[A-Za-z][A-Za-z ]*?)\s*\((?P<count>\d+)\)$")
SIMILARITY_LABEL = re.compile(r"^related by similarity$", re.I)
THRESHOLD = re.compile(r"^cosine\s*(?:≥|>=|>)\s*(?P<t>-?\d*\.?\d+)", re.I)
ITEM = re.compile(r"^[-•*]\s+(?P<body>.*)$")
# Title, then edge types glued to it, then an uppercase start: the neighbourhood item's description.
GLUED_EDGES = re.compile(rf"^(?P<title>.*?\S)(?P<edges>(?:{_EDGE_ALT})+)(?P<desc>[A-Z\"'\u201c(\[].*)$", re.S)
# Title, node type, cosine, description: a similarity neighbour with a stated type.
GLUED_SIMILAR = re.compile(rf"^(?P<title>.*?\S)(?P<type>{_TYPE_ALT})(?P<score>-?[01]?\.\d+|[01])(?P<desc>(?!\d).*)$", re.S)
AUTHOR_SEP = re.compile(r"\s*[·•|]\s*")
MORE = re.compile(r"^(?P<name>.*?)\s*\+(?P<n>\d+)$")

_PLURALS = {t.value + "s": t for t in NodeType} | {"evidence": NodeType.evidence, "evidences": NodeType.evidence}


def section_type(label: str) -> NodeType | None:
    return _PLURALS.get(label.strip().lower())


def split_id_title(type_word: str, rest: str) -> tuple[str, str] | None:
    """Split `<slug><Title>` where the slug of the title equals the slug (or the slug is a prefix of it)."""
    run = re.match(r"[a-z0-9-]*", rest)
    longest = run.end() if run else 0
    for k in range(longest, 0, -1):
        slug, title = rest[:k], rest[k:].strip()
        if title and slugify(title) == slug:
            return slug, title
    for k in range(longest, 0, -1):
        slug, title = rest[:k], rest[k:].strip()
        if title and len(slug) >= 8 and not slug.endswith("-") and slugify(title).startswith(slug):
            return slug, title
    return None


def parse_claim_page(lines: list[tuple[int, str]], path: str) -> tuple[DeltaBuilder, str]:
    """Parse a claim page's numbered, non-blank lines; returns the builder and the page node's title."""
    b = DeltaBuilder(path)
    # -- header: type word, status, id+title line, description ------------------------------------
    id_at = next((i for i, (_, s) in enumerate(lines) if ID_LINE.match(s)), None)
    if id_at is None:
        raise InvalidDocument("no `type:slug` id line found (e.g. `claim:some-slug<Title>`); "
                              "is this a claim page? pass --format to choose another parser", path=path,
                              line=lines[0][0] if lines else None)
    id_line_no, id_line = lines[id_at]
    m = ID_LINE.match(id_line)
    assert m is not None
    page_type = NodeType(m["type"])
    status = None
    for _, s in lines[:id_at]:
        word = s.strip().lower()
        if word in _TYPES:
            if word != page_type.value:
                raise InvalidDocument(f"the page says it is a {word}, but its id line is a {page_type.value}",
                                      path=path, line=id_line_no)
        elif re.fullmatch(r"[a-z][a-z_-]*", word):
            status = word
        else:
            raise InvalidDocument(f"unexpected line before the id line: {s[:60]!r}", path=path, line=id_line_no)
    split = split_id_title(page_type.value, m["rest"])
    i = id_at + 1
    if split is None and re.fullmatch(r"[a-z0-9-]+", m["rest"]) and i < len(lines) \
            and slugify(lines[i][1]).startswith(m["rest"]):
        split = (m["rest"], lines[i][1])  # the title on a line of its own
        i += 1
    if split is None:
        raise InvalidDocument("cannot split the id line into `type:slug` and a title whose slug matches it",
                              path=path, line=id_line_no)
    slug, title = split
    stated_id = f"{page_type.value}:{slug}"
    desc: list[str] = []
    while i < len(lines) and not _is_landmark(lines[i][1]):
        desc.append(lines[i][1])
        i += 1
    attrs: dict = {"page_status": status}
    if stated_id != make_id(page_type, title):
        attrs["page_id"] = stated_id
    page = b.node(page_type, title, "\n".join(desc), attrs, line=id_line_no)

    # -- body: source paper, neighbourhood sections, similarity -----------------------------------
    stated_counts: dict[str, int] = {}
    listed_counts: dict[str, int] = {}
    section: str | None = None  # "source" | "similar" | a node type value
    sec_key = ""
    last_item: Callable[[str], None] | None = None  # takes a wrapped continuation line
    while i < len(lines):
        no, s = lines[i]
        i += 1
        if SOURCE_HEADING.match(s):
            section, last_item = "source", None
            continue
        if NEIGHBORHOOD.match(s):
            section, last_item = None, None
            continue
        sm = SECTION.match(s)
        if sm:
            label = sm["label"].strip()
            sec_key = slugify(label).replace("-", "_")
            stated_counts[sec_key] = int(sm["count"])
            listed_counts.setdefault(sec_key, 0)
            if SIMILARITY_LABEL.match(label):
                section = "similar"
            else:
                t = section_type(label)
                if t is None:
                    raise InvalidDocument(f"section {label!r} names no node type (e.g. Findings, Methods, Claims)",
                                          path=path, line=no)
                section = t.value
                if i < len(lines) and lines[i][1].lower() in _TYPES:  # the type label line under the heading
                    if lines[i][1].lower() != section:
                        raise InvalidDocument(f"section {label!r} is labelled {lines[i][1]!r}", path=path,
                                              line=lines[i][0])
                    i += 1
            last_item = None
            continue
        if section == "source":
            _source_paper(b, page, page_type, s, no)
            section = None
            continue
        if section == "similar":
            tm = THRESHOLD.match(s)
            if tm and last_item is None:
                attrs["similarity_threshold"] = float(tm["t"])
                continue
        im = ITEM.match(s)
        if im and section is not None:
            body = im["body"].strip()
            if not body:
                raise InvalidDocument("empty item", path=path, line=no)
            listed_counts[sec_key] = listed_counts.get(sec_key, 0) + 1
            if section == "similar":
                last_item = _similar_item(b, page, body, no)
            else:
                last_item = _neighbour_item(b, page, page_type, NodeType(section), body, no)
            continue
        if last_item is not None:  # a wrapped line continues the previous item's description
            last_item(s)
            continue
        raise InvalidDocument(f"unexpected line {s[:60]!r}; expected a section heading like 'Findings (3)' "
                              "or a '- ' item", path=path, line=no)
    if stated_counts:
        attrs["stated_counts"] = stated_counts
        attrs["listed_counts"] = listed_counts
    b.node(page_type, title, "", attrs, line=id_line_no)  # merge the collected attrs into the page node
    return b, title


def _is_landmark(s: str) -> bool:
    return bool(SOURCE_HEADING.match(s) or NEIGHBORHOOD.match(s) or SECTION.match(s))


def _source_paper(b: DeltaBuilder, page: str, page_type: NodeType, s: str, no: int) -> None:
    m = SOURCE_LINE.match(s)
    if not m:
        raise b.fail("the line after 'Source paper' should read like `extracted_from(2024) · Author · Author +1`", no)
    etype = m["edge"] or EdgeType.extracted_from.value
    try:
        edge = EdgeType(etype)
    except ValueError:
        raise b.fail(f"unknown edge type {etype!r} on the source paper line", no) from None
    year = int(m["year"])
    authors: list[str] = []
    more = 0
    et_al = False
    for part in AUTHOR_SEP.split(m["rest"]):
        part = part.strip()
        if not part:
            continue
        mm = MORE.match(part)
        if mm:
            more += int(mm["n"])
            part = mm["name"].strip()
        if re.fullmatch(r"et al\.?", part, re.I):
            et_al = True
            continue
        if part:
            authors.append(part)
    if not authors:
        raise b.fail("the source paper line names no authors, so the paper cannot be identified", no)
    incomplete = more > 0 or et_al or len(authors) > 1
    title = f"{authors[0]} et al. ({year})" if incomplete else f"{authors[0]} ({year})"
    try:
        pid = paper_id(fallback=f"{surname(authors[0])} {year}")
    except InvalidInput as e:
        raise b.fail(str(e), no) from None
    b.node(NodeType.paper, title, "", {"year": year, "authors": authors, "authors_more": more,
                                       "et_al": more > 0 or et_al, "title_known": False}, id=pid, line=no)
    if edge_allowed(edge, page_type, NodeType.paper):
        b.edge(page, edge, pid, line=no)
    else:
        b.edge(pid, edge, page, line=no)


def _neighbour_item(b: DeltaBuilder, page: str, page_type: NodeType, item_type: NodeType, body: str,
                    no: int) -> Callable[[str], None]:
    m = GLUED_EDGES.match(body)
    if m:
        title, desc = m["title"].strip(), m["desc"].strip()
        edges = [EdgeType(e) for e in re.findall(_EDGE_ALT, m["edges"])]
        stated = True
    else:
        title, desc, edges, stated = body, "", [EdgeType.associated_with], False
    nid = b.node(item_type, title, desc, line=no)
    for etype in dict.fromkeys(edges):
        if edge_allowed(etype, item_type, page_type):
            b.edge(nid, etype, page, {"stated": stated}, line=no)
        elif edge_allowed(etype, page_type, item_type):
            b.edge(page, etype, nid, {"stated": stated}, line=no)
        else:
            raise b.fail(f"the page states {etype.value} between the {page_type.value} and a {item_type.value}, "
                         "which that edge type cannot join", no)
    return lambda s: _append_text(b, nid, s)


def _similar_item(b: DeltaBuilder, page: str, body: str, no: int) -> Callable[[str], None]:
    m = GLUED_SIMILAR.match(body)
    score = None
    if m:
        try:
            score = float(m["score"])
        except ValueError:
            score = None
    if m and score is not None and -1.0 <= score <= 1.0:
        otype = NodeType(m["type"])
        title, desc = m["title"].strip(), m["desc"].strip()
        if make_id(otype, title) == page:  # a page listing itself as its own neighbour: nothing to record
            return lambda s: None
        oid = b.node(otype, title, desc, line=no)
        b.similar_to(page, title, other_id=oid, other_type=otype, other_text=desc, score=score, line=no)
        return lambda s: _append_text(b, oid, s, similar_key=(page, oid))
    b.similar_to(page, body, line=no)
    key = (page, "untyped:" + body.strip().casefold())
    return lambda s: _append_similar_text(b, key, s)


def _append_text(b: DeltaBuilder, nid: str, extra: str, similar_key: tuple[str, str] | None = None) -> None:
    """A wrapped line: append it to the item's description (and to its stated-similarity row)."""
    node = b.nodes[nid]
    b.nodes[nid] = node.model_copy(update={"text": (node.text + " " + extra).strip()})
    if similar_key:
        _append_similar_text(b, similar_key, extra)


def _append_similar_text(b: DeltaBuilder, key: tuple[str, str], extra: str) -> None:
    s = b.similar.get(key)
    if s is not None:
        b.similar[key] = s.model_copy(update={"other_text": (s.other_text + " " + extra).strip()})
