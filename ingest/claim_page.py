"""Claim pages: a scraped page about one node whose fields run together.

    claim                                   <- node type of the page
    active                                  <- curation status
    claim:<slug><Title>                     <- id glued to the title (or the title on the next line)
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

What varies and is still read: type and status in either order or missing (or as `Type: claim`,
`Status: active`); the title before the id line; headings worded differently ("Source", "Extracted from",
"Connections", "Supporting findings · 2", "Methods: 3", "3 Methods", "Similar entries", "Nearest
neighbours"), with or without counts, in any order, and missing; source lines as `extracted_from (2024) ·
A · B`, `A, B et al. (2024)`, `2024 · A`, several of them, or with the paper's title among the names; items
marked `-`, `*`, `•` or `1.`, with their edge types glued (`Titlesupports`), separated
(`Title · supports · Description`, `Title (supports, associated_with): Description`) or first
(`supports — Title — Description`); similarity neighbours glued (`Titlequestion0.794Desc`) or separated
(`Title · question · 0.79 · Desc`, `Title (finding, 0.77) Desc`). Sections the parser does not model
("Comments (2)", "Tags", "Notes", "Evidence (1)") are kept as text in the page node's attrs.extra_sections
with a warning, and so is a line that fits nowhere; a stated count that differs from the items listed is a
warning too.

Graph: the page node (attrs page_status, stated_counts, listed_counts, similarity_threshold); each source
paper (title unknown: "<First> et al. (<year>)", title_known False; or its title when the line gives one)
with page -extracted_from-> paper; each neighbourhood item as a node with item -edge-> page for every stated
edge type (attrs stated: true), or -associated_with-> page (stated: false) when the page states none; each
similarity neighbour as a StatedSimilarity, and as a node too when the page gives its type.
"""
from __future__ import annotations

import re
from collections.abc import Callable

from pydantic import BaseModel

from claimgraph.graph.errors import InvalidDocument, InvalidInput
from claimgraph.graph.ids import make_id, normalize_title, paper_id, slugify
from claimgraph.graph.models import EdgeType, NodeType

from .builder import DeltaBuilder, edge_allowed, quote
from .words import PERSON, surname

_TYPES = [t.value for t in NodeType]
_TYPE_ALT = "|".join(sorted(_TYPES, key=len, reverse=True))
_EDGE_ALT = "|".join(sorted((e.value for e in EdgeType), key=len, reverse=True))

ID_LINE = re.compile(rf"^(?:id\s*:\s*)?(?P<type>{_TYPE_ALT}):(?P<rest>[a-z0-9].*)$")
SOURCE_HEADING = re.compile(r"^(?:source papers?|sources?|from (?:the )?paper|extracted from|source document|origin)"
                            r"\s*(?:\(\d+\))?\s*:?\s*(?P<rest>.*)$", re.I)
NEIGHBORHOOD = re.compile(r"^(?:(?:graph |typed )?neighbou?rhood|connections|linked (?:entities|nodes)|"
                          r"typed (?:neighbou?rs|edges|relations))\b", re.I)
_COUNT = r"(?:\s*\((?P<n1>\d+)\)|\s*[:·•|—–-]\s*(?P<n2>\d+))"
SECTION = re.compile(rf"^(?:(?P<n0>\d+)\s+)?(?P<label>[A-Za-z][A-Za-z' ]*?){_COUNT}?\s*:?$")
SIMILARITY_LABEL = re.compile(r"^(?:related by (?:similarity|embedding)|similar(?: entries| nodes| items| claims)?|"
                              r"semantically (?:similar|related)(?: entries| nodes)?|nearest neighbou?rs|"
                              r"similarity(?: neighbou?rs)?|by similarity)$", re.I)
EXTRA_LABEL = re.compile(r"^(?:comments?|notes?|tags?|history|discussion|activity|evidence|experiments?|changelog|"
                         r"see also|references|labels?|metadata)$", re.I)
THRESHOLD = re.compile(r"^(?:cosine|similarity|cos)\s*(?:≥|>=|>|at least)\s*(?P<t>-?\d*\.?\d+)", re.I)
ITEM = re.compile(r"^(?:[-•*–]|\d{1,3}[.)])\s+(?P<body>.*)$")
_DESC_START = r"[A-Z\"'\u201c(\[]"
# Title, then edge types glued to it, then an uppercase start: the neighbourhood item's description.
GLUED_EDGES = re.compile(rf"^(?P<title>.*?\S)(?P<edges>(?:{_EDGE_ALT})+)(?P<desc>{_DESC_START}.*)?$", re.S)
_SEP = r"\s*(?:[·•|]|\s[—–]|:)\s*"
_EDGE_LIST = rf"(?:{_EDGE_ALT})(?:\s*(?:,|/|&|\+|and)\s*(?:{_EDGE_ALT}))*"
SEPARATED_EDGES = re.compile(rf"^(?P<title>.+?)(?:{_SEP}|\s*[(\[]\s*)(?P<edges>{_EDGE_LIST})\s*[)\]]?"
                             rf"(?:(?:{_SEP}|\s+)(?P<desc>.+))?$", re.S)
