"""TriG nanopublications: one nanopublication per claim or finding, with its evidence.

For a claim C the nanopublication `<base>np/<C>` has four named graphs:
    <np>#head         <np> a np:Nanopublication; np:hasAssertion, np:hasProvenance, np:hasPublicationInfo
    <np>#assertion    C (type, title, text, derived status), its current evidence (verdict, value, interval,
                      criterion, run), and the typed edges that join C and its evidence to other nodes
    <np>#provenance   the assertion prov:wasDerivedFrom C's source document (with its sha256), and
                      prov:wasGeneratedBy the runs that produced the evidence (each run: experiment, times,
                      config hash)
    <np>#pubinfo      who made the nanopublication and when (claimgraph, its version, the export time)
Read-only exchange: `claimgraph import` takes JSON-LD, Parquet or GraphML, not TriG. Written directly (one
triple per line inside each graph block, N-Triples escaping), which keeps it linear in the store's size.
"""
from __future__ import annotations

import math
import re
from collections import defaultdict
from datetime import datetime, timezone
from typing import IO, Any

from ..models import NodeType
from ..queries import STATUS_TYPES
from .snapshot import derive, iso, read_snapshot
from .vocab import CG, DCT, NODE_CLASSES, NP, PROV, RDF, RDFS, SCHEMA, XSD, Iris

PREFIXES = {"np": NP, "prov": PROV, "schema": SCHEMA, "dct": DCT, "cg": CG, "xsd": XSD, "rdfs": RDFS, "rdf": RDF}
_LOCAL = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_IRI_UNSAFE = re.compile(r'[\x00-\x20<>"{}|^`\\]')
_ECHAR = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_STR_UNSAFE = re.compile(r'[\\"\n\r\t\x00-\x1f\x7f]')


def _iri(iri: str) -> str:
    """An IRI term: a prefixed name for the vocabularies above, else <...> with unsafe characters %-encoded."""
    for prefix, ns in PREFIXES.items():
        if iri.startswith(ns) and _LOCAL.fullmatch(iri[len(ns):]):
            return f"{prefix}:{iri[len(ns):]}"
    return "<" + _IRI_UNSAFE.sub(lambda m: "".join(f"%{b:02X}" for b in m.group().encode()), iri) + ">"


def _lit(v: Any) -> str:
    """A literal: strings escaped as N-Triples does, numbers and booleans and times typed with XSD."""
    if isinstance(v, bool):
        return f'"{str(v).lower()}"^^xsd:boolean'
    if isinstance(v, int):
        return f'"{v}"^^xsd:integer'
    if isinstance(v, float):
        text = "NaN" if math.isnan(v) else ("INF" if v > 0 else "-INF") if math.isinf(v) else repr(v)
        return f'"{text}"^^xsd:double'
    if isinstance(v, datetime):
        return f'"{iso(v)}"^^xsd:dateTime'
    text = _STR_UNSAFE.sub(lambda m: _ECHAR.get(m.group(), f"\\u{ord(m.group()):04X}"), str(v))
    return f'"{text}"'


def _expand(curie: str) -> str:
    prefix, local = curie.split(":", 1)
    return PREFIXES[prefix] + local


