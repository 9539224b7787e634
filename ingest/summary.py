"""Paper summaries: a generated summary page with no title of its own.

    <TL;DR>                                 <- one or two sentences: the paper's main claims
    <abstract>
    Generated Jun 07, 2025
    <methodology> <significance> <contribution> <novelty>   <- one paragraph each, in any order
    No key terms available for this paper.  (or "Key terms: a, b")
    Current paper (gray), citations (green), references (blue)
    A, B, C et al.                          <- related works, as author lists (or titles)
    No citations found for this paper.
    Comments (0)

The title comes from the caller (`--title`) or a front matter block (`---` / `title: ...` / `---`).
Paragraphs may carry labels ("TL;DR:", "Abstract", "Methodology:", "Why it matters:", ...), may be wrapped
over several lines, and the middle four may come in any order: each is placed by its label, else by the first
cue word of its opening (employs/trains/measures...; important/impact...; introduces/proposes...;
unlike/novel/distinguishes...), else by position, with a warning.

Graph and decisions:
- the paper: text = abstract; attrs tldr, generated (ISO date), methodology, significance, novelty,
  key_terms, related_works;
- one claim per TL;DR sentence (attrs kind "tldr") -extracted_from-> paper;
- the contribution statement is a claim too (attrs kind "contribution"); significance and novelty are
  judgements about the paper, not claims to test, so they stay in the paper's attrs;
- the abstract's sentences are tagged by role (ingest.roles: background, aim, method, result, implication):
  each result is a finding -extracted_from-> paper, each implication a claim (kind "implication"); a finding
  -supports-> a TL;DR or implication claim when they clearly share words: at least 3 content stems in common
  making up at least a quarter of the finding's; the edge lists the shared stems. A sentence read as a result
  only by its position gets a warning;
- the methodology paragraph is a method node (attrs kind "methodology", text the paragraph) named from the
  main clause of its first sentence ("The authors train small networks on ..." -> "Training small networks
  on ..."), with method -extracted_from-> paper and paper -uses_method-> method; each technique it names
  ("employs sparse autoencoders for ...") is a method of its own, with paper -uses_method-> technique and
  methodology -uses_method-> technique;
- related works: those given by their authors only are kept as entries in the paper's attrs.related_works
  (authors, et_al, relation, line, a `related:` key, and no title, since the page gives none); those given by
  title are paper nodes, cited (paper -cites-> it) when the page says nothing cites this paper, or
  -associated_with-> (relation unstated) when citations and references are told apart only by colour.
"""
from __future__ import annotations

import re
from datetime import datetime

from claimgraph.graph.errors import InvalidDocument, InvalidInput
from claimgraph.graph.ids import make_id, normalize_title, paper_id, slugify
from claimgraph.graph.models import EdgeType, NodeType

from .builder import DeltaBuilder, quote
from .roles import main_clause, sentence_roles, techniques
from .words import content_stems, parse_author_list, sentences, surname

_MONTH = r"[A-Z][a-z]{2,8}\.?"
GENERATED = re.compile(rf"^(?:summary\s+)?generated(?: on| at)?\s*:?\s+(?P<date>{_MONTH} \d{{1,2}}(?:st|nd|rd|th)?,? \d{{4}}|"
                       rf"\d{{1,2}} {_MONTH},? \d{{4}}|\d{{4}}-\d{{2}}-\d{{2}})\.?$", re.I)
LEGEND = re.compile(r"^current paper\b.*\bcitations?\b.*\breferences?\b", re.I)
NO_KEY_TERMS = re.compile(r"^no key terms\b", re.I)
KEY_TERMS = re.compile(r"^key (?:terms|words|concepts)\s*:?\s*(?P<terms>.*)$", re.I)
NO_CITATIONS = re.compile(r"^no (?:citations|citing papers)(?: found| yet)?\b", re.I)
COMMENTS = re.compile(r"^comments\s*(?:\((?P<n>\d+)\)|:\s*\d+|\d*)$", re.I)
CITED_BY = re.compile(r"^(?:citations|cited by|citing (?:papers|works))\s*(?:\(\d+\))?\s*:?$", re.I)
REFERENCES = re.compile(r"^(?:references|cited works|cites)\s*(?:\(\d+\))?\s*:?$", re.I)
HEAD_LABEL = re.compile(r"^(?P<label>TL;?DR|too long;? didn'?t read|abstract|summary)\b\s*[:.—–-]?\s*(?P<rest>.*)$", re.I)
PART_LABEL = re.compile(
    r"^(?P<label>methodology|methods?|approach|how it works|significance|why it matters|impact|importance|"
    r"(?:key |main |technical |core )?contributions?|novelty|what'?s new|originality)\s*(?:[:—–]\s*|-\s+|$)"
    r"(?P<rest>.*)$", re.I)
