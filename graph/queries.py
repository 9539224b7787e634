"""Read-side views of the graph: a node's page, neighbourhoods, paths, and claim status derived from evidence.

None of this needs the encoder: similarity neighbours come from stored vectors.
"""
from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Mapping
from typing import Any, Literal

from pydantic import BaseModel, Field

from .errors import InvalidInput, NotFound
from .models import ClaimStatus, EdgeType, Neighbor, Node, NodeType, Records, Similar, parse_edge_type
from .store import Store, reads

STATUS_TYPES = (NodeType.claim, NodeType.finding)

StaleCheck = Callable[[list[Node]], Mapping[str, str]]
"""Given evidence nodes, the ids of those whose fingerprint no longer matches what would produce them now, each
with the reason (claimgraph.experiments.staleness.stale_evidence). The graph stores fingerprints (evidence
attrs) but cannot recompute them: the layer that knows the jobs passes this in."""


class SourceInfo(BaseModel):
    """Where a node comes from: the paper(s) it is extracted from and the document(s) that mention it."""

    papers: list[Node] = Field(default_factory=list)
    documents: list[str] = Field(default_factory=list)


class StatusReport(BaseModel):
    """A claim's derived status and what it rests on: which evidence (labelled by method) gave which verdict."""

    status: ClaimStatus
    by_verdict: dict[str, list[str]] = Field(default_factory=dict,
                                             description="verdict -> method labels of deciding evidence, sorted")
    not_deciding: list[str] = Field(default_factory=list,
                                    description="method labels of evidence listed but not deciding")
    stale: list[str] = Field(default_factory=list,
                             description="method labels of deciding evidence whose fingerprint (code version, "
                                         "model, data, parameters) no longer matches the current ones, sorted")

    def describe(self) -> str:
        """`mixed (supported: logit_weights; inconclusive: ablation x2)` — the status with who said what, and
        `; rests on stale evidence: sae on toy:tiny` when some deciding evidence is stale."""
        if self.status == "untested" and not self.not_deciding:
            return self.status
        parts = [f"{v}: {_count_labels(self.by_verdict[v])}" for v in VERDICT_ORDER if self.by_verdict.get(v)]
        if self.not_deciding:
            parts.append(f"not deciding: {_count_labels(self.not_deciding)}")
        if self.stale:
            parts.append(f"rests on stale evidence: {_count_labels(self.stale)}")
        return f"{self.status} ({'; '.join(parts)})"


VERDICT_ORDER = ("supported", "refuted", "inconclusive")


def _count_labels(labels: list[str]) -> str:
    counts: dict[str, int] = defaultdict(int)
    for label in labels:
        counts[label] += 1
    return ", ".join(k if n == 1 else f"{k} x{n}" for k, n in sorted(counts.items()))


class NodePage(BaseModel):
    """Everything `show` renders: the node, its derived status, its source, typed neighbours, similarity."""

    node: Node
    status: ClaimStatus | None = None
    status_report: StatusReport | None = None
    source: SourceInfo
    neighbors: list[Neighbor]
    similar: list[Similar]
    similarity_threshold: float
    evidence: list[Node] = Field(default_factory=list)
    stale: dict[str, str] = Field(default_factory=dict,
                                  description="evidence id -> why it is stale, for the page's evidence (and the "
                                              "node itself when it is evidence)")


def status_from_verdicts(verdicts: list[str]) -> ClaimStatus:
    """The status rule (graph.models.STATUS_RULES) applied to the verdicts of deciding evidence."""
    v = set(verdicts)
    if "supported" in v and "refuted" in v:
        return "contested"
    direction = v & {"supported", "refuted"}
    if direction:
        (only,) = direction
        return "mixed" if "inconclusive" in v else only  # type: ignore[return-value]
    return "inconclusive" if "inconclusive" in v else "untested"


def _method_label(attrs: dict[str, Any]) -> str:
    kind = attrs.get("kind") or "evidence"
    model = attrs.get("model")
    return f"{kind} on {model}" if model else str(kind)


