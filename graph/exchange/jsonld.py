"""JSON-LD: the graph as linked data, and back.

One JSON object per node, under `@graph` beside the `@context` (nothing else at the top level, so every node
lands in the default graph). A node's IRI is `<base><node id>`; its typed edges are statements between node
IRIs (`"supports": [<claim IRI>]`), and each edge is also described by an `rdf:Statement` with its own IRI
carrying its provenance and attributes. Provenance is PROV-O: `wasDerivedFrom` the source document (an entity
with its sha256 and its path relative to the store's folder), `wasGeneratedBy` the run for experiment results,
`generatedAtTime`, `wasAttributedTo` claimgraph. Papers are also schema.org ScholarlyArticles (name, author,
datePublished, sameAs their DOI/arXiv IRIs). Claims and findings carry their derived status and evidence;
evidence carries verdict, value, interval, criterion and run.

Each node and edge keeps its type-specific attributes as one JSON literal (`attrs`, rdf:JSON) next to the
vocabulary terms, so `claimgraph import` rebuilds the store exactly. Import reads the stored fields from cg:,
dct: and prov: terms (through pyld, so any compaction or flattening of the document reads the same); the
schema.org terms and derived values (status, evidence summaries) are for readers and are recomputed.
"""
from __future__ import annotations

import os
from collections import defaultdict
from datetime import datetime, timezone
from functools import cache
from typing import Any

from ..errors import InvalidInput
from ..models import EdgeType, NodeType
from .snapshot import FORMAT_VERSION, Derived, Snapshot, derive, iso, parse_iso, read_snapshot
from .vocab import CG, CLASS_TYPES, CONTEXT_IRI, DCT, NODE_CLASSES, PROV, RDF, Iris, context, paper_same_as


@cache
def software_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("claimgraph")
    except metadata.PackageNotFoundError:
        return "unknown"


class Sources:
    """Resolves a row's provenance to the IRIs it names: source documents (by path and hash) and runs."""

    def __init__(self, snapshot: Snapshot, iris: Iris):
        self.iris = iris
        t = snapshot.tables
        self.doc_hash = {d["path"]: d["content_hash"] for d in t["documents"]}
        self.run_by_dir = {r["run_dir"]: r["run_id"] for r in t["runs"]}
        self.entities: dict[str, dict[str, Any]] = {}
        for d in t["documents"]:
            e = self.entity(d["path"], d["content_hash"])
            e.update({"format": d["format"], "ingestedAt": iso(d["ingested_at"])})
            if d["title"] is not None:
                e["title"] = d["title"]

    def entity(self, path: str, content_hash: str | None) -> dict[str, Any]:
        iri = self.iris.document(path, content_hash)
        if iri not in self.entities:
            e: dict[str, Any] = {"id": iri, "type": ["prov:Entity", "schema:DigitalDocument"], "path": path,
                                 "name": os.path.basename(path) or path}
            if content_hash:
                e["sha256"] = content_hash
            self.entities[iri] = e
        return self.entities[iri]

    def mention(self, path: str) -> str:
        return self.entity(path, self.doc_hash.get(path))["id"]

    def prov(self, row: dict[str, Any]) -> dict[str, Any]:
        """PROV terms for a node, edge or stated-similarity row."""
        out: dict[str, Any] = {}
        made_by, source = row.get("made_by"), row.get("source")
        if source and made_by in (None, "parsed"):
            out["wasDerivedFrom"] = self.entity(source, row.get("source_hash"))["id"]
        elif source and made_by == "experiment":
            run_id = self.run_by_dir.get(source) or os.path.basename(source.rstrip("/"))
            out["wasGeneratedBy"] = self.iris.run(run_id)
        if made_by in ("parsed", "experiment", "accepted-suggestion"):
            out["wasAttributedTo"] = self.iris.agent
        return out


def _stamp(row: dict[str, Any], obj: dict[str, Any]) -> None:
    for key, col in (("created", "created_at"), ("modified", "updated_at")):
        if row.get(col) is not None:
            obj[key] = iso(row[col])
    if row.get("updated_at") is not None:
        obj["generatedAtTime"] = iso(row["updated_at"])
    for key, col in (("madeBy", "made_by"), ("source", "source"), ("sourceHash", "source_hash")):
        if row.get(col) is not None:
            obj[key] = row[col]


