"""The data model: node and edge types, provenance, and the records that go in and come out of the store.

Everything here is plain pydantic; `docs/schema/` holds the JSON Schema these models give
(regenerate with `python -m claimgraph.graph.schema_docs`).
"""
from __future__ import annotations

from datetime import datetime, timezone
from enum import Enum
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator


class NodeType(str, Enum):
    paper = "paper"
    claim = "claim"
    finding = "finding"
    method = "method"
    question = "question"
    topic = "topic"
    experiment = "experiment"
    evidence = "evidence"


def parse_node_type(value: NodeType | str | None) -> NodeType | None:
    """A node type from user input (None passes through); an unknown name is InvalidInput listing the known ones."""
    if value is None:
        return None
    try:
        return NodeType(value)
    except ValueError:
        from .errors import InvalidInput

        raise InvalidInput(f"unknown node type {value!r}; known: {', '.join(t.value for t in NodeType)}") from None


def node_type_value(value: NodeType | str | None) -> str | None:
    """`parse_node_type` as the stored string (the form SQL filters take)."""
    t = parse_node_type(value)
    return None if t is None else t.value


class EdgeType(str, Enum):
    extracted_from = "extracted_from"      # claim/finding/method/question -> the paper it comes from
    supports = "supports"                  # finding/evidence/method -> claim it supports
    refutes = "refutes"                    # finding/evidence -> claim it refutes
    associated_with = "associated_with"    # a stated relation of unspecified kind
    uses_method = "uses_method"            # paper/claim/finding/experiment -> method
    addresses = "addresses"                # anything -> the question it addresses
    in_topic = "in_topic"                  # anything -> topic (topic -> parent topic for a taxonomy)
    cites = "cites"                        # paper -> paper it cites
    compared_with = "compared_with"        # a contribution or paper -> candidate prior work it was compared with
    anticipates = "anticipates"            # prior work -> contribution it overlaps
    duplicate_of = "duplicate_of"          # the same entity entered twice (same node type)
    tests = "tests"                        # experiment -> claim or finding it tests
    produced = "produced"                  # experiment -> evidence it produced


# value -> member, for hot paths: Enum's own lookup (NodeType("claim")) costs about a microsecond, and ingest looks up
# the types of every node and both ends of every edge
NODE_TYPES: dict[str, NodeType] = {t.value: t for t in NodeType}
EDGE_TYPES: dict[str, EdgeType] = {t.value: t for t in EdgeType}


def parse_edge_type(value: EdgeType | str) -> EdgeType:
    """An edge type from user input; an unknown name is InvalidInput listing the known ones."""
    try:
        return EdgeType(value)
    except ValueError:
        from .errors import InvalidInput

        raise InvalidInput(f"unknown edge type {value!r}; known: {', '.join(t.value for t in EdgeType)}") from None


class MadeBy(str, Enum):
    parsed = "parsed"
    manual = "manual"
    accepted_suggestion = "accepted-suggestion"
    experiment = "experiment"


N = NodeType
# (allowed source types, allowed target types); None means any node type.
EDGE_RULES: dict[EdgeType, tuple[frozenset[NodeType] | None, frozenset[NodeType] | None]] = {
    EdgeType.extracted_from: (frozenset({N.claim, N.finding, N.method, N.question}), frozenset({N.paper})),
    EdgeType.supports: (None, frozenset({N.claim, N.finding, N.question, N.method})),
    EdgeType.refutes: (None, frozenset({N.claim, N.finding, N.question, N.method})),
    EdgeType.associated_with: (None, None),
    EdgeType.uses_method: (None, frozenset({N.method})),
    EdgeType.addresses: (None, frozenset({N.question, N.claim})),
    EdgeType.in_topic: (None, frozenset({N.topic})),
    EdgeType.cites: (frozenset({N.paper}), frozenset({N.paper})),
    EdgeType.compared_with: (None, None),
    EdgeType.anticipates: (frozenset({N.paper, N.claim, N.finding, N.method}), None),
    EdgeType.duplicate_of: (None, None),  # same type on both ends, checked separately
    EdgeType.tests: (frozenset({N.experiment}), frozenset({N.claim, N.finding})),
    EdgeType.produced: (frozenset({N.experiment}), frozenset({N.evidence})),
}
del N


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)