@reads
def status_reports(store: Store, ids: list[str], *, stale: StaleCheck | None = None) -> dict[str, StatusReport]:
    """Status of each claim or finding with the verdicts it rests on (rules: graph.models.STATUS_RULES); with
    `stale`, the deciding evidence that is stale is named too (it still counts: a stale verdict is not a new
    one, but the status says what it rests on)."""
    if not ids:
        return {}
    ev = evidence_map(store, ids)
    nodes = store.get_nodes(i for evs in ev.values() for i in evs)
    stale_ids = stale(list(nodes.values())) if stale is not None and nodes else {}
    by_target = {t: [nodes[i] for i in evs] for t, evs in ev.items()}
    out: dict[str, StatusReport] = {}
    for i in ids:
        by_verdict: dict[str, list[str]] = defaultdict(list)
        not_deciding: list[str] = []
        stale_labels: list[str] = []
        for n in by_target.get(i, []):
            attrs = n.attrs
            label = _method_label(attrs)
            if attrs.get("decisive", True) is False:
                not_deciding.append(label)
            elif attrs.get("verdict") in VERDICT_ORDER:
                by_verdict[attrs["verdict"]].append(label)
                if n.id in stale_ids:
                    stale_labels.append(label)
        out[i] = StatusReport(status=status_from_verdicts(list(by_verdict)),
                              by_verdict={k: sorted(v) for k, v in by_verdict.items()},
                              not_deciding=sorted(not_deciding), stale=sorted(stale_labels))
    return out


@reads
def list_rows(store: Store, nodes: list[Node], *, stale: StaleCheck | None = None) -> list[dict[str, Any]]:
    """Rows of `list --json` (the CLI and the web UI): id, type, title, text, status (claims and findings),
    edges, attrs, and `stale`: for evidence, why it is stale; for a claim or finding, which stale evidence its
    status rests on; None otherwise."""
    reports = status_reports(store, [n.id for n in nodes if n.type in STATUS_TYPES], stale=stale)
    ev = [n for n in nodes if n.type == NodeType.evidence]
    stale_ev = stale(ev) if stale is not None and ev else {}
    degree = store.degrees(n.id for n in nodes)
    rows = []
    for n in nodes:
        r = reports.get(n.id)
        why = stale_ev.get(n.id) if n.type == NodeType.evidence else (
            f"rests on stale evidence: {_count_labels(r.stale)}" if r and r.stale else None)
        rows.append({"id": n.id, "type": n.type.value, "title": n.title, "text": n.text,
                     "status": r.status if r else None, "edges": degree.get(n.id, 0), "attrs": n.attrs,
                     "stale": why})
    return rows


@reads
def claim_statuses(store: Store, ids: list[str]) -> dict[str, ClaimStatus]:
    """Status word of each claim or finding (rules: graph.models.STATUS_RULES)."""
    return {i: r.status for i, r in status_reports(store, ids).items()}


@reads
def evidence_for(store: Store, node_id: str, *, include_superseded: bool = False) -> Records[Node]:
    """Evidence nodes about a claim or finding: linked by supports/refutes, or produced by an experiment testing it."""
    ids = evidence_map(store, [node_id], include_superseded=include_superseded).get(node_id, [])
    nodes = store.get_nodes(ids)
    return Records(sorted((nodes[i] for i in ids), key=lambda n: (n.provenance.at if n.provenance else None) or 0,
                          reverse=True))


@reads
def evidence_map(store: Store, ids: list[str], *, include_superseded: bool = False) -> dict[str, list[str]]:
    """For each of these claims or findings that has any, the ids of its evidence nodes (sorted), in one query."""
    if not ids:
        return {}
    # index lookups only: at a million nodes a join or a second filter beside `dst = ANY(?)` makes DuckDB scan
    # the edges and nodes tables (70-180 ms a page); each lookup below uses the ART index of its column
    targets = list(dict.fromkeys(ids))
    pairs: set[tuple[str, str]] = set()
    tests: list[tuple[str, str]] = []  # (target, experiment)
    for src, etype, dst in store.sql("SELECT src, type, dst FROM edges WHERE dst = ANY(?)", [targets]):
        if etype in ("supports", "refutes"):
            pairs.add((dst, src))
        elif etype == "tests":
            tests.append((dst, src))
    if tests:
        produced: dict[str, list[str]] = defaultdict(list)
        for src, etype, dst in store.sql("SELECT src, type, dst FROM edges WHERE src = ANY(?)",
                                         [sorted({e for _, e in tests})]):
            if etype == "produced":
                produced[src].append(dst)
        pairs.update((target, ev) for target, exp in tests for ev in produced.get(exp, ()))
    if not pairs:
        return {}
    kinds = {r[0]: (r[1], r[2]) for r in store.sql(
        "SELECT id, type, coalesce(CAST(attrs->>'superseded' AS BOOLEAN), false) FROM nodes WHERE id = ANY(?)",
        [sorted({ev for _, ev in pairs})])}
    out: dict[str, list[str]] = defaultdict(list)
    for target, evidence in sorted(pairs):
        kind = kinds.get(evidence)
        if kind is not None and kind[0] == "evidence" and (include_superseded or not kind[1]):
            out[target].append(evidence)
    return dict(out)