EDGES_FIRST = re.compile(rf"^[(\[]?(?P<edges>{_EDGE_LIST})[)\]]?{_SEP}(?P<title>.+?)(?:\s[—–]\s(?P<desc>.+))?$", re.S)
PLAIN_DESC = re.compile(r"^(?P<title>.+?)\s[—–]\s(?P<desc>.+)$", re.S)
# Title, node type, cosine, description: a similarity neighbour with a stated type.
_SCORE = r"-?(?:[01]?\.\d+|[01](?![\d.]))"
GLUED_SIMILAR = re.compile(rf"^(?P<title>.*?\S)(?P<type>{_TYPE_ALT})(?P<score>{_SCORE})(?P<desc>(?!\d).*)$", re.S)
SEPARATED_SIMILAR = [
    re.compile(rf"^(?P<title>.+?)(?:{_SEP}|\s*[(\[]\s*)(?P<type>{_TYPE_ALT})\s*(?:[,·•|:]\s*|\s+)(?:cos(?:ine)?\s*)?"
               rf"(?P<score>{_SCORE})\s*[)\]]?(?:(?:{_SEP}|\s+)(?P<desc>.+))?$", re.S | re.I),
    re.compile(rf"^(?P<title>.+?)(?:{_SEP}|\s*[(\[]\s*)(?:cos(?:ine)?\s*)?(?P<score>{_SCORE})\s*(?:[,·•|:]\s*|\s+)"
               rf"(?P<type>{_TYPE_ALT})\s*[)\]]?(?:(?:{_SEP}|\s+)(?P<desc>.+))?$", re.S | re.I),
]
AUTHOR_SEP = re.compile(r"\s*[·•|;]\s*")
MORE = re.compile(r"^(?P<name>.*?)\s*\+\s*(?P<n>\d+)(?:\s+more)?$")
SOURCE_EDGE = re.compile(r"^(?P<edge>[a-z_]+)\s*(?=\(|[·•|]|\d{4}\b)")
SOURCE_YEAR = re.compile(r"[(\[]?\b(?P<year>(?:1[89]|20)\d{2})\b[)\]]?")

_PLURALS = {t.value + "s": t for t in NodeType} | {t.value: t for t in NodeType} | {"evidences": NodeType.evidence}
MAX_HEADING_WORDS = 5


def section_type(label: str) -> NodeType | None:
    """The node type a section label names: 'Findings', 'Supporting findings', 'Open questions' ..."""
    words = label.strip().lower().split()
    hits = [_PLURALS[w] for w in words if w in _PLURALS]
    return hits[-1] if len(hits) == 1 or (hits and len(set(hits)) == 1) else None


class Heading(BaseModel):
    """A section heading: what the section holds ('source', 'neighborhood', 'similar', a node type, 'extra')."""

    kind: str
    label: str
    count: int | None = None
    rest: str = ""  # text after the heading on the same line (a source line given inline)


def heading(s: str) -> Heading | None:
    """The heading a line is, if it is one."""
    if ITEM.match(s):
        return None
    if NEIGHBORHOOD.match(s):
        return Heading(kind="neighborhood", label=s)
    m = SOURCE_HEADING.match(s)
    if m and (not m["rest"] or SOURCE_YEAR.search(m["rest"])) and len(s.split(":")[0].split()) <= 3:
        return Heading(kind="source", label=s, rest=m["rest"] or "")
    m = SECTION.match(s)
    if not m or len(m["label"].split()) > MAX_HEADING_WORDS:
        return None
    label = m["label"].strip()
    raw = m["n0"] or m["n1"] or m["n2"]
    count = int(raw) if raw else None
    if SIMILARITY_LABEL.match(label):
        return Heading(kind="similar", label=label, count=count)
    t = section_type(label)
    words = label.split()
    # Without a count, only a capitalised plural at the end reads as a heading ("Findings", "Related methods"):
    # a bare type word ("finding") is the label line under a heading, and prose may mention a type.
    if t is not None and count is None and not (label[:1].isupper() and len(words) <= 3
                                                and words[-1].lower() in (t.value + "s", "evidence")):
        t = None
    if t is not None and t not in (NodeType.evidence, NodeType.experiment):
        return Heading(kind=t.value, label=label, count=count)
    if EXTRA_LABEL.match(label) or (count is not None and label[:1].isupper()):
        return Heading(kind="extra", label=label, count=count)
    return None


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


_LABELLED = re.compile(r"^(?P<key>type|status|page status)\s*:\s*(?P<value>\S.*)$", re.I)