def nanopub_graphs(store: Any, *, base: str | None = None) -> dict[str, list[str]]:
    """Named graph IRI -> its triples as TriG lines, four graphs per claim and finding (see the module docstring)."""
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
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    agent = iris.agent
    out: dict[str, list[str]] = {}

    def graph(name: str) -> Any:
        lines = out.setdefault(name, [])

        def add(s: str, p: str, o: str, *, literal: Any = None) -> None:
            lines.append(f"{_iri(s)} {_iri(p)} {_lit(literal) if o is None else _iri(o)} .")
        return add

    a = RDF + "type"
    for cid, n in nodes.items():
        if NodeType(n["type"]) not in STATUS_TYPES:
            continue
        np_iri = iris.nanopub(cid)
        assertion, provenance, pubinfo = np_iri + "#assertion", np_iri + "#provenance", np_iri + "#pubinfo"
        h = graph(np_iri + "#head")
        h(np_iri, a, NP + "Nanopublication")
        h(np_iri, NP + "hasAssertion", assertion)
        h(np_iri, NP + "hasProvenance", provenance)
        h(np_iri, NP + "hasPublicationInfo", pubinfo)

        g = graph(assertion)
        c = iris.node(cid)
        for cls in NODE_CLASSES[NodeType(n["type"])]:
            g(c, a, _expand(cls))
        g(c, DCT + "title", None, literal=n["title"])
        if n["text"]:
            g(c, DCT + "description", None, literal=n["text"])
        g(c, CG + "status", None, literal=der.status[cid])
        g(c, CG + "statusDetail", None, literal=der.detail[cid])
        evidence = der.evidence.get(cid, [])
        for s in evidence:
            e = iris.node(s.id)
            g(c, CG + "evidence", e)
            g(e, a, CG + "Evidence")
            g(e, DCT + "title", None, literal=nodes[s.id]["title"])
            for term, v in (("verdict", s.verdict), ("metric", s.metric), ("value", s.value), ("ciLow", s.ci_low),
                            ("ciHigh", s.ci_high), ("seedCount", s.n), ("confidence", s.confidence),
                            ("criterion", s.criterion), ("intervalCovers", s.interval_covers), ("runId", s.run_id),
                            ("decisive", s.decisive)):
                if v is not None:
                    g(e, CG + term, None, literal=v)
            if s.run_id:
                g(e, PROV + "wasGeneratedBy", iris.run(s.run_id))
        seen: set[tuple[str, str, str]] = set()
        for x in [cid] + [s.id for s in evidence]:
            for edge in edges_of.get(x, []):
                key = (edge["src"], edge["type"], edge["dst"])
                if key not in seen:
                    seen.add(key)
                    g(iris.node(edge["src"]), CG + edge["type"], iris.node(edge["dst"]))

        p = graph(provenance)
        p(assertion, PROV + "generatedAtTime", None, literal=n["updated_at"])
        p(assertion, PROV + "wasAttributedTo", agent)
        derived: set[str] = set()
        for row in [n] + [nodes[s.id] for s in evidence]:
            doc = src.prov(row).get("wasDerivedFrom")
            if doc and doc not in derived:
                derived.add(doc)
                ent = src.entities[doc]
                p(assertion, PROV + "wasDerivedFrom", doc)
                p(doc, a, PROV + "Entity")
                p(doc, CG + "path", None, literal=ent["path"])
                if ent.get("sha256"):
                    p(doc, CG + "sha256", None, literal=ent["sha256"])
        for run_id in dict.fromkeys(s.run_id for s in evidence if s.run_id):
            run = iris.run(run_id)
            p(assertion, PROV + "wasGeneratedBy", run)
            p(run, a, PROV + "Activity")
            r = runs.get(run_id)
            if r is not None:
                p(run, PROV + "used", iris.node(r["experiment_id"]))
                p(run, CG + "configHash", None, literal=r["config_hash"])
                p(run, CG + "runDir", None, literal=r["run_dir"])
                for term, col in (("startedAtTime", "started_at"), ("endedAtTime", "ended_at")):
                    if r[col] is not None:
                        p(run, PROV + term, None, literal=r[col])

        i = graph(pubinfo)
        i(np_iri, DCT + "created", None, literal=now)
        i(np_iri, PROV + "wasAttributedTo", agent)
        i(np_iri, RDFS + "label", None, literal=f"{n['type']}: {n['title']}")
        i(agent, a, PROV + "SoftwareAgent")
        i(agent, SCHEMA + "name", None, literal="claimgraph")
        i(agent, SCHEMA + "softwareVersion", None, literal=software_version())
    return out


def write_trig(store: Any, f: IO[bytes], *, base: str | None = None) -> None:
    f.write("".join(f"@prefix {p}: <{ns}> .\n" for p, ns in PREFIXES.items()).encode())
    for name, lines in nanopub_graphs(store, base=base).items():
        f.write(("\n" + _iri(name) + " {\n    " + "\n    ".join(lines) + "\n}\n").encode("utf-8"))
