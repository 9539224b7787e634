"""The canonical structured format: YAML or JSON written by hand, validated by pydantic.

    papers:
      - title: Towards Monosemanticity: Decomposing Language Models With Dictionary Learning
        year: 2023
        authors: [Trenton Bricken, Adly Templeton]
        et_al: true
        claims:
          - title: Learned features reflect the functionality of the model ...
            text: ...
        findings:
          - title: Dictionary learning on a model with shuffled weights ...
            supports: ["claim:Learned features reflect the functionality of the model ..."]
        methods: [...]
        questions: [...]
        topics: [Sparse dictionary learning]
    edges:
      - {src: "finding:...", type: supports, dst: "claim:..."}

A ref is `type:slug` (an id) or `type:Free Title` (slugified as make_id does; for papers, matched by
normalised title against the document's papers first). Refs to nodes the document does not define must
name nodes already in the store (or in another document ingested in the same command).
docs/document-format.md is the reference; docs/schema/document.schema.json the JSON Schema.
"""
from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from claimgraph.graph.errors import InvalidDocument, InvalidInput
from claimgraph.graph.ids import make_id, normalize_title, paper_id
from claimgraph.graph.models import EdgeType, NodeType
from claimgraph.graph.yamlsafe import MAX_DEPTH, compose_bounded, data_depth

from .builder import DeltaBuilder
from .locate import JsonLines, Loc, YamlLines

Ref = str  # `type:slug` or `type:Free Title`


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ItemEntry(_Strict):
    """A claim, finding, method or question. Edge lists are shorthand for `this -edge-> ref`."""

    title: str = Field(min_length=1, description="What the item says, in one line; its id is `type:slug-of-title`")
    text: str = Field("", description="Longer description")
    id: str | None = Field(None, description="Explicit id `type:slug`, when it must differ from the title's slug")
    attrs: dict[str, Any] = Field(default_factory=dict, description="Extra attributes stored on the node")
    supports: list[Ref] = Field(default_factory=list, description="Claims/findings/questions/methods this supports")
    refutes: list[Ref] = Field(default_factory=list, description="Claims/findings/questions/methods this refutes")
    associated_with: list[Ref] = Field(default_factory=list, description="Related nodes, relation unspecified")
    uses_method: list[Ref] = Field(default_factory=list, description="Methods this relies on")
    addresses: list[Ref] = Field(default_factory=list, description="Questions or claims this addresses")
    in_topic: list[Ref] = Field(default_factory=list, description="Topics this belongs to")
    compared_with: list[Ref] = Field(default_factory=list, description="Prior work this was compared with")
    anticipates: list[Ref] = Field(default_factory=list, description="Later contributions this overlaps")
    duplicate_of: list[Ref] = Field(default_factory=list, description="The same entity entered under another id")


ITEM_EDGES = ("supports", "refutes", "associated_with", "uses_method", "addresses", "in_topic", "compared_with",
              "anticipates", "duplicate_of")


class TopicEntry(_Strict):
    """A topic; a plain string is shorthand for `{title: ...}`."""

    title: str = Field(min_length=1)
    text: str = ""
    parent: str | None = Field(None, description="Parent topic: a title (created if needed) or a `topic:` ref")
    attrs: dict[str, Any] = Field(default_factory=dict)


def _topic_shorthand(v: Any) -> Any:
    if isinstance(v, list):
        return [{"title": x} if isinstance(x, str) else x for x in v]
    return v