LABEL_PART = {"method": "methodology", "methods": "methodology", "approach": "methodology", "how it works": "methodology",
              "methodology": "methodology", "significance": "significance", "why it matters": "significance",
              "impact": "significance", "importance": "significance", "novelty": "novelty", "what's new": "novelty",
              "whats new": "novelty", "originality": "novelty"}
YEAR = re.compile(r"\s*[(\[]?(?P<year>(?:19|20)\d{2})[)\]]?\.?$")

# Where each middle paragraph belongs, by the first cue word in its opening; page order is the fallback.
PARTS = ("methodology", "significance", "contribution", "novelty")
CUES = {
    "methodology": re.compile(r"\b(?:employ|uses?\b|using|utili[sz]|analy[sz]|methodolog|conduct|appl(?:y|ies)|"
                              r"trains?\b|training\b|fits?\b|measur|prob(?:e|es|ing)\b|ablat|patch|collect|"
                              r"reverse[- ]engineer|experiment|track|decompos|simulat|combin|instrument)", re.I),
    "significance": re.compile(r"\b(?:important|significan|matters?\b|impact|implication|insight|valuable|crucial|"
                               r"relevan|consequen|useful|safety|help(?:s|ful)?\b|inform)", re.I),
    "contribution": re.compile(r"\b(?:introduc|propos|present|contribut|develop|offers?\b|provides? a)", re.I),
    "novelty": re.compile(r"\b(?:distinguish|novel|unlike|differ|first (?:\w+ )?to|unique|departs?|in contrast|"
                          r"prior work|previous work|earlier work|sets? (?:it|this work) apart)", re.I),
}
MIN_SHARED, MIN_SHARE = 3, 0.25  # the finding -supports-> claim criterion (see module docstring)
Para = tuple[int, str]  # (first line number, text)


def _is_marker(s: str) -> bool:
    return bool(LEGEND.match(s) or NO_KEY_TERMS.match(s) or KEY_TERMS.match(s) or NO_CITATIONS.match(s)
                or COMMENTS.match(s) or GENERATED.match(s))


def _unwrap(lines: list[Para]) -> list[Para]:
    """Join lines that continue a paragraph: the previous one ends mid-sentence and this one starts lowercase."""
    out: list[Para] = []
    for no, s in lines:
        if out and not _is_marker(s) and not _is_marker(out[-1][1]) and (
                (not out[-1][1].endswith((".", "!", "?", ":", '"', "\u201d", ")")) and s[:1].islower())
                or out[-1][1].endswith(("-", ","))):
            prev_no, prev = out[-1]
            out[-1] = (prev_no, prev + ("" if prev.endswith("-") and s[:1].islower() else " ") + s)
        else:
            out.append((no, s))
    return out


def _head(head: list[Para], b: DeltaBuilder) -> tuple[Para, Para | None]:
    """The TL;DR and the abstract from the lines before 'Generated', by their labels where the page has them.

    Without an 'Abstract' label, the TL;DR is the first paragraph and the abstract the rest."""
    tldr: list[Para] = []
    abstract: list[Para] = []
    current = tldr
    for no, s in head:
        m = HEAD_LABEL.match(s)
        if m and (m["label"].lower().startswith(("tl", "too")) or not m["rest"]
                  or s[m.end("label"):m.end("label") + 1] in (":", ".")):
            current = abstract if m["label"].lower() == "abstract" else tldr
            if m["rest"]:
                current.append((no, m["rest"]))
            continue
        current.append((no, s))
    tldr, abstract = _unwrap(tldr), _unwrap(abstract)
    if len(tldr) > 1:  # the TL;DR is one paragraph; what follows it is the abstract
        tldr, abstract = tldr[:1], tldr[1:] + abstract
    if not tldr and abstract:
        tldr, abstract = abstract[:1], abstract[1:]
    if not tldr:
        raise b.fail("no TL;DR before the 'Generated' line")
    if not abstract:
        b.warn("only one paragraph before the 'Generated' line: read as the TL;DR, and the page has no abstract "
               "(so no findings)", tldr[0][0])
        return tldr[0], None
    return tldr[0], (abstract[0][0], " ".join(s for _, s in abstract))