class Provenance(BaseModel):
    """Where a node or edge came from: the document (path and content hash), how it was made, and when."""

    model_config = ConfigDict(frozen=True)

    source: str | None = Field(None, description="Path of the source document, run folder, or None for manual entries")
    source_hash: str | None = Field(None, description="sha256 of the source document's bytes (or the run's config hash)")
    made_by: MadeBy = MadeBy.parsed
    at: datetime = Field(default_factory=utcnow, description="When this record was last written (UTC)")


class Node(BaseModel):
    """A typed entity. `id` is `type:slug`; `attrs` holds type-specific fields (see the *Attrs models)."""

    id: str
    type: NodeType
    title: str = Field(min_length=1)
    text: str = ""
    attrs: dict[str, Any] = Field(default_factory=dict)
    provenance: Provenance | None = None

    @field_validator("title")
    @classmethod
    def _strip_title(cls, v: str) -> str:
        v = v.strip()
        if not v:
            raise ValueError("title is empty")
        return v

    def embed_text(self) -> str:
        """The text the encoder sees for this node: title, then description."""
        return f"{self.title}\n{self.text}".strip() if self.text else self.title


class Edge(BaseModel):
    """A typed, directed relation `src -type-> dst`; one edge per (src, type, dst)."""

    src: str
    type: EdgeType
    dst: str
    attrs: dict[str, Any] = Field(default_factory=dict)
    provenance: Provenance | None = None

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.src, self.type.value, self.dst)


class RemovedEdge(Edge):
    """An edge `unlink` removed: the edge with its provenance as it was, and who removed it, when and why."""

    removed_by: MadeBy = MadeBy.manual
    reason: str | None = None
    removed_at: datetime = Field(default_factory=lambda: datetime.now(timezone.utc))


class StatedSimilarity(BaseModel):
    """A similarity neighbour as a source document states it (e.g. a claim page's 'Related by similarity').

    `other_id` is None when the document gives the neighbour no type, so no node can be made for it;
    `score` is None where the document gives no cosine.
    """

    node_id: str
    other_id: str | None = None
    other_title: str
    other_type: NodeType | None = None
    other_text: str = ""
    score: float | None = Field(None, ge=-1.0, le=1.0)


class PaperAttrs(BaseModel):
    """Attributes of a paper node."""

    model_config = ConfigDict(extra="allow")
    year: int | None = None
    authors: list[str] = Field(default_factory=list)
    authors_more: int = Field(0, description="Further authors the source elides ('+1', 'et al.' counts as unknown: 0)")
    et_al: bool = False
    doi: str | None = None
    arxiv: str | None = None
    title_known: bool = Field(True, description="False when the source gives no title and one was made up from authors/year")
    title_norm: str | None = None


class ClaimAttrs(BaseModel):
    """Attributes of a claim node. The claim's evidence status is derived, never stored here."""

    model_config = ConfigDict(extra="allow")
    page_status: str | None = Field(None, description="Curation status shown by the source page (e.g. 'active')")
    candidates_examined: int | None = Field(None, description="Novelty report: candidate prior works examined for this contribution")
    refutable_candidates: int | None = Field(None, description="Novelty report: how many of them could refute it")


class EvidenceAttrs(BaseModel):
    """Attributes of an evidence node, written by an experiment run."""

    model_config = ConfigDict(extra="allow")
    verdict: Literal["supported", "refuted", "inconclusive"]
    run_id: str
    experiment: str
    criterion: dict[str, Any]
    metrics: dict[str, Any] = Field(default_factory=dict)
    superseded: bool = False
    decisive: bool = Field(True, description="False when the run cannot decide (e.g. fewer seeds than its rule "
                                             "needs): listed, but it does not move the claim's status")
    fingerprint: dict[str, Any] | None = Field(
        None, description="What produced it: {code_version, model, data, params} (docs/data-model.md); when one "
                          "no longer matches the current code, weights, corpus or resolved parameters, the "
                          "evidence is shown stale")


ATTRS_MODELS: dict[NodeType, type[BaseModel]] = {
    NodeType.paper: PaperAttrs,
    NodeType.claim: ClaimAttrs,
    NodeType.evidence: EvidenceAttrs,
}