class PaperEntry(_Strict):
    """A paper with what it states. Its id comes from DOI, else arXiv id, else normalised title."""

    title: str = Field(min_length=1)
    doi: str | None = None
    arxiv: str | None = Field(None, description="arXiv id, e.g. 2309.08600")
    year: int | None = Field(None, ge=1000, le=9999)
    authors: list[str] = Field(default_factory=list)
    authors_more: int = Field(0, ge=0, description="How many further authors the list leaves out")
    et_al: bool = Field(False, description="The author list is incomplete")
    venue: str | None = None
    url: str | None = None
    abstract: str = ""
    attrs: dict[str, Any] = Field(default_factory=dict)
    claims: list[ItemEntry] = Field(default_factory=list, description="Each -extracted_from-> this paper")
    findings: list[ItemEntry] = Field(default_factory=list, description="Each -extracted_from-> this paper")
    methods: list[ItemEntry] = Field(default_factory=list, description="Each -extracted_from-> this paper")
    questions: list[ItemEntry] = Field(default_factory=list, description="Each -extracted_from-> this paper")
    topics: list[TopicEntry] = Field(default_factory=list, description="The paper -in_topic-> each")
    cites: list[Ref] = Field(default_factory=list, description="Papers this paper cites")
    uses_method: list[Ref] = Field(default_factory=list, description="Methods defined elsewhere that it uses")
    compared_with: list[Ref] = Field(default_factory=list)

    @field_validator("topics", mode="before", json_schema_input_type=list[TopicEntry | str])
    @classmethod
    def _topic_strings(cls, v: Any) -> Any:
        return _topic_shorthand(v)


class EdgeEntry(_Strict):
    """A typed edge `src -type-> dst` between refs."""

    src: Ref
    type: EdgeType
    dst: Ref
    attrs: dict[str, Any] = Field(default_factory=dict)


class StructuredDocument(_Strict):
    """A claimgraph document: papers with their claims, findings, methods and questions, and typed edges.

    Top-level claims/findings/methods/questions/topics stand on their own (no paper).
    """

    papers: list[PaperEntry] = Field(description="The papers this document describes (may be empty)")
    claims: list[ItemEntry] = Field(default_factory=list)
    findings: list[ItemEntry] = Field(default_factory=list)
    methods: list[ItemEntry] = Field(default_factory=list)
    questions: list[ItemEntry] = Field(default_factory=list)
    topics: list[TopicEntry] = Field(default_factory=list)
    edges: list[EdgeEntry] = Field(default_factory=list)

    @field_validator("topics", mode="before", json_schema_input_type=list[TopicEntry | str])
    @classmethod
    def _topic_strings(cls, v: Any) -> Any:
        return _topic_shorthand(v)


ITEM_KINDS = {"claims": NodeType.claim, "findings": NodeType.finding, "methods": NodeType.method,
              "questions": NodeType.question}


def schema() -> dict[str, Any]:
    """The JSON Schema of the structured format (scripts/schema_docs.py writes docs/schema/document.schema.json)."""
    out = StructuredDocument.model_json_schema()
    out["title"] = "claimgraph document"
    return out


def dump_document(doc: StructuredDocument, fmt: str = "yaml") -> str:
    """Write a document as YAML or JSON (defaults left out), the inverse of `load_document`."""
    data = doc.model_dump(mode="json", exclude_defaults=True)
    data.setdefault("papers", [])
    if fmt == "json":
        return json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100)