def _evidence_terms(s: Any, iris: Iris) -> dict[str, Any]:
    out: dict[str, Any] = {"verdict": s.verdict, "metric": s.metric, "value": s.value, "ciLow": s.ci_low,
                           "ciHigh": s.ci_high, "seedCount": s.n, "confidence": s.confidence,
                           "criterion": s.criterion, "intervalCovers": s.interval_covers, "superseded": s.superseded,
                           "decisive": s.decisive, "runId": s.run_id, "kind": s.kind}
    if s.run_id:
        out["wasGeneratedBy"] = iris.run(s.run_id)
    if s.experiment:
        out["experiment"] = iris.node(s.experiment)
    return {k: v for k, v in out.items() if v is not None}


def jsonld_document(store: Any, *, base: str | None = None, inline_context: bool = True,
                    snapshot: Snapshot | None = None) -> dict[str, Any]:
    """The store as a JSON-LD document (compacted with claimgraph's context, inline or by CONTEXT_IRI)."""
    iris = Iris(base) if base else Iris()
    snap = snapshot or read_snapshot(store, vectors=False)
    der: Derived = derive(store, snap)
    t = snap.tables
    src = Sources(snap, iris)
    out_edges: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for e in t["edges"]:
        out_edges[e["src"]][e["type"]].append(iris.node(e["dst"]))
    mentions: dict[str, list[str]] = defaultdict(list)
    for r in t["node_sources"]:
        mentions[r["node_id"]].append(src.mention(r["path"]))
    edge_mentions: dict[tuple, list[str]] = defaultdict(list)
    for r in t["edge_sources"]:
        edge_mentions[(r["src"], r["type"], r["dst"])].append(src.mention(r["path"]))

    graph: list[dict[str, Any]] = []
    for n in t["nodes"]:
        ntype = NodeType(n["type"])
        obj: dict[str, Any] = {"id": iris.node(n["id"]), "type": NODE_CLASSES[ntype], "title": n["title"]}
        if n["text"]:
            obj["description"] = n["text"]
        _stamp(n, obj)
        obj.update(src.prov(n))
        if n["id"] in mentions:
            obj["mentionedIn"] = mentions[n["id"]]
        a = n["attrs"]
        if ntype == NodeType.paper:
            obj["name"] = n["title"]
            if isinstance(a.get("authors"), list) and a["authors"]:
                obj["author"] = [str(x) for x in a["authors"]]
            if isinstance(a.get("year"), int) and not isinstance(a.get("year"), bool):
                obj["datePublished"] = f"{a['year']:04d}"
            same = paper_same_as(a)
            if same:
                obj["sameAs"] = same
        if n["id"] in der.status:
            obj["status"] = der.status[n["id"]]
            obj["statusDetail"] = der.detail[n["id"]]
            evs = der.evidence.get(n["id"], [])
            if evs:
                obj["evidence"] = [iris.node(s.id) for s in evs]
                obj["evidenceSummary"] = [s.text() for s in evs]
        if ntype == NodeType.evidence:
            obj.update(_evidence_terms(der.summaries[n["id"]], iris))
        for etype, targets in sorted(out_edges.get(n["id"], {}).items()):
            obj[etype] = targets
        obj["attrs"] = a
        graph.append(obj)

    for e in t["edges"]:
        key = (e["src"], e["type"], e["dst"])
        obj = {"id": iris.edge(*key), "type": ["rdf:Statement", "cg:Edge"], "subject": iris.node(e["src"]),
               "predicate": CG + e["type"], "object": iris.node(e["dst"])}
        _stamp(e, obj)
        obj.update(src.prov(e))
        if key in edge_mentions:
            obj["mentionedIn"] = edge_mentions[key]
        obj["attrs"] = e["attrs"]
        graph.append(obj)

    for s in t["stated_similarity"]:
        obj = {"id": iris.similar(s["node_id"], s["other_key"]), "type": "cg:StatedSimilarity",
               "node": iris.node(s["node_id"]), "otherKey": s["other_key"], "otherTitle": s["other_title"],
               "otherText": s["other_text"]}
        if s["other_id"]:
            obj["other"] = iris.node(s["other_id"])
        for k, c in (("otherType", "other_type"), ("score", "score"), ("source", "source"),
                     ("sourceHash", "source_hash")):
            if s[c] is not None:
                obj[k] = s[c]
        obj["created"] = iso(s["created_at"])
        if s["source"]:
            obj["wasDerivedFrom"] = src.entity(s["source"], s["source_hash"])["id"]
        graph.append(obj)

    for g in t["suggestions"]:
        if g["state"] == "open":  # open pairs are recomputed by `claimgraph suggest`; decisions are data
            continue
        obj = {"id": iris.suggestion(g["a"], g["b"]), "type": "cg:Suggestion", "pairA": iris.node(g["a"]),
               "pairB": iris.node(g["b"]), "score": g["score"], "duplicate": g["duplicate"], "state": g["state"],
               "model": g["model"], "created": iso(g["created_at"])}
        if g["edge_type"]:
            obj["edgeType"] = g["edge_type"]
        if g["decided_at"]:
            obj["decidedAt"] = iso(g["decided_at"])
        graph.append(obj)

    for r in t["runs"]:
        obj = {"id": iris.run(r["run_id"]), "type": ["prov:Activity", "cg:Run"], "runId": r["run_id"],
               "experiment": iris.node(r["experiment_id"]), "used": iris.node(r["experiment_id"]),
               "status": r["status"], "configHash": r["config_hash"], "runDir": r["run_dir"],
               "created": iso(r["created_at"]), "wasAttributedTo": iris.agent}
        for k, c in (("device", "device"), ("pid", "pid"), ("host", "host"), ("error", "error"),
                     ("verdict", "verdict")):
            if r[c] is not None:
                obj[k] = r[c]
        for k, c in (("startedAtTime", "started_at"), ("endedAtTime", "ended_at")):
            if r[c] is not None:
                obj[k] = iso(r[c])
        if r["evidence_id"]:
            obj["generated"] = iris.node(r["evidence_id"])
        graph.append(obj)

    graph.extend(src.entities.values())
    graph.append({"id": iris.agent, "type": ["prov:SoftwareAgent", "schema:SoftwareApplication"],
                  "name": "claimgraph", "softwareVersion": software_version()})
    graph.append({"id": iris.dataset, "type": ["cg:Export", "prov:Entity"], "base": iris.base,
                  "schemaVersion": snap.schema_version, "formatVersion": FORMAT_VERSION,
                  "generatedAtTime": iso(datetime.now(timezone.utc).replace(tzinfo=None)),
                  "wasAttributedTo": iris.agent})
    return {"@context": context() if inline_context else CONTEXT_IRI, "@graph": graph}


