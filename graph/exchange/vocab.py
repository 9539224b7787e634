"""The vocabularies the linked-data exports use, and how node ids become IRIs.

Standard terms where one exists: PROV-O for provenance (prov:wasDerivedFrom a source document, with its
sha256; prov:wasGeneratedBy the run that produced evidence; prov:generatedAtTime, prov:wasAttributedTo),
schema.org and Dublin Core for papers and titles. The claimgraph vocabulary (`cg:`) names what has no standard
term: node and edge types, claim status, verdicts and criteria. Its terms are documented in docs/exchange.md, and
the JSON-LD context shipped as `context.jsonld` in this package is published at CONTEXT_IRI.
"""
from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

from ..errors import InvalidInput
from ..models import EdgeType, NodeType

REPO = "https://github.com/claimgraph/claimgraph"
CG = f"{REPO}/blob/main/docs/exchange.md#"            # the claimgraph vocabulary; each term is a heading there
CONTEXT_IRI = "https://raw.githubusercontent.com/claimgraph/claimgraph/main/graph/exchange/context.jsonld"
DEFAULT_BASE = "urn:claimgraph:"                      # node IRIs: <base><node id>; --base sets a resolvable one

PROV = "http://www.w3.org/ns/prov#"
SCHEMA = "https://schema.org/"
DCT = "http://purl.org/dc/terms/"
RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
RDFS = "http://www.w3.org/2000/01/rdf-schema#"
XSD = "http://www.w3.org/2001/XMLSchema#"
NP = "http://www.nanopub.org/nschema#"

NODE_CLASSES: dict[NodeType, list[str]] = {
    NodeType.paper: ["cg:Paper", "schema:ScholarlyArticle"],
    NodeType.claim: ["cg:Claim"],
    NodeType.finding: ["cg:Finding"],
    NodeType.method: ["cg:Method"],
    NodeType.question: ["cg:Question"],
    NodeType.topic: ["cg:Topic"],
    NodeType.experiment: ["cg:Experiment", "prov:Plan"],
    NodeType.evidence: ["cg:Evidence", "prov:Entity"],
}
CLASS_TYPES = {f"{CG}{t.value.capitalize()}": t for t in NodeType}  # cg:Claim -> claim


def edge_term(t: EdgeType | str) -> str:
    """The compact JSON-LD term of an edge type (the same word: `supports`, `extracted_from`)."""
    return EdgeType(t).value


@cache
def context() -> dict[str, Any]:
    """The JSON-LD context shipped with the package (the `@context` member of context.jsonld)."""
    return json.loads(resources.files(__package__).joinpath("context.jsonld").read_text(encoding="utf-8"))["@context"]


def document_loader(*_: Any, **__: Any):
    """A pyld document loader that serves CONTEXT_IRI from the packaged file (no network) and refuses others."""
    def load(url: str, options: dict | None = None) -> dict[str, Any]:
        if url != CONTEXT_IRI:
            raise InvalidInput(f"the JSON-LD refers to the remote context {url}; only {CONTEXT_IRI} is known "
                               "offline: inline the context or use claimgraph's")
        return {"contextUrl": None, "documentUrl": url, "document": {"@context": context()}}
    return load


def check_base(base: str) -> str:
    """A base for node IRIs: an absolute IRI ending in '/', '#' or ':' (so `<base><type>:<slug>` is an IRI)."""
    if ":" not in base or base.split(":", 1)[0] == "" or not base[0].isalpha() or any(c in base for c in " <>\"{}|\\^`"):
        raise InvalidInput(f"--base {base!r} is not an absolute IRI (e.g. https://lab.example/claims/ or urn:x:)")
    if base[-1] not in "/#:":
        raise InvalidInput(f"--base {base!r} must end in '/', '#' or ':' so node ids can follow it")
    return base


class Iris:
    """IRIs of the things an export names, under one base."""

    def __init__(self, base: str = DEFAULT_BASE):
        self.base = check_base(base)

    def node(self, node_id: str) -> str:
        return self.base + node_id

    def node_id(self, iri: str) -> str:
        if not iri.startswith(self.base):
            raise InvalidInput(f"{iri} is not under the export's base {self.base}")
        return iri[len(self.base):]

    def edge(self, src: str, type: str, dst: str) -> str:
        return f"{self.base}edge/{src}/{type}/{dst}"

    def document(self, path: str, content_hash: str | None) -> str:
        from ..ids import sha256_hex

        return f"{self.base}document/{sha256_hex(path)[:16]}/{content_hash or 'unknown'}"

    def run(self, run_id: str) -> str:
        return f"{self.base}run/{run_id}"

    def similar(self, node_id: str, other_key: str) -> str:
        return f"{self.base}similar/{node_id}/{other_key}"

    def suggestion(self, a: str, b: str) -> str:
        return f"{self.base}suggestion/{a}/{b}"

    def nanopub(self, node_id: str) -> str:
        return f"{self.base}np/{node_id}"

    @property
    def agent(self) -> str:
        return f"{self.base}agent/claimgraph"

    @property
    def dataset(self) -> str:
        return f"{self.base}export"


def paper_same_as(attrs: dict[str, Any]) -> list[str]:
    """A paper's DOI and arXiv id as resolvable IRIs."""
    from urllib.parse import quote

    from ..ids import normalize_arxiv, normalize_doi

    out = []
    if isinstance(attrs.get("doi"), str) and attrs["doi"].strip():
        out.append("https://doi.org/" + quote(normalize_doi(attrs["doi"]), safe="/:;()._-"))
    if isinstance(attrs.get("arxiv"), str) and attrs["arxiv"].strip():
        out.append("https://arxiv.org/abs/" + quote(normalize_arxiv(attrs["arxiv"]), safe="/._-"))
    return out
