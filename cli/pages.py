"""The `show` page, laid out in the sections of a claim page: type and status, id and title, description,
source paper, neighbourhood ranked by edge count (grouped by type), evidence, and related-by-similarity."""
from __future__ import annotations

from collections import OrderedDict

from claimgraph.graph.models import EdgeType, Neighbor, NodeType
from claimgraph.graph.queries import NodePage

from .render import lines

PLURAL = {NodeType.paper: "Papers", NodeType.claim: "Claims", NodeType.finding: "Findings",
          NodeType.method: "Methods", NodeType.question: "Questions", NodeType.topic: "Topics",
          NodeType.experiment: "Experiments", NodeType.evidence: "Evidence"}


def paper_line(p) -> str:
    a = p.attrs
    authors = list(a.get("authors") or [])
    more = f" +{a['authors_more']}" if a.get("authors_more") else (" et al." if a.get("et_al") else "")
    year = f"({a['year']})" if a.get("year") else ""
    who = " · ".join(authors) + more
    parts = [x for x in (year, who) if x]
    head = " · ".join(parts)
    title = p.title if a.get("title_known", True) else ""
    return "  ".join(x for x in (head, title) if x) or p.title


def neighbour_groups(page: NodePage) -> OrderedDict[NodeType, OrderedDict[str, list[Neighbor]]]:
    """The page's neighbourhood section: typed neighbours grouped by node type (in NodeType order) and, within a
    type, by neighbour (most connected first, as `typed_neighbors` ranks them), each with every edge joining
    it to the page's node. The source paper and the evidence have their own sections and are left out."""
    groups: OrderedDict[NodeType, OrderedDict[str, list[Neighbor]]] = OrderedDict()
    in_evidence = {e.id for e in page.evidence}
    for nb in page.neighbors:
        if (nb.edge == EdgeType.extracted_from and nb.direction == "out") or nb.id in in_evidence:
            continue  # shown as the source paper, or in the evidence section
        groups.setdefault(nb.type, OrderedDict()).setdefault(nb.id, []).append(nb)
    return groups


def page_json(page: NodePage) -> dict:
    """`show --json`: node, status, source, typed neighbours, similarity (contract keys first)."""
    node = page.node.model_dump(mode="json")
    node["status"] = page.status
    node["stale"] = page.stale.get(page.node.id)
    return {
        "node": node,
        "status": page.status,
        "status_report": page.status_report.model_dump(mode="json") if page.status_report else None,
        "source": {"papers": [{"id": p.id, "title": p.title, **{k: p.attrs.get(k) for k in ("year", "authors")}}
                              for p in page.source.papers], "documents": page.source.documents},
        "neighbors": [{"id": n.id, "type": n.type.value, "title": n.title, "edge": n.edge.value,
                       "direction": n.direction, "degree": n.degree, "text": n.text, "edge_attrs": n.edge_attrs}
                      for n in page.neighbors],
        "similar": [{"id": s.id, "type": s.type.value if s.type else None, "title": s.title, "score": s.score,
                     "origin": s.origin, "computed_score": s.computed_score, "text": s.text} for s in page.similar],
        "evidence": [{"id": e.id, "title": e.title, "verdict": e.attrs.get("verdict"), "run_id": e.attrs.get("run_id"),
                      "experiment": e.attrs.get("experiment"), "decision": e.attrs.get("decision"),
                      "criterion": e.attrs.get("criterion"), "model": e.attrs.get("model"),
                      "data": e.attrs.get("data"), "decisive": e.attrs.get("decisive", True),
                      "stale": page.stale.get(e.id)} for e in page.evidence],
    }


def render_page(page: NodePage) -> None:
    n = page.node
    out: list = [(n.type.value, "bold")]
    status: list[str] = []
    if page.status_report:
        status.append(page.status_report.describe())
    if n.attrs.get("page_status"):
        status.append(f"page status: {n.attrs['page_status']}")
    if status:
        out.append(" · ".join(status))
    out += [(n.id, "dim"), (n.title, "bold")]
    if n.text:
        out.append(n.text)
    if page.source.papers:
        out += ["", ("Source paper", "bold underline")]
        for p in page.source.papers:
            out.append(f"extracted_from {paper_line(p)}")
            out.append((f"  {p.id}", "dim"))
    if page.stale.get(n.id):
        out.append((f"STALE: {page.stale[n.id]} (`claimgraph run --stale` re-runs it)", "yellow"))
    if n.provenance:
        prov = n.provenance
        src = f"{prov.made_by.value}" + (f" from {prov.source}" if prov.source else "")
        out.append((f"provenance: {src} at {prov.at:%Y-%m-%d %H:%M} UTC", "dim"))

    groups = neighbour_groups(page)
    if groups:
        out += ["", ("Neighborhood — ranked by edge-count", "bold underline")]
        for ntype, items in groups.items():
            out.append((f"{PLURAL[ntype]} ({len(items)})", "bold"))
            for nid, edges in items.items():
                first = edges[0]
                labels = ", ".join(("" if e.direction == "out" else "← ") + e.edge.value for e in edges)
                desc = f" — {first.text}" if first.text else ""
                out.append(f"- {first.title}  [{labels}]{desc}")
                out.append((f"    {nid} · {first.degree} edges", "dim"))
    related = n.attrs.get("related_works") or []  # a summary page's works known only by their authors
    if related:
        out += ["", (f"Related works given by their authors ({len(related)})", "bold underline")]
        for r in related:
            who = ", ".join(r.get("authors") or []) + (" et al." if r.get("et_al") else "")
            year = f" ({r['year']})" if r.get("year") else ""
            out.append(f"- {who}{year}  [{r.get('relation')}; title not given]")
    if page.evidence:
        out += ["", (f"Evidence ({len(page.evidence)})", "bold underline")]
        for e in page.evidence:
            marks = (" [not deciding]" if e.attrs.get("decisive", True) is False else "") + \
                (" [STALE]" if e.id in page.stale else "")
            out.append(f"- {e.title}{marks}")
            setting = " · ".join(str(e.attrs[k]) for k in ("model", "data") if e.attrs.get(k))
            out.append((f"    {e.id} · run {e.attrs.get('run_id')}" + (f" · {setting}" if setting else ""), "dim"))
            if e.id in page.stale:
                out.append((f"    stale: {page.stale[e.id]}", "yellow"))
    out += ["", (f"Related by similarity ({len(page.similar)})", "bold underline"),
            (f"cosine ≥ {page.similarity_threshold:g} · no typed edge", "dim")]
    for s in page.similar:
        kind = s.type.value if s.type else "?"
        score = f"{s.score:.3f}" if s.score is not None else "—"
        origin = {"document": "stated", "computed": "computed", "document+computed": "stated"}[s.origin]
        extra = f", encoder {s.computed_score:.3f}" if s.origin == "document+computed" and s.computed_score else ""
        desc = f" — {s.text}" if s.text else ""
        out.append(f"- {s.title}  [{kind} {score} {origin}{extra}]{desc}")
        if s.id:
            out.append((f"    {s.id}", "dim"))
    lines(out)
