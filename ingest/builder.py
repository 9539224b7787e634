"""DeltaBuilder: collects one document's nodes, edges and stated similarities and checks them.

The checks are the store's own rules (id matches type, attrs validate, edge end types allowed,
no self-loops), run at parse time so that a bad document fails before anything is written, with
the line it came from.
"""
from __future__ import annotations

import re
from typing import Any

from pydantic import ValidationError

from claimgraph.graph.errors import InvalidDocument, InvalidInput
from claimgraph.graph.ids import make_id, normalize_title, parse_id
from claimgraph.graph.models import (
    ATTRS_MODELS,
    EDGE_RULES,
    EDGE_TYPES,
    NODE_TYPES,
    Edge,
    EdgeType,
    GraphDelta,
    IngestWarning,
    Node,
    NodeType,
    StatedSimilarity,
)


def _member(enum: Any, members: dict[str, Any], value: Any) -> Any:
    """`enum(value)`, by the dict where it can (models.NODE_TYPES, EDGE_TYPES); the enum's own call stays behind it
    for the ValueError and for what a dict cannot hash."""
    if isinstance(value, enum):
        return value
    try:
        found = members.get(value)
    except TypeError:  # unhashable
        found = None
    return found if found is not None else enum(value)

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """Text quoted from a document, safe to print: control characters (terminal escapes) shown as \\xNN."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m[0]):02x}", text)


def quote(text: str, width: int = 70) -> str:
    """A short, printable quotation of document text for a message."""
    t = " ".join(text.split())
    return repr(printable(t if len(t) <= width else t[: width - 3] + "..."))


def edge_allowed(etype: EdgeType, src_type: NodeType, dst_type: NodeType) -> bool:
    """Whether `src -etype-> dst` is allowed between these node types (graph.models.EDGE_RULES)."""
    allowed_src, allowed_dst = EDGE_RULES[etype]
    if allowed_src is not None and src_type not in allowed_src:
        return False
    if allowed_dst is not None and dst_type not in allowed_dst:
        return False
    return not (etype == EdgeType.duplicate_of and src_type != dst_type)


def edge_rule_text(etype: EdgeType) -> str:
    allowed_src, allowed_dst = EDGE_RULES[etype]
    fmt = lambda s: "any" if s is None else "|".join(sorted(t.value for t in s))
    return f"{etype.value} goes from {fmt(allowed_src)} to {fmt(allowed_dst)}"


class DeltaBuilder:
    """Accumulates a GraphDelta for one document; `line` arguments feed error messages."""

    def __init__(self, path: str, *, strict: bool = False):
        self.path = path
        self.strict = strict  # structured documents: the same node defined twice with different text is an error
        self.nodes: dict[str, Node] = {}
        self.edges: dict[tuple[str, str, str], Edge] = {}
        self.similar: dict[tuple[str, str], StatedSimilarity] = {}
        self.node_lines: dict[str, int | None] = {}
        self.edge_lines: dict[tuple[str, str, str], int | None] = {}
        self.ref_lines: dict[str, int | None] = {}
        self.warnings: list[IngestWarning] = []

    def warn(self, message: str, line: int | None = None) -> None:
        """Record something the document leaves ambiguous, and what was made of it (shown to the user)."""
        w = IngestWarning(path=self.path, line=line, message=printable(message))
        if w not in self.warnings:
            self.warnings.append(w)

    def fail(self, message: str, line: int | None = None, field: str | None = None) -> InvalidDocument:
        return InvalidDocument(message, path=self.path, line=line, field=field)

    # -- nodes --------------------------------------------------------------------------------------
    def node(self, type: NodeType | str, title: str, text: str = "", attrs: dict[str, Any] | None = None, *,
             id: str | None = None, line: int | None = None, field: str | None = None) -> str:
        """Add (or merge into) a node; returns its id (`make_id(type, title)` unless `id` is given)."""
        try:
            ntype = _member(NodeType, NODE_TYPES, type)
        except ValueError:
            raise self.fail(f"unknown node type {type!r}; known: {', '.join(t.value for t in NodeType)}",
                            line, field) from None
        title = (title or "").strip()
        if not title:
            raise self.fail(f"a {ntype.value} needs a non-empty title", line, field)
        try:
            nid = id or make_id(ntype, title)
            id_type, _ = parse_id(nid)
        except InvalidInput as e:
            raise self.fail(str(e), line, field) from None
        if id_type != ntype:
            raise self.fail(f"id {nid!r} says {id_type.value}, but the node is a {ntype.value}", line, field)
        attrs = {k: v for k, v in (attrs or {}).items() if v is not None}
        model = ATTRS_MODELS.get(ntype)
        if model is not None:
            try:
                model.model_validate(attrs)
            except ValidationError as e:
                first = e.errors()[0]
                loc = ".".join(str(x) for x in first["loc"])
                raise self.fail(f"{nid}: attrs.{loc}: {first['msg']}", line, field) from None
        text = (text or "").strip()
        old = self.nodes.get(nid)
        if old is None:
            self.nodes[nid] = Node(id=nid, type=ntype, title=title, text=text, attrs=attrs)
            self.node_lines[nid] = line
            return nid
        if normalize_title(old.title) != normalize_title(title):
            first_line = self.node_lines.get(nid)
            where = f" (first at line {first_line})" if first_line else ""
            why = "its DOI" if nid.startswith("paper:doi-") else "its arXiv id" if nid.startswith("paper:arxiv-") \
                else "an explicit id" if id is not None else "titles that slug alike"
            if self.strict:
                raise self.fail(f"{nid} ({why}) is given two different titles: {quote(old.title)}{where} and "
                                f"{quote(title)}; give each its own id, or one title", line, field)
            self.warn(f"{quote(title)} has the same id {nid} ({why}) as {quote(old.title)}{where}; read as one "
                      "node under the first title", line)
        if self.strict and text and old.text and text != old.text:
            first_line = self.node_lines.get(nid)
            raise self.fail(f"{nid} is defined twice with different text"
                            + (f" (first at line {first_line})" if first_line else "") + "; give it one text, or a different title",
                            line, field)
        self.nodes[nid] = old.model_copy(update={"text": old.text or text, "attrs": {**old.attrs, **attrs}})
        return nid

    # -- edges --------------------------------------------------------------------------------------
    def edge(self, src: str, type: EdgeType | str, dst: str, attrs: dict[str, Any] | None = None, *,
             line: int | None = None, field: str | None = None) -> None:
        """Add (or merge the attrs of) `src -type-> dst`; end types are checked from the ids."""
        try:
            etype = _member(EdgeType, EDGE_TYPES, type)
        except ValueError:
            raise self.fail(f"unknown edge type {type!r}; known: {', '.join(t.value for t in EdgeType)}",
                            line, field) from None
        try:
            stype, _ = parse_id(src)
            dtype, _ = parse_id(dst)
        except InvalidInput as e:
            raise self.fail(str(e), line, field) from None
        if src == dst:
            raise self.fail(f"edge {src} -{etype.value}-> itself: a node cannot relate to itself", line, field)
        if not edge_allowed(etype, stype, dtype):
            raise self.fail(f"a {etype.value} edge cannot join {stype.value} {src} to {dtype.value} {dst}; "
                            f"{edge_rule_text(etype)}", line, field)
        key = (src, etype.value, dst)
        old = self.edges.get(key)
        merged = {**(old.attrs if old else {}), **(attrs or {})}
        self.edges[key] = Edge(src=src, type=etype, dst=dst, attrs=merged)
        self.edge_lines.setdefault(key, line)
        for end in (src, dst):
            self.ref_lines.setdefault(end, line)

    def similar_to(self, node_id: str, other_title: str, *, other_id: str | None = None,
                   other_type: NodeType | None = None, other_text: str = "", score: float | None = None,
                   line: int | None = None) -> None:
        """A similarity neighbour as the document states it (no typed edge)."""
        try:
            s = StatedSimilarity(node_id=node_id, other_id=other_id, other_title=other_title.strip(),
                                 other_type=other_type, other_text=other_text.strip(), score=score)
        except ValidationError as e:
            raise self.fail(f"similarity neighbour {other_title!r}: {e.errors()[0]['msg']}", line) from None
        self.similar[(node_id, other_id or "untyped:" + s.other_title.casefold())] = s

    # -- result -------------------------------------------------------------------------------------
    def external_refs(self) -> dict[str, int | None]:
        """Edge ends this document refers to but does not define, with the line of first use."""
        return {r: ln for r, ln in self.ref_lines.items() if r not in self.nodes}

    def build(self) -> GraphDelta:
        for s in self.similar.values():
            if s.node_id not in self.nodes:
                raise self.fail(f"similarity stated for {s.node_id}, which the document does not define")
        return GraphDelta(nodes=list(self.nodes.values()), edges=list(self.edges.values()),
                          similar=list(self.similar.values()))