def _header_word(s: str, page_type: NodeType, fields: dict, b: DeltaBuilder, no: int) -> bool:
    """A type or status line around the id line; False when the line is neither."""
    m = _LABELLED.match(s)
    key, word = (m["key"].lower(), m["value"].strip().lower()) if m else (None, s.strip().lower())
    if word in _TYPES and key in (None, "type"):
        if word != page_type.value:
            raise b.fail(f"the page says it is a {word}, but its id line is a {page_type.value}", no)
        return True
    if re.fullmatch(r"[a-z][a-z_-]*", word) and key in (None, "status", "page status") and "status" not in fields:
        fields["status"] = word
        return True
    return False


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
    fields: dict = {}
    notes: list[str] = []
    before = []
    for no, s in lines[:id_at]:
        if not _header_word(s, page_type, fields, b, no):
            before.append((no, s))
    split = split_id_title(page_type.value, m["rest"])
    i = id_at + 1
    if split is None and re.fullmatch(r"[a-z0-9-]+", m["rest"].strip()):
        slug = m["rest"].strip()
        if i < len(lines) and slugify(lines[i][1]).startswith(slug):
            split = (slug, lines[i][1])  # the title on a line of its own
            i += 1
        elif before and slugify(before[-1][1]).startswith(slug):
            split = (slug, before.pop()[1])  # the title above the id line
    if split is None:
        raise InvalidDocument("cannot split the id line into `type:slug` and a title whose slug matches it",
                              path=path, line=id_line_no)
    for no, s in before:
        b.warn(f"line {quote(s)} before the id line is neither the page's type nor its status; kept in the page "
               "node's attrs.page_notes", no)
        notes.append(s)
    slug, title = split
    stated_id = f"{page_type.value}:{slug}"
    desc: list[str] = []
    while i < len(lines) and heading(lines[i][1]) is None:
        no, s = lines[i]
        if desc or not _header_word(s, page_type, fields, b, no):
            desc.append(s)
        i += 1
    attrs: dict = {"page_status": fields.get("status")}
    if stated_id != make_id(page_type, title):
        attrs["page_id"] = stated_id
    if notes:
        attrs["page_notes"] = notes
    page = b.node(page_type, title, "\n".join(desc), attrs, line=id_line_no)

    # -- body: source paper, neighbourhood sections, similarity, extra sections --------------------------
    stated_counts: dict[str, int] = {}
    listed_counts: dict[str, int] = {}
    count_lines: dict[str, int] = {}
    extra: dict[str, list[str]] = {}
    section: str | None = None  # "source" | "similar" | "extra" | a node type value | None
    source_lines = 0
    sec_key = ""
    last_item: Callable[[str], None] | None = None  # takes a wrapped continuation line
    while i < len(lines):
        no, s = lines[i]
        i += 1
        h = heading(s)
        if h is not None:
            last_item = None
            if h.kind == "neighborhood":
                section = None
                continue
            sec_key = slugify(h.label).replace("-", "_")
            if h.kind == "source":
                section, sec_key = "source", "source"
                if h.rest:
                    source_lines += _source_paper(b, page, page_type, h.rest, no)
                continue
            section = h.kind
            if h.kind != "extra":
                if h.count is not None:
                    stated_counts[sec_key] = h.count
                    count_lines[sec_key] = no
                listed_counts.setdefault(sec_key, 0)
            if h.kind == "extra":
                b.warn(f"section {quote(h.label)} is not one claim pages are read for (source, neighbourhood, "
                       "similarity); its lines are kept in the page node's attrs.extra_sections", no)
                extra.setdefault(h.label, [])
            elif h.kind != "similar" and i < len(lines) and lines[i][1].lower() in _TYPES:
                if lines[i][1].lower() != section:  # the type label line under the heading
                    raise InvalidDocument(f"section {h.label!r} is labelled {lines[i][1]!r}", path=path,
                                          line=lines[i][0])
                i += 1
            continue
        if section == "extra":
            extra[list(extra)[-1]].append(s)
            continue
        if section == "source":
            if _source_paper(b, page, page_type, s, no, strict=source_lines == 0):
                source_lines += 1
                continue
            section = None
        if section == "similar":
            tm = THRESHOLD.match(s)
            if tm and last_item is None:
                attrs["similarity_threshold"] = float(tm["t"])
                continue
        im = ITEM.match(s)
        if im and section not in (None, "source"):
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
        b.warn(f"line {quote(s)} is neither a section heading, a '- ' item nor part of one; kept in the page "
               "node's attrs.extra_sections", no)
        extra.setdefault("unplaced lines", []).append(s)
    for key, n in stated_counts.items():
        if listed_counts.get(key, 0) != n:
            b.warn(f"section {key.replace('_', ' ')} says {n} but lists {listed_counts.get(key, 0)}; the page may "
                   "show only part of it", count_lines.get(key))
    if stated_counts:
        attrs["stated_counts"] = stated_counts
        attrs["listed_counts"] = listed_counts
    if extra:
        attrs["extra_sections"] = extra
    b.node(page_type, title, "", attrs, line=id_line_no)  # merge the collected attrs into the page node
    return b, title


