"""GraphML for graph tools (networkx, Gephi, yEd, igraph, Cytoscape), and back.

Every attribute has one key with one GraphML type (numbers as `long`/`double`, booleans as `boolean`, text as
`string`), chosen over all nodes (or all edges) that carry it. Gephi's reader conventions: `label` is the
node's title (the edge's type), `weight` is 1.0 on every edge, and edge ids are unique (`src|type|dst`).

Node data: label, type, text; provenance (made_by, source, source_sha256, created_at, updated_at in ISO 8601 UTC,
documents: the mentioning documents' paths as a JSON list); a claim's or finding's status (and status_detail: which methods gave which verdict) and its evidence
(evidence_supported / _refuted / _inconclusive counts, evidence: one line per current evidence); an evidence
node's verdict, metric, value, ci_low, ci_high, seeds, confidence, criterion, interval_covers, run_id,
experiment, superseded, decisive; each top-level scalar attribute as `attr_<name>` (lists of scalars joined by '; ');
and `attrs_json`, the attributes as JSON, which `claimgraph import` reads to rebuild nodes exactly.
Edge data: label, type, weight, provenance as for nodes, `attr_<name>`, attrs_json.
GraphML carries nodes and edges only: documents, suggestions, stated similarity and runs are not in it.
XML cannot hold most control characters (and parsers turn a carriage return into a newline): in text they are
written as `\\uXXXX` and imported as such; attributes (attrs_json) round-trip exactly.
"""
from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path
from typing import IO, Any

from ..errors import InvalidInput
from ..models import NodeType
from .snapshot import Snapshot, derive, iso, parse_iso, read_snapshot