@reads
def typed_neighbors(store: Store, node_id: str) -> list[Neighbor]:
    """One entry per typed edge touching the node, grouped by neighbour type and ranked by the neighbour's own
    edge count (most connected first), then title."""
    edges = store.edges(node_id)  # one indexed lookup per end
    other_ids = [e.dst if e.src == node_id else e.src for e in edges]
    nodes = store.get_nodes(other_ids)
    degree = store.degrees(nodes)
    out = []
    for e, oid in zip(edges, other_ids):
        n = nodes.get(oid)
        if n is None:
            continue
        out.append(Neighbor(id=n.id, type=n.type, title=n.title, text=n.text, edge=e.type,
                            direction="out" if e.src == node_id else "in", degree=degree.get(n.id, 0),
                            edge_attrs=e.attrs))
    type_order = {t: i for i, t in enumerate(NodeType)}
    out.sort(key=lambda nb: (type_order[nb.type], -nb.degree, nb.title.casefold(), nb.edge.value))
    return out


@reads
def similar_for(store: Store, node_id: str, *, k: int = 8, threshold: float = 0.65,
                linked: set[str] | None = None) -> list[Similar]:
    """Similarity neighbours with no typed edge: those the source document states (with its cosine), joined by
    those the encoder finds in stored vectors (marked computed). `linked`: the node's typed neighbours, when the
    caller has them (saves reading its edges again)."""
    from .similarity import computed_neighbors

    stated = store.stated_similar(node_id)
    if linked is None:
        linked = {e.dst if e.src == node_id else e.src for e in store.edges(node_id)}
    computed = dict(computed_neighbors(store, node_id, k=k + len(stated), threshold=threshold))
    out: list[Similar] = []
    seen: set[str] = set()
    for s in stated:
        if s.other_id and s.other_id in linked:
            continue
        score = computed.get(s.other_id) if s.other_id else None
        out.append(Similar(id=s.other_id, type=s.other_type, title=s.other_title, text=s.other_text, score=s.score,
                           origin="document+computed" if score is not None else "document", computed_score=score))
        if s.other_id:
            seen.add(s.other_id)
    extra = [(i, sc) for i, sc in computed.items() if i not in seen][:k]
    nodes = store.get_nodes(i for i, _ in extra)
    for i, sc in extra:
        n = nodes[i]
        out.append(Similar(id=i, type=n.type, title=n.title, text=n.text, score=sc, origin="computed",
                           computed_score=sc))
    return out


@reads
def node_page(store: Store, node_id: str, *, k_similar: int = 8, threshold: float = 0.65,
              stale: StaleCheck | None = None) -> NodePage:
    """The page `show` renders for one node; with `stale`, its stale evidence is marked (`NodePage.stale`)."""
    node = store.get_node(node_id)
    neighbors = typed_neighbors(store, node_id)
    papers = [store.get_node(nb.id) for nb in neighbors
              if nb.edge == EdgeType.extracted_from and nb.direction == "out"]
    docs = [r[0] for r in store.sql("SELECT path FROM node_sources WHERE node_id = ? ORDER BY path", [node_id])]
    report = status_reports(store, [node_id], stale=stale)[node_id] if node.type in STATUS_TYPES else None
    evidence = evidence_for(store, node_id) if node.type in STATUS_TYPES else []
    checked = evidence + ([node] if node.type == NodeType.evidence else [])
    stale_ids = dict(stale(checked)) if stale is not None and checked else {}
    return NodePage(node=node, status=report.status if report else None, status_report=report,
                    source=SourceInfo(papers=papers, documents=docs),
                    neighbors=neighbors, similar=similar_for(store, node_id, k=k_similar, threshold=threshold,
                                                         linked={nb.id for nb in neighbors}),
                    similarity_threshold=threshold, evidence=evidence, stale=stale_ids)