def _source_paper(b: DeltaBuilder, page: str, page_type: NodeType, s: str, no: int, *, strict: bool = True) -> bool:
    """Read one source line; False (or, when `strict`, an error) when the line does not read as one."""
    text = s.strip()
    etype = EdgeType.extracted_from.value
    em = SOURCE_EDGE.match(text)
    if em and em["edge"] in {e.value for e in EdgeType}:
        etype, text = em["edge"], text[em.end():]
    elif em and strict and "(" in text[em.end():em.end() + 1]:
        raise b.fail(f"unknown edge type {em['edge']!r} on the source paper line", no)
    ym = SOURCE_YEAR.search(text)
    year = int(ym["year"]) if ym else None
    if ym:
        text = (text[:ym.start()] + " " + text[ym.end():]).strip()
    parts = [p.strip() for p in AUTHOR_SEP.split(text) if p.strip()]
    if len(parts) == 1 and "," in parts[0]:
        parts = [p.strip() for p in re.split(r",\s*|\s+and\s+", parts[0]) if p.strip()]
    authors: list[str] = []
    more, et_al = 0, False
    titles: list[str] = []
    for part in parts:
        part = part.strip(" .,")
        mm = MORE.match(part)
        if mm:
            more += int(mm["n"])
            part = mm["name"].strip()
        if re.search(r"\bet al\.?$", part, re.I):
            et_al = True
            part = re.sub(r",?\s*\bet al\.?$", "", part, flags=re.I).strip()
        if not part:
            continue
        if PERSON.match(part):
            authors.append(part)
        else:
            titles.append(part)
    if not strict and year is None:
        return False  # a further source line states its year; anything else ends the section
    if not authors and (not titles or year is None):
        if strict:
            raise b.fail("the line after 'Source paper' should read like `extracted_from(2024) · Author · Author +1`",
                         no)
        return False
    try:
        edge = EdgeType(etype)
    except ValueError:
        raise b.fail(f"unknown edge type {etype!r} on the source paper line", no) from None
    if titles:
        title = titles[0]
        pid = paper_id(title=title)
        attrs: dict = {"year": year, "authors": authors or None, "authors_more": more or None, "et_al": et_al or None,
                       "title_norm": normalize_title(title), "title_known": True}
    else:
        if year is None:
            b.warn("the source paper line gives no year, so the paper is known only by its first author", no)
        incomplete = more > 0 or et_al or len(authors) > 1
        title = f"{authors[0]}{' et al.' if incomplete else ''}{f' ({year})' if year else ''}"
        try:
            pid = paper_id(fallback=f"{surname(authors[0])} {year or ''}".strip())
        except InvalidInput as e:
            raise b.fail(str(e), no) from None
        attrs = {"year": year, "authors": authors, "authors_more": more, "et_al": more > 0 or et_al,
                 "title_known": False}
    b.node(NodeType.paper, title, "", attrs, id=pid, line=no)
    if edge_allowed(edge, page_type, NodeType.paper):
        b.edge(page, edge, pid, line=no)
    else:
        b.edge(pid, edge, page, line=no)
    return True


def _split_item(body: str) -> tuple[str, str, list[EdgeType], bool]:
    """(title, description, edge types, stated) of a neighbourhood item, whichever way its fields run."""
    for rx in (EDGES_FIRST, SEPARATED_EDGES, GLUED_EDGES):
        m = rx.match(body)
        if m and m["title"].strip():
            edges = [EdgeType(e) for e in re.findall(_EDGE_ALT, m["edges"])]
            return m["title"].strip(), (m["desc"] or "").strip(), edges, True
    m = PLAIN_DESC.match(body)
    if m:
        return m["title"].strip(), m["desc"].strip(), [EdgeType.associated_with], False
    return body, "", [EdgeType.associated_with], False


def _neighbour_item(b: DeltaBuilder, page: str, page_type: NodeType, item_type: NodeType, body: str,
                    no: int) -> Callable[[str], None]:
    title, desc, edges, stated = _split_item(body)
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
    for rx in (*SEPARATED_SIMILAR, GLUED_SIMILAR):
        m = rx.match(body)
        if not m:
            continue
        try:
            score = float(m["score"])
        except ValueError:
            continue
        if not -1.0 <= score <= 1.0 or not m["title"].strip():
            continue
        otype = NodeType(m["type"].lower())
        title, desc = m["title"].strip(), (m["desc"] or "").strip()
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
