"""Export the graph in standard exchange formats: GraphML (graph tools), JSON-LD (linked data), Parquet (data work)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .errors import InvalidInput
from .models import EdgeType
from .store import Store, reads

FORMATS = ("graphml", "json", "parquet")
VOCAB = "https://github.com/claimgraph/claimgraph/blob/main/docs/data-model.md#"


@reads
def export(store: Store, fmt: str, out: str | Path) -> list[Path]:
    """Write the graph to `out` (a file, or a folder for parquet); returns the files written."""
    out = Path(out)
    if fmt == "graphml":
        return [_graphml(store, out)]
    if fmt == "json":
        return [_jsonld(store, out)]
    if fmt == "parquet":
        return _parquet(store, out)
    raise InvalidInput(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")


def _graphml(store: Store, out: Path) -> Path:
    import networkx as nx

    from .queries import to_networkx

    g = to_networkx(store)
    for _, data in g.nodes(data=True):
        data.setdefault("text", "")
    out.parent.mkdir(parents=True, exist_ok=True)
    nx.write_graphml(g, out)
    return out


def jsonld_document(store: Store) -> dict[str, Any]:
    """The graph as a JSON-LD document: one object per node, typed edges as properties holding @id references,
    and each edge also reified under `edges` so its attributes and provenance survive."""
    context: dict[str, Any] = {"@vocab": VOCAB, "title": "http://purl.org/dc/terms/title",
                               "text": "http://purl.org/dc/terms/description"}
    for t in EdgeType:
        context[t.value] = {"@id": VOCAB + t.value, "@type": "@id"}
    by_src: dict[str, dict[str, list[dict[str, str]]]] = {}
    edges = []
    for e in store.edges():
        by_src.setdefault(e.src, {}).setdefault(e.type.value, []).append({"@id": e.dst})
        edges.append({"source": e.src, "type": e.type.value, "target": e.dst, "attrs": e.attrs,
                      "provenance": e.provenance.model_dump(mode="json") if e.provenance else None})
    graph = []
    for n in store.list_nodes():
        obj: dict[str, Any] = {"@id": n.id, "@type": n.type.value, "title": n.title, "text": n.text,
                               "attrs": n.attrs,
                               "provenance": n.provenance.model_dump(mode="json") if n.provenance else None}
        obj.update(by_src.get(n.id, {}))
        graph.append(obj)
    return {"@context": context, "@graph": graph, "edges": edges}


def _jsonld(store: Store, out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(jsonld_document(store), indent=1, ensure_ascii=False))
    return out


def _parquet(store: Store, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for table in ("nodes", "edges", "documents", "stated_similarity", "suggestions", "embeddings", "runs"):
        path = out / f"{table}.parquet"
        escaped = str(path).replace("'", "''")
        store.con.execute(f"COPY (SELECT * FROM {table}) TO '{escaped}' (FORMAT parquet)")
        written.append(path)
    return written