class GraphDelta(BaseModel):
    """What one document contributes: nodes, edges and stated similarities, written in one transaction."""

    nodes: list[Node] = Field(default_factory=list)
    edges: list[Edge] = Field(default_factory=list)
    similar: list[StatedSimilarity] = Field(default_factory=list)


class DocumentRef(BaseModel):
    """An ingested document: where it was read from, its content hash and the format it was parsed as."""

    path: str
    content_hash: str
    format: str
    title: str | None = None


class IngestWarning(BaseModel):
    """Something a document left ambiguous or that ingest merged, and what ingest did about it."""

    path: str
    line: int | None = None
    message: str

    def __str__(self) -> str:
        return f"{self.path}{f':{self.line}' if self.line is not None else ''}: {self.message}"


class ApplyReport(BaseModel):
    """What applying a delta changed. `unchanged` is True when the document had been ingested before as-is."""

    path: str
    format: str
    unchanged: bool = False
    nodes_added: dict[str, int] = Field(default_factory=dict)
    nodes_updated: dict[str, int] = Field(default_factory=dict)
    nodes_removed: dict[str, int] = Field(default_factory=dict)
    edges_added: dict[str, int] = Field(default_factory=dict)
    edges_removed: dict[str, int] = Field(default_factory=dict)
    node_ids: list[str] = Field(default_factory=list, description="Every node id the document touches")
    warnings: list[IngestWarning] = Field(default_factory=list, description="What the document left ambiguous")


ClaimStatus = Literal["untested", "supported", "refuted", "contested", "mixed", "inconclusive"]
STATUS_RULES = """\
A claim's (or finding's) status comes from its current evidence (not superseded by a later run of the same
experiment), counting only evidence that decides (evidence marked `decisive: false`, such as a run with fewer
seeds than its decision rule needs, is listed but does not move the status):
- untested: no deciding evidence;
- supported: every deciding verdict is supported;
- refuted: every deciding verdict is refuted;
- contested: some evidence supports and some refutes;
- mixed: evidence in one direction (supported or refuted) beside inconclusive evidence, none in the other;
- inconclusive: every deciding verdict is inconclusive."""


class Neighbor(BaseModel):
    """A typed neighbour of a node, as `show` lists it."""

    id: str
    type: NodeType
    title: str
    edge: EdgeType
    direction: Literal["out", "in"]
    text: str = ""
    degree: int = 0
    edge_attrs: dict[str, Any] = Field(default_factory=dict)


class Similar(BaseModel):
    """A similarity neighbour with no typed edge: stated by a document, computed by the encoder, or both."""

    id: str | None
    type: NodeType | None
    title: str
    score: float | None
    origin: Literal["document", "computed", "document+computed"]
    text: str = ""
    computed_score: float | None = None


class Suggestion(BaseModel):
    """A proposed relation between two nodes with no typed edge, from embedding similarity."""

    src: str
    dst: str
    score: float
    duplicate: bool
    state: Literal["open", "accepted", "rejected"] = "open"
    src_title: str = ""
    dst_title: str = ""
    src_type: NodeType | None = None
    dst_type: NodeType | None = None


class SearchResult(BaseModel):
    id: str
    type: NodeType
    title: str
    score: float
    semantic: float | None = None
    keyword: float | None = None


T = TypeVar("T")


def _row(item: Any) -> dict[str, Any]:
    """One flat row of a DataFrame: a model's fields (provenance spread into source/made_by/at), enums as values."""
    if isinstance(item, BaseModel):
        data = dict(item)
        prov = data.pop("provenance", None)
        if isinstance(prov, BaseModel):
            data.update(dict(prov))
    elif isinstance(item, dict):
        data = dict(item)
    else:
        data = {"value": item}
    return {k: v.value if isinstance(v, Enum) else v for k, v in data.items()}


class Records(list[T]):
    """A list of query results (nodes, edges, runs, search results...) that also becomes a pandas DataFrame:
    `store.list_nodes("claim").to_pandas()`. One row per item, one column per field."""

    def to_pandas(self) -> Any:
        import pandas as pd

        return pd.DataFrame([_row(x) for x in self])