# -- loading -------------------------------------------------------------------------------------------
def _fmt_loc(loc: Loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _pydantic_message(err: Any) -> str:
    kind, loc = err["type"], err["loc"]
    name = loc[-1] if loc else ""
    if kind == "extra_forbidden":
        return f"unknown field {name!r}; see docs/document-format.md for the fields each entry takes"
    if kind == "missing":
        return f"missing required field {name!r}"
    if kind == "enum" and name == "type":
        return f"unknown edge type {err.get('input')!r}; known: {', '.join(t.value for t in EdgeType)}"
    return f"{_fmt_loc(loc)}: {err['msg']}"


def load_document(text: str, path: str, *, fmt: str | None = None) -> tuple[StructuredDocument, Callable[[Loc], int | None]]:
    """Parse and validate YAML/JSON text; returns the document and a location -> line function."""
    is_json = fmt == "json" if fmt else (path.lower().endswith(".json") or text.lstrip().startswith("{"))
    locate: Callable[[Loc], int | None]
    if is_json:
        try:
            data = json.loads(text, object_pairs_hook=_no_repeated_keys)
        except json.JSONDecodeError as e:
            raise InvalidDocument(f"is not valid JSON: {e.msg} (column {e.colno})", path=path, line=e.lineno) from None
        except RecursionError:
            raise InvalidDocument("JSON nests too deeply", path=path) from None
        except _RepeatedKey as e:
            at = JsonLines(text).repeated.get(e.key)
            raise InvalidDocument(f"key {e.key!r} appears twice in the same object; JSON readers keep only the "
                                  "last, so the first would be lost silently" + (f" (first at line {at[0]})" if at else ""),
                                  path=path, line=at[1] if at else None, field=e.key) from None
        if data_depth(data) > MAX_DEPTH:
            raise InvalidDocument(f"nests deeper than {MAX_DEPTH} levels (docs/limits.md)", path=path)
        locate = JsonLines(text).line_of
    else:
        root, data = compose_bounded(text, path)
        yaml_lines = YamlLines(root)
        dup = yaml_lines.duplicate_key()
        if dup:
            raise InvalidDocument(f"key {dup[0]!r} appears twice in the same mapping; YAML would keep only the last",
                                  path=path, line=dup[1], field=dup[0])
        locate = yaml_lines.line_of
    if not isinstance(data, dict):
        raise InvalidDocument("a structured document is a mapping with a `papers:` list at the top "
                              f"(found {type(data).__name__}); see docs/document-format.md", path=path, line=1)
    try:
        doc = StructuredDocument.model_validate(data)
    except ValidationError as e:
        errs = e.errors()
        first = errs[0]
        loc = tuple(first["loc"])
        more = f" (and {len(errs) - 1} more problem{'s' if len(errs) > 2 else ''})" if len(errs) > 1 else ""
        raise InvalidDocument(_pydantic_message(first) + more, path=path, line=locate(loc),
                              field=_fmt_loc(loc) or None) from None
    return doc, locate


class _RepeatedKey(Exception):
    def __init__(self, key: str):
        self.key = key


def _no_repeated_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise _RepeatedKey(k)
        out[k] = v
    return out


# -- to a graph delta ----------------------------------------------------------------------------------
_REF = re.compile(r"^\s*(?P<type>[A-Za-z_]+)\s*:\s*(?P<rest>\S.*?)\s*$", re.S)
_SLUG = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")


class _Context:
    def __init__(self, path: str, locate: Callable[[Loc], int | None]):
        self.b = DeltaBuilder(path, strict=True)
        self.locate = locate
        self.papers_by_title: dict[str, str] = {}  # paper_id(title=...) -> the document paper's id
        self.external_papers: dict[str, str] = {}  # ref id -> title, for title refs to papers defined elsewhere

    def fail(self, message: str, loc: Loc) -> InvalidDocument:
        return self.b.fail(message, self.locate(loc), _fmt_loc(loc))

    def ref(self, raw: str, loc: Loc) -> str:
        m = _REF.match(raw or "")
        if not m:
            raise self.fail(f"{raw!r} is not a ref; refs look like 'claim:some-slug' or 'claim:Free Title'", loc)
        tname, rest = m["type"].lower(), m["rest"]
        try:
            ntype = NodeType(tname)
        except ValueError:
            raise self.fail(f"unknown node type {m['type']!r} in ref {raw!r}; known: "
                            f"{', '.join(t.value for t in NodeType)}", loc) from None
        try:
            if ntype != NodeType.paper:
                return make_id(ntype, rest)
            if _SLUG.match(rest):
                rid = f"paper:{rest}"
                return self.papers_by_title.get(rid, rid)
            rid = paper_id(title=rest)
        except InvalidInput as e:
            raise self.fail(str(e), loc) from None
        if rid in self.papers_by_title:
            return self.papers_by_title[rid]
        self.external_papers.setdefault(rid, rest)
        return rid

    def edges(self, src: str, entry: BaseModel, names: tuple[str, ...], loc: Loc) -> None:
        for name in names:
            for k, raw in enumerate(getattr(entry, name)):
                dst = self.ref(raw, loc + (name, k))
                self._edge(src, name, dst, {}, loc + (name, k))

    def _edge(self, src: str, etype: str, dst: str, attrs: dict, loc: Loc) -> None:
        self.b.edge(src, etype, dst, attrs, line=self.locate(loc), field=_fmt_loc(loc))

    def item(self, ntype: NodeType, e: ItemEntry, loc: Loc) -> str:
        nid = None
        if e.id is not None:
            nid = e.id.strip()
        return self.b.node(ntype, e.title, e.text, e.attrs, id=nid, line=self.locate(loc), field=_fmt_loc(loc))

    def topic(self, t: TopicEntry, loc: Loc) -> str:
        tid = self.b.node(NodeType.topic, t.title, t.text, t.attrs, line=self.locate(loc), field=_fmt_loc(loc))
        if t.parent:
            ploc = loc + ("parent",)
            if re.match(r"^\s*topic\s*:", t.parent, re.I):
                parent = self.ref(t.parent, ploc)
            else:
                parent = self.b.node(NodeType.topic, t.parent, "", line=self.locate(ploc), field=_fmt_loc(ploc))
            self._edge(tid, "in_topic", parent, {}, ploc)
        return tid


def document_delta(doc: StructuredDocument, path: str, locate: Callable[[Loc], int | None] = lambda loc: None
                   ) -> tuple[DeltaBuilder, dict[str, str]]:
    """The graph a structured document describes; returns the builder and its title refs to outside papers."""
    cx = _Context(path, locate)
    paper_ids = []
    for i, p in enumerate(doc.papers):  # first, so that refs by title find the document's own papers
        loc: Loc = ("papers", i)
        try:
            pid = paper_id(title=p.title, doi=p.doi, arxiv=p.arxiv)
        except InvalidInput as err:
            raise cx.fail(str(err), loc) from None
        if normalize_title(p.title):  # a title of punctuation only cannot be referred to by title
            cx.papers_by_title.setdefault(paper_id(title=p.title), pid)
        cx.papers_by_title.setdefault(pid, pid)
        paper_ids.append(pid)
    for i, (p, pid) in enumerate(zip(doc.papers, paper_ids)):
        loc = ("papers", i)
        attrs = {**p.attrs, "year": p.year, "authors": p.authors or None, "authors_more": p.authors_more or None,
                 "et_al": p.et_al or None, "doi": p.doi, "arxiv": p.arxiv, "venue": p.venue, "url": p.url,
                 "title_norm": normalize_title(p.title), "title_known": True}
        cx.b.node(NodeType.paper, p.title, p.abstract, attrs, id=pid, line=locate(loc), field=_fmt_loc(loc))
    for i, (p, pid) in enumerate(zip(doc.papers, paper_ids)):
        loc = ("papers", i)
        for key, ntype in ITEM_KINDS.items():
            for k, e in enumerate(getattr(p, key)):
                iloc = loc + (key, k)
                nid = cx.item(ntype, e, iloc)
                cx._edge(nid, "extracted_from", pid, {}, iloc)
        for k, t in enumerate(p.topics):
            tid = cx.topic(t, loc + ("topics", k))
            cx._edge(pid, "in_topic", tid, {}, loc + ("topics", k))
        cx.edges(pid, p, ("cites", "uses_method", "compared_with"), loc)
    for k, t in enumerate(doc.topics):
        cx.topic(t, ("topics", k))
    for key, ntype in ITEM_KINDS.items():
        for k, e in enumerate(getattr(doc, key)):
            cx.item(ntype, e, (key, k))
    # Item edges after every item exists, so an item may refer to one defined later in the document.
    for i, p in enumerate(doc.papers):
        for key, ntype in ITEM_KINDS.items():
            for k, e in enumerate(getattr(p, key)):
                cx.edges(_item_id(ntype, e), e, ITEM_EDGES, ("papers", i, key, k))
    for key, ntype in ITEM_KINDS.items():
        for k, e in enumerate(getattr(doc, key)):
            cx.edges(_item_id(ntype, e), e, ITEM_EDGES, (key, k))
    for k, e in enumerate(doc.edges):
        loc = ("edges", k)
        src, dst = cx.ref(e.src, loc + ("src",)), cx.ref(e.dst, loc + ("dst",))
        cx._edge(src, e.type.value, dst, e.attrs, loc)
    return cx.b, cx.external_papers


def _item_id(ntype: NodeType, e: ItemEntry) -> str:
    return e.id.strip() if e.id else make_id(ntype, e.title)


def parse_structured(text: str, path: str) -> tuple[DeltaBuilder, dict[str, str], str | None]:
    """Load, validate and convert a structured document; returns (builder, external paper refs, title)."""
    doc, locate = load_document(text, path)
    b, external = document_delta(doc, path, locate)
    title = doc.papers[0].title if len(doc.papers) == 1 else None
    return b, external, title