_NOT_XML = re.compile("[^\t\n\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _xml_safe(v: Any) -> Any:
    """A string with the characters XML 1.0 cannot carry written as \\uXXXX (JSON's escape, so JSON text
    inside stays valid and reads back the same)."""
    return _NOT_XML.sub(lambda m: f"\\u{ord(m.group()):04x}", v) if isinstance(v, str) else v


def _scalar(v: Any) -> Any:
    """A value GraphML can type: bool, int, float or str (lists of scalars joined); None for nested data."""
    if isinstance(v, (bool, int, float, str)):
        return v
    if isinstance(v, list) and all(isinstance(x, (bool, int, float, str)) for x in v):
        return "; ".join(str(x) for x in v)
    return None


def _unify(items: list[dict[str, Any]]) -> None:
    """One type per attribute across `items` (in place): all bool -> boolean, all int -> long,
    ints and floats -> double, anything else -> string."""
    kinds: dict[str, set[type]] = defaultdict(set)
    for d in items:
        for k, v in d.items():
            kinds[k].add(bool if isinstance(v, bool) else int if isinstance(v, int) else type(v))
    for k, ks in kinds.items():
        if len(ks) == 1:
            continue
        cast = float if ks <= {int, float} else str
        for d in items:
            if k in d:
                d[k] = cast(d[k]) if cast is float else (json.dumps(d[k]) if isinstance(d[k], bool) else str(d[k]))


def _prov(row: dict[str, Any]) -> dict[str, Any]:
    out = {"made_by": row["made_by"], "source": row.get("source"), "source_sha256": row.get("source_hash"),
           "created_at": iso(row.get("created_at")), "updated_at": iso(row.get("updated_at"))}
    return {k: v for k, v in out.items() if v is not None}


def to_graph(store: Any, snapshot: Snapshot | None = None):
    """The store as a networkx MultiDiGraph with typed, GraphML-ready attributes."""
    import networkx as nx

    from .jsonld import software_version

    snap = snapshot or read_snapshot(store, vectors=False)
    der = derive(store, snap)
    t = snap.tables
    docs: dict[str, list[str]] = defaultdict(list)
    for r in t["node_sources"]:
        docs[r["node_id"]].append(r["path"])
    edocs: dict[tuple, list[str]] = defaultdict(list)
    for r in t["edge_sources"]:
        edocs[(r["src"], r["type"], r["dst"])].append(r["path"])

    g = nx.MultiDiGraph(claimgraph_version=software_version(), schema_version=snap.schema_version,
                        format="claimgraph-graphml")
    node_data = []
    for n in t["nodes"]:
        d: dict[str, Any] = {"label": n["title"], "type": n["type"], "text": n["text"], **_prov(n)}
        if docs.get(n["id"]):
            d["documents"] = json.dumps(docs[n["id"]], ensure_ascii=False)
        if n["id"] in der.status:
            d["status"] = der.status[n["id"]]
            d["status_detail"] = der.detail[n["id"]]
            evs = der.evidence.get(n["id"], [])
            for verdict in ("supported", "refuted", "inconclusive"):
                d[f"evidence_{verdict}"] = sum(s.verdict == verdict for s in evs)
            if evs:
                d["evidence"] = "\n".join(s.text() for s in evs)
        if n["type"] == NodeType.evidence.value:
            s = der.summaries[n["id"]]
            ev = {"verdict": s.verdict, "metric": s.metric, "value": s.value, "ci_low": s.ci_low,
                  "ci_high": s.ci_high, "seeds": s.n, "confidence": s.confidence, "criterion": s.criterion,
                  "interval_covers": s.interval_covers, "run_id": s.run_id, "experiment": s.experiment,
                  "superseded": s.superseded, "decisive": s.decisive}
            d.update({k: v for k, v in ev.items() if v is not None})
        for k, v in n["attrs"].items():
            if (sv := _scalar(v)) is not None:
                d[f"attr_{k}"] = sv
        d["attrs_json"] = json.dumps(n["attrs"], sort_keys=True, ensure_ascii=False)
        node_data.append((n["id"], d))
    node_data = [(_xml_safe(i), {_xml_safe(k): _xml_safe(v) for k, v in d.items()}) for i, d in node_data]
    _unify([d for _, d in node_data])
    g.add_nodes_from(node_data)
    edge_data = []
    for e in t["edges"]:
        key = (e["src"], e["type"], e["dst"])
        d = {"label": e["type"], "type": e["type"], "weight": 1.0, **_prov(e)}
        if edocs.get(key):
            d["documents"] = json.dumps(edocs[key], ensure_ascii=False)
        for k, v in e["attrs"].items():
            if (sv := _scalar(v)) is not None:
                d[f"attr_{k}"] = sv
        d["attrs_json"] = json.dumps(e["attrs"], sort_keys=True, ensure_ascii=False)
        edge_data.append((e["src"], e["dst"], "|".join(key), d))
    edge_data = [(_xml_safe(a), _xml_safe(b), _xml_safe(k), {_xml_safe(x): _xml_safe(v) for x, v in d.items()})
                 for a, b, k, d in edge_data]
    _unify([d for *_, d in edge_data])
    g.add_edges_from(edge_data)
    return g


def write_graphml(store: Any, f: IO[bytes]) -> None:
    import networkx as nx

    nx.write_graphml(to_graph(store), f, encoding="utf-8", prettyprint=True)


def read_graphml(path: Path | str) -> Snapshot:
    """Nodes and edges (with their provenance and document mentions) from a claimgraph GraphML file."""
    import xml.etree.ElementTree as ET

    import networkx as nx

    try:
        g = nx.read_graphml(path, force_multigraph=True)
    except (nx.NetworkXError, ET.ParseError, ValueError, KeyError) as e:
        raise InvalidInput(f"{path}: not a readable GraphML file: {e}") from None
    if g.graph.get("format") != "claimgraph-graphml":
        raise InvalidInput(f"{path}: not a claimgraph GraphML export (graph attribute format="
                           f"{g.graph.get('format')!r}); only claimgraph's own GraphML can be imported")
    tables: dict[str, list[dict[str, Any]]] = {"nodes": [], "node_sources": [], "edges": [], "edge_sources": []}

    def prov(d: dict[str, Any], where: str) -> dict[str, Any]:
        if "made_by" not in d:
            raise InvalidInput(f"{path}: {where} has no made_by")
        return {"source": d.get("source"), "source_hash": d.get("source_sha256"), "made_by": d["made_by"],
                "created_at": parse_iso(d.get("created_at"), where=f"{path}: {where} created_at"),
                "updated_at": parse_iso(d.get("updated_at"), where=f"{path}: {where} updated_at")}

    def attrs(d: dict[str, Any], where: str) -> dict[str, Any]:
        try:
            return json.loads(d.get("attrs_json") or "{}")
        except ValueError as e:
            raise InvalidInput(f"{path}: {where} attrs_json is not JSON: {e}") from None

    for nid, d in g.nodes(data=True):
        where = f"node {nid}"
        if "type" not in d or "label" not in d:
            raise InvalidInput(f"{path}: {where} has no type or label")
        tables["nodes"].append({"id": nid, "type": d["type"], "title": d["label"], "text": d.get("text", ""),
                                "attrs": attrs(d, where), **prov(d, where)})
        tables["node_sources"] += [{"node_id": nid, "path": p} for p in _documents(d, where)]
    for src, dst, _, d in g.edges(keys=True, data=True):
        where = f"edge {src} -> {dst}"
        if "type" not in d:
            raise InvalidInput(f"{path}: {where} has no type")
        key = {"src": src, "type": d["type"], "dst": dst}
        tables["edges"].append({**key, "attrs": attrs(d, where), **prov(d, where)})
        tables["edge_sources"] += [{**key, "path": p} for p in _documents(d, where)]
    return Snapshot(tables=tables, schema_version=int(g.graph.get("schema_version", 0)))


def _documents(d: dict[str, Any], where: str) -> list[str]:
    try:
        paths = json.loads(d.get("documents") or "[]")
    except ValueError:
        paths = None
    if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
        raise InvalidInput(f"{where}: documents is not a JSON list of paths")
    return paths