class Hop(BaseModel):
    """A node reached from the start, at `depth` hops, through `edge` from `via`."""

    id: str
    type: NodeType
    title: str
    depth: int
    via: str | None
    edge: EdgeType | None
    direction: Literal["out", "in"] | None


@reads
def neighborhood(store: Store, node_id: str, *, depth: int = 1, edge_types: list[str] | None = None) -> list[Hop]:
    """Breadth-first over typed edges (both directions) up to `depth` hops; one SQL query per level."""
    if depth < 1:
        raise InvalidInput("--depth must be at least 1")
    start = store.get_node(node_id)
    seen = {node_id: Hop(id=start.id, type=start.type, title=start.title, depth=0, via=None, edge=None,
                         direction=None)}
    frontier = [node_id]
    types = [parse_edge_type(t).value for t in edge_types] if edge_types else [t.value for t in EdgeType]
    for d in range(1, depth + 1):
        rows = store.sql("""SELECT src, type, dst FROM edges WHERE type IN (SELECT unnest($2))
            AND (src IN (SELECT unnest($1)) OR dst IN (SELECT unnest($1))) ORDER BY src, type, dst""",
                         [frontier, types])
        found: dict[str, tuple[str, str, str]] = {}
        fset = set(frontier)
        for src, etype, dst in rows:
            for here, there, direction in ((src, dst, "out"), (dst, src, "in")):
                if here in fset and there not in seen and there not in found:
                    found[there] = (here, etype, direction)
        nodes = store.get_nodes(found)
        for nid, (via, etype, direction) in found.items():
            n = nodes[nid]
            seen[nid] = Hop(id=nid, type=n.type, title=n.title, depth=d, via=via, edge=EdgeType(etype),
                            direction=direction)
        frontier = list(found)
        if not frontier:
            break
    return sorted(seen.values(), key=lambda h: (h.depth, h.type.value, h.id))


@reads
def to_networkx(store: Store, *, with_text: bool = True):
    """The whole typed graph as a networkx MultiDiGraph (node and edge attributes JSON-flattened)."""
    import networkx as nx

    g = nx.MultiDiGraph()
    for nid, ntype, title, text, attrs in store.sql("SELECT id, type, title, text, attrs FROM nodes"):
        data: dict[str, Any] = {"type": ntype, "title": title, "attrs": attrs if isinstance(attrs, str) else json.dumps(attrs)}
        if with_text:
            data["text"] = text
        g.add_node(nid, **data)
    for src, etype, dst, attrs, made_by in store.sql("SELECT src, type, dst, attrs, made_by FROM edges"):
        g.add_edge(src, dst, key=etype, type=etype, made_by=made_by,
                   attrs=attrs if isinstance(attrs, str) else json.dumps(attrs))
    return g


class Step(BaseModel):
    id: str
    type: NodeType
    title: str
    edge: EdgeType | None = Field(None, description="Edge from the previous step to this one")
    direction: Literal["out", "in"] | None = None


@reads
def shortest_path(store: Store, a: str, b: str) -> list[Step]:
    """Shortest chain of typed edges between two nodes, edges walked in either direction."""
    import networkx as nx

    for x in (a, b):
        store.get_node(x)
    g = nx.Graph()
    g.add_nodes_from([a, b])
    edge_of: dict[frozenset, tuple[str, str, str]] = {}
    for src, etype, dst in store.sql("SELECT src, type, dst FROM edges ORDER BY src, type, dst"):
        g.add_edge(src, dst)
        edge_of.setdefault(frozenset((src, dst)), (src, etype, dst))
    try:
        ids = nx.shortest_path(g, a, b)
    except nx.NetworkXNoPath:
        raise NotFound(f"no path of typed edges joins {a} and {b}") from None
    nodes = store.get_nodes(ids)
    steps = [Step(id=a, type=nodes[a].type, title=nodes[a].title)]
    for prev, cur in zip(ids, ids[1:]):
        src, etype, dst = edge_of[frozenset((prev, cur))]
        steps.append(Step(id=cur, type=nodes[cur].type, title=nodes[cur].title, edge=EdgeType(etype),
                          direction="out" if src == prev else "in"))
    return steps
