"""TriG nanopublications: one nanopublication per claim or finding, with its evidence.

For a claim C the nanopublication `<base>np/<C>` has four named graphs:
    <np>#head         <np> a np:Nanopublication; np:hasAssertion, np:hasProvenance, np:hasPublicationInfo
    <np>#assertion    C (type, title, text, derived status), its current evidence (verdict, value, interval,
                      criterion, run), and the typed edges that join C and its evidence to other nodes
    <np>#provenance   the assertion prov:wasDerivedFrom C's source document (with its sha256), and
                      prov:wasGeneratedBy the runs that produced the evidence (each run: experiment, times,
                      config hash)
    <np>#pubinfo      who made the nanopublication and when (claimgraph, its version, the export time)
Read-only exchange: `claimgraph import` takes JSON-LD, Parquet or GraphML, not TriG.
"""
from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timezone
from typing import IO, Any

from ..models import NodeType
from ..queries import STATUS_TYPES
from .snapshot import derive, iso, read_snapshot
from .vocab import CG, DCT, NODE_CLASSES, NP, PROV, RDF, RDFS, SCHEMA, XSD, Iris


def _expand(curie: str) -> str:
    prefix, local = curie.split(":", 1)
    return {"cg": CG, "prov": PROV, "schema": SCHEMA}[prefix] + local


def nanopub_dataset(store: Any, *, base: str | None = None):
    """An rdflib Dataset holding one nanopublication per claim and finding."""
    from rdflib import Dataset, Literal, URIRef
    from rdflib.namespace import Namespace

    from .jsonld import Sources, software_version

    iris = Iris(base) if base else Iris()
    snap = read_snapshot(store, vectors=False)
    der = derive(store, snap)
    t = snap.tables
    nodes = {n["id"]: n for n in t["nodes"]}
    runs = {r["run_id"]: r for r in t["runs"]}
    src = Sources(snap, iris)
    edges_of: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in t["edges"]:
        edges_of[row["src"]].append(row)
        edges_of[row["dst"]].append(row)

    ds = Dataset()
    for prefix, ns in (("np", NP), ("prov", PROV), ("schema", SCHEMA), ("dct", DCT), ("cg", CG), ("xsd", XSD)):
        ds.bind(prefix, Namespace(ns))
    U = URIRef
    now = Literal(iso(datetime.now(timezone.utc).replace(tzinfo=None)), datatype=U(XSD + "dateTime"))
    agent = U(iris.agent)
    a = U(RDF + "type")

    def lit(v: Any) -> Literal:
        return Literal(v)

    def time(v: datetime) -> Literal:
        return Literal(iso(v), datatype=U(XSD + "dateTime"))

    for cid, n in nodes.items():
        if NodeType(n["type"]) not in STATUS_TYPES:
            continue
        np_iri = iris.nanopub(cid)
        head, assertion = U(np_iri + "#head"), U(np_iri + "#assertion")
        provenance, pubinfo = U(np_iri + "#provenance"), U(np_iri + "#pubinfo")
        h = ds.graph(head)
        h.add((U(np_iri), a, U(NP + "Nanopublication")))
        h.add((U(np_iri), U(NP + "hasAssertion"), assertion))
        h.add((U(np_iri), U(NP + "hasProvenance"), provenance))
        h.add((U(np_iri), U(NP + "hasPublicationInfo"), pubinfo))

        g = ds.graph(assertion)
        c = U(iris.node(cid))
        for cls in NODE_CLASSES[NodeType(n["type"])]:
            g.add((c, a, U(_expand(cls))))
        g.add((c, U(DCT + "title"), lit(n["title"])))
        if n["text"]:
            g.add((c, U(DCT + "description"), lit(n["text"])))
        g.add((c, U(CG + "status"), lit(der.status[cid])))
        g.add((c, U(CG + "statusDetail"), lit(der.detail[cid])))
        evidence = der.evidence.get(cid, [])
        for s in evidence:
            e = U(iris.node(s.id))
            g.add((c, U(CG + "evidence"), e))
            g.add((e, a, U(CG + "Evidence")))
            g.add((e, U(DCT + "title"), lit(nodes[s.id]["title"])))
            for term, v in (("verdict", s.verdict), ("metric", s.metric), ("value", s.value), ("ciLow", s.ci_low),
                            ("ciHigh", s.ci_high), ("seedCount", s.n), ("confidence", s.confidence),
                            ("criterion", s.criterion), ("intervalCovers", s.interval_covers), ("runId", s.run_id),
                            ("decisive", s.decisive)):
                if v is not None:
                    g.add((e, U(CG + term), lit(v)))
            if s.run_id:
                g.add((e, U(PROV + "wasGeneratedBy"), U(iris.run(s.run_id))))
        for x in [cid] + [s.id for s in evidence]:
            for edge in edges_of.get(x, []):
                g.add((U(iris.node(edge["src"])), U(CG + edge["type"]), U(iris.node(edge["dst"]))))

        p = ds.graph(provenance)
        p.add((assertion, U(PROV + "generatedAtTime"), time(n["updated_at"])))
        p.add((assertion, U(PROV + "wasAttributedTo"), agent))
        for row in [n] + [nodes[s.id] for s in evidence]:
            for key, value in src.prov(row).items():
                if key == "wasDerivedFrom":
                    ent = src.entities[value]
                    p.add((assertion, U(PROV + "wasDerivedFrom"), U(value)))
                    p.add((U(value), a, U(PROV + "Entity")))
                    p.add((U(value), U(CG + "path"), lit(ent["path"])))
                    if ent.get("sha256"):
                        p.add((U(value), U(CG + "sha256"), lit(ent["sha256"])))
        for s in evidence:
            if not s.run_id:
                continue
            run = U(iris.run(s.run_id))
            p.add((assertion, U(PROV + "wasGeneratedBy"), run))
            p.add((run, a, U(PROV + "Activity")))
            r = runs.get(s.run_id)
            if s.experiment:
                p.add((run, U(PROV + "used"), U(iris.node(s.experiment))))
            if r is not None:
                p.add((run, U(CG + "configHash"), lit(r["config_hash"])))
                p.add((run, U(CG + "runDir"), lit(r["run_dir"])))
                for term, col in (("startedAtTime", "started_at"), ("endedAtTime", "ended_at")):
                    if r[col] is not None:
                        p.add((run, U(PROV + term), time(r[col])))

        i = ds.graph(pubinfo)
        i.add((U(np_iri), U(DCT + "created"), now))
        i.add((U(np_iri), U(PROV + "wasAttributedTo"), agent))
        i.add((U(np_iri), U(RDFS + "label"), lit(f"{n['type']}: {n['title']}")))
        i.add((agent, a, U(PROV + "SoftwareAgent")))
        i.add((agent, U(SCHEMA + "name"), lit("claimgraph")))
        i.add((agent, U(SCHEMA + "softwareVersion"), lit(software_version())))
    return ds


def write_trig(store: Any, f: IO[bytes], *, base: str | None = None) -> None:
    f.write(nanopub_dataset(store, base=base).serialize(format="trig", encoding="utf-8"))