# -- import ---------------------------------------------------------------------------------------------------
class _Obj:
    """One expanded JSON-LD node object, read by full IRI, with errors that name it."""

    def __init__(self, raw: dict[str, Any]):
        self.raw = raw
        self.id = raw.get("@id", "")
        self.types = set(raw.get("@type", []))

    def values(self, iri: str) -> list[Any]:
        out = []
        for v in self.raw.get(iri, []):
            if "@id" in v:
                out.append(v["@id"])
            elif "@value" in v:
                out.append(v["@value"])
        return out

    def get(self, iri: str, default: Any = None) -> Any:
        vals = self.values(iri)
        if len(vals) > 1:
            raise InvalidInput(f"JSON-LD object {self.id}: {iri} has {len(vals)} values, one expected")
        return vals[0] if vals else default

    def need(self, iri: str) -> Any:
        v = self.get(iri)
        if v is None:
            raise InvalidInput(f"JSON-LD object {self.id}: {iri} is missing")
        return v

    def time(self, iri: str) -> datetime | None:
        return parse_iso(self.get(iri), where=f"JSON-LD object {self.id}: {iri}")


def read_jsonld(doc: Any, *, base: str | None = None) -> Snapshot:
    """A snapshot from a JSON-LD document that claimgraph exported (any compaction or flattening of it)."""
    from pyld import jsonld
    from pyld.jsonld import JsonLdError

    from .vocab import document_loader

    try:
        flat = jsonld.flatten(doc, None, {"documentLoader": document_loader()})
    except JsonLdError as e:
        cause = getattr(e, "cause", None)
        if isinstance(cause, InvalidInput):
            raise cause from None
        raise InvalidInput(f"not valid JSON-LD: {e.type if hasattr(e, 'type') else e}: {e}") from None
    objs = [_Obj(o) for o in (flat if isinstance(flat, list) else flat.get("@graph", []))]
    export = [o for o in objs if CG + "Export" in o.types]
    if base is None:
        base = export[0].get(CG + "base") if export else None
    iris = Iris(base) if base else Iris()
    schema_version = int(export[0].get(CG + "schemaVersion", 0)) if export else 0

    entities = {o.id: o for o in objs if PROV + "Entity" in o.types and o.get(CG + "path") is not None}

    def doc_path(iri: str, where: str) -> str:
        if iri not in entities:
            raise InvalidInput(f"JSON-LD object {where}: document {iri} is not described (no cg:path)")
        return entities[iri].need(CG + "path")

    def node_id(iri: str) -> str:
        return iris.node_id(iri)

    def row_prov(o: _Obj) -> dict[str, Any]:
        return {"source": o.get(CG + "source"), "source_hash": o.get(CG + "sourceHash"),
                "made_by": o.need(CG + "madeBy"), "created_at": o.time(DCT + "created"),
                "updated_at": o.time(DCT + "modified")}

    tables: dict[str, list[dict[str, Any]]] = {k: [] for k in
                                               ("nodes", "node_sources", "edges", "edge_sources", "documents",
                                                "stated_similarity", "suggestions", "runs")}
    for o in objs:
        node_types = [CLASS_TYPES[t] for t in o.types if t in CLASS_TYPES]
        if node_types:
            if len(node_types) > 1:
                raise InvalidInput(f"JSON-LD object {o.id} has two node types: {', '.join(t.value for t in node_types)}")
            nid = node_id(o.id)
            tables["nodes"].append({"id": nid, "type": node_types[0].value, "title": o.need(DCT + "title"),
                                    "text": o.get(DCT + "description", ""), "attrs": o.get(CG + "attrs", {}),
                                    **row_prov(o)})
            tables["node_sources"] += [{"node_id": nid, "path": doc_path(i, o.id)} for i in o.values(CG + "mentionedIn")]
        elif CG + "Edge" in o.types:
            pred = o.need(RDF + "predicate")
            etype = pred[len(CG):] if pred.startswith(CG) else pred
            try:
                EdgeType(etype)
            except ValueError:
                raise InvalidInput(f"JSON-LD object {o.id}: unknown edge type {pred}") from None
            key = {"src": node_id(o.need(RDF + "subject")), "type": etype, "dst": node_id(o.need(RDF + "object"))}
            tables["edges"].append({**key, "attrs": o.get(CG + "attrs", {}), **row_prov(o)})
            tables["edge_sources"] += [{**key, "path": doc_path(i, o.id)} for i in o.values(CG + "mentionedIn")]
        elif CG + "StatedSimilarity" in o.types:
            other = o.get(CG + "other")
            tables["stated_similarity"].append({
                "node_id": node_id(o.need(CG + "node")), "other_key": o.need(CG + "otherKey"),
                "other_id": node_id(other) if other else None, "other_title": o.need(CG + "otherTitle"),
                "other_type": o.get(CG + "otherType"), "other_text": o.get(CG + "otherText", ""),
                "score": o.get(CG + "score"), "source": o.get(CG + "source"), "source_hash": o.get(CG + "sourceHash"),
                "created_at": o.time(DCT + "created")})
        elif CG + "Suggestion" in o.types:
            tables["suggestions"].append({
                "a": node_id(o.need(CG + "pairA")), "b": node_id(o.need(CG + "pairB")), "score": o.need(CG + "score"),
                "duplicate": o.need(CG + "duplicate"), "state": o.need(CG + "state"), "edge_type": o.get(CG + "edgeType"),
                "model": o.need(CG + "model"), "created_at": o.time(DCT + "created"),
                "decided_at": o.time(CG + "decidedAt")})
        elif CG + "Run" in o.types:
            ev = o.get(PROV + "generated")
            tables["runs"].append({
                "run_id": o.need(CG + "runId"), "experiment_id": node_id(o.need(CG + "experiment")),
                "config_hash": o.need(CG + "configHash"), "status": o.need(CG + "status"),
                "device": o.get(CG + "device"), "run_dir": o.need(CG + "runDir"), "pid": o.get(CG + "pid"),
                "host": o.get(CG + "host"), "created_at": o.time(DCT + "created"),
                "started_at": o.time(PROV + "startedAtTime"), "ended_at": o.time(PROV + "endedAtTime"),
                "error": o.get(CG + "error"), "verdict": o.get(CG + "verdict"),
                "evidence_id": node_id(ev) if ev else None})
        elif o.id in entities and o.get(CG + "ingestedAt") is not None:
            tables["documents"].append({"path": o.need(CG + "path"), "content_hash": o.need(CG + "sha256"),
                                        "format": o.need(DCT + "format"), "title": o.get(DCT + "title"),
                                        "ingested_at": o.time(CG + "ingestedAt")})
    return Snapshot(tables=tables, schema_version=schema_version)