def _classify(paragraphs: list[tuple[int, str, str | None]], b: DeltaBuilder) -> dict[str, Para]:
    """Place the middle paragraphs: by label; else by cue words in their opening, the earliest cue on the page
    placed first (so "The authors propose X, which learns a probe" yields contribution to a paragraph that opens
    with "The paper introduces" and is read as the methodology); else by page order, with a warning."""
    parts: dict[str, Para] = {}
    placed: set[int] = set()
    for k, (no, p, label) in enumerate(paragraphs):
        if label and label not in parts:
            parts[label] = (no, p)
            placed.add(k)
    hits = sorted((m.start(), PARTS.index(name), k, name) for k, (_, p, _) in enumerate(paragraphs) if k not in placed
                  for name, rx in CUES.items() if (m := rx.search(" ".join(p.split()[:12]))))
    for _, _, k, name in hits:
        if k not in placed and name not in parts:
            parts[name] = paragraphs[k][:2]
            placed.add(k)
    for k, (no, p, _) in enumerate(paragraphs):  # no cue, or its cues' parts taken: the first free part
        if k in placed:
            continue
        free = next((n for n in PARTS if n not in parts), None)
        if free is None:
            parts["notes"] = (parts["notes"][0], parts["notes"][1] + "\n\n" + p) if "notes" in parts else (no, p)
            b.warn("a paragraph after the four (methodology, significance, contribution, novelty) are placed; kept "
                   "in the paper's attrs.summary_notes", no)
        else:
            parts[free] = (no, p)
            b.warn(f"paragraph {quote(p, 50)} names none of its role's cue words; read as the {free} by its place "
                   "on the page", no)
    return parts


def _iso_date(raw: str) -> str:
    raw = re.sub(r"(\d)(?:st|nd|rd|th)\b", r"\1", raw).replace(".", "")
    for fmt in ("%b %d, %Y", "%B %d, %Y", "%b %d %Y", "%B %d %Y", "%d %b %Y", "%d %B %Y", "%d %b, %Y", "%d %B, %Y",
                "%Y-%m-%d"):
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
    if gen_at == 0:
        raise InvalidDocument("no TL;DR before the 'Generated' line", path=path, line=lines[0][0])
    (tldr_no, tldr), abstract_para = _head(lines[:gen_at], b)
    abstract_no, abstract = abstract_para or (tldr_no, "")
    gen = GENERATED.match(lines[gen_at][1])
    assert gen is not None  # gen_at is the line this pattern found
    generated = _iso_date(gen["date"])

    middle: list[tuple[int, str, str | None]] = []
    related: list[tuple[int, str, str | None]] = []  # (line, text, relation stated by a heading)
    key_terms: list[str] = []
    no_citations, in_related, relation, done = False, False, None, False
    pending_label: str | None = None
    for no, s in _unwrap(lines[gen_at + 1:]):
        if done:
            continue
        if LEGEND.match(s):
            in_related, relation = True, None
        elif NO_CITATIONS.match(s):
            no_citations = True
        elif COMMENTS.match(s):
            done = True  # what follows are readers' comments, not the paper
        elif NO_KEY_TERMS.match(s):
            continue
        elif (km := KEY_TERMS.match(s)) and not in_related:
            key_terms += [t.strip() for t in re.split(r"[,;]", km["terms"]) if t.strip()]
        elif in_related and CITED_BY.match(s):
            relation = "citation"
        elif in_related and REFERENCES.match(s):
            relation = "reference"
        elif in_related:
            related.append((no, s, relation))
        elif (pm := PART_LABEL.match(s)) and (pm["rest"] or len(s.split()) <= 4):
            label = pm["label"].lower()
            part = LABEL_PART.get(label, "contribution" if "contribution" in label else None)
            if pm["rest"]:
                middle.append((no, pm["rest"], part))
            else:
                pending_label = part
        else:
            middle.append((no, s, pending_label))
            pending_label = None
    parts = _classify(middle, b)

    try:
        pid = paper_id(title=title, doi=meta.get("doi"), arxiv=meta.get("arxiv"))
    except InvalidInput as e:
        raise InvalidDocument(str(e), path=path, field="title") from None
    first = lines[0][0]
    text_of = lambda k: parts[k][1] if k in parts else None
    paper_attrs = {
        "title_norm": normalize_title(title), "title_known": True, "tldr": tldr, "generated": generated,
        "methodology": text_of("methodology"), "significance": text_of("significance"),
        "novelty": text_of("novelty"), "summary_notes": text_of("notes"), "key_terms": key_terms or None,
        "year": meta.get("year"), "authors": meta.get("authors"), "doi": meta.get("doi"), "arxiv": meta.get("arxiv"),
    }
    b.node(NodeType.paper, title, abstract, paper_attrs, id=pid, line=first)

    claims = []
    for sent in sentences(tldr):
        cid = b.node(NodeType.claim, sent, "", {"kind": "tldr"}, line=tldr_no)
        b.edge(cid, EdgeType.extracted_from, pid, line=tldr_no)
        claims.append((cid, sent))
    if "contribution" in parts:
        cno, ctext = parts["contribution"]
        first_sentence, *rest = sentences(ctext) or [ctext]
        cid = b.node(NodeType.claim, first_sentence, " ".join(rest), {"kind": "contribution"}, line=cno)
        b.edge(cid, EdgeType.extracted_from, pid, line=cno)

    tagged = sentence_roles(sentences(abstract))
    for t in tagged:
        if t.role == "implication":
            cid = b.node(NodeType.claim, t.text, "", {"kind": "implication"}, line=abstract_no)
            b.edge(cid, EdgeType.extracted_from, pid, line=abstract_no)
            claims.append((cid, t.text))
    for t in tagged:
        if t.role != "result":
            continue
        if t.by_position:
            b.warn(f"abstract sentence {quote(t.text, 60)} has no reporting verb or stated outcome; read as a "
                   "finding because it follows the description of the work", abstract_no)
        fid = b.node(NodeType.finding, t.text, "", line=abstract_no)
        b.edge(fid, EdgeType.extracted_from, pid, line=abstract_no)
        fstems = content_stems(t.text)
        for cid, claim in claims:
            shared = sorted(fstems & content_stems(claim))
            if len(shared) >= MIN_SHARED and len(shared) >= MIN_SHARE * len(fstems):
                b.edge(fid, EdgeType.supports, cid, {"shared_terms": shared}, line=abstract_no)
    if abstract and not any(t.role == "result" for t in tagged):
        b.warn("no sentence of the abstract reports a result, so the page gives no findings", abstract_no)

    _methods(b, pid, parts.get("methodology"), [t.text for t in tagged if t.role == "method"], abstract_no)
    _related(b, pid, related, no_citations)
    return b, title


def _methods(b: DeltaBuilder, pid: str, methodology: Para | None, method_sentences: list[str], abstract_no: int) -> None:
    """The methodology as a method node, and the techniques it (or else the abstract) names as methods of their own."""
    mid = None
    if methodology is not None:
        no, text = methodology
        name = main_clause((sentences(text) or [text])[0])
        mid = b.node(NodeType.method, name, text, {"kind": "methodology"}, line=no)
        b.edge(mid, EdgeType.extracted_from, pid, line=no)
        b.edge(pid, EdgeType.uses_method, mid, line=no)
        named = techniques(text)
    else:
        no, named = abstract_no, [n for s in method_sentences for n in techniques(s)]
    for name in named:
        tid = make_id(NodeType.method, name)
        if tid == mid:
            continue
        b.node(NodeType.method, name, "", line=no)
        b.edge(pid, EdgeType.uses_method, tid, line=no)
        if mid is not None:
            b.edge(mid, EdgeType.uses_method, tid, line=no)


def _related(b: DeltaBuilder, pid: str, related: list[tuple[int, str, str | None]], no_citations: bool) -> None:
    """Related works: author-only lines become entries of the paper's attrs.related_works, titled ones papers."""
    entries: list[dict] = []
    for no, s, heading in related:
        relation = heading or ("reference" if no_citations else "citation or reference")
        year = YEAR.search(s)
        line = s[:year.start()].strip().rstrip(",") if year else s
        names = parse_author_list(line)
        if names:
            authors, et_al = names
            if len(authors) == 1 and not et_al:
                words = authors[0].split()
                if len(words) >= 3 and not any(re.fullmatch(r"[A-Z]\.", w) for w in words):
                    b.warn(f"related work {quote(s)} is one capitalised phrase with no comma: read as a title, not "
                           "an author", no)
                    names = None
                else:
                    b.warn(f"related work {quote(s)} is a single name: read as its author; if it is a title, give it "
                           "with its authors", no)
        if names:
            authors, et_al = names
            key = "related:" + slugify(" ".join(surname(a) for a in authors))
            if any(e["key"] == key for e in entries):
                b.warn(f"related work {quote(s)} lists the same authors as an earlier one; kept once", no)
                continue
            entries.append({"key": key, "authors": authors, "et_al": et_al, "title": None, "year":
                            int(year["year"]) if year else None, "relation": relation, "line": no})
            continue
        try:
            rid = b.node(NodeType.paper, line, "", {"title_norm": normalize_title(line), "title_known": True,
                                                     "year": int(year["year"]) if year else None},
                         id=paper_id(title=line), line=no)
        except InvalidInput as e:
            raise b.fail(str(e), no) from None
        if rid == pid:
            continue
        if relation == "reference":
            b.edge(pid, EdgeType.cites, rid, line=no)
        elif relation == "citation":
            b.edge(rid, EdgeType.cites, pid, line=no)
        else:
            # Citations and references are told apart only by colour, which the text lost.
            b.edge(pid, EdgeType.associated_with, rid,
                   {"stated": True, "relation": "cites or is cited by (the page does not say which)"}, line=no)
    if entries:
        b.node(NodeType.paper, b.nodes[pid].title, "", {"related_works": entries}, id=pid)
