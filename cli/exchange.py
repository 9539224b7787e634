"""`claimgraph export` and `claimgraph import`: exchange formats both ways (claimgraph.graph.exchange).

Registered on the root app by cli/main.py (`register(app)`); the commands open the store through main's `_store`.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from .render import emit_json, fmt_counts, note

FORMAT_HELP = "json (JSON-LD) | trig (nanopublications) | graphml | parquet (a folder)"


def export(ctx: typer.Context,
           format: Annotated[str, typer.Option("--format", "-f", help=FORMAT_HELP)] = "json",
           out: Annotated[str | None, typer.Option("--out", "-o", help="File ('-' for stdout), or a folder for "
                                                   "parquet. Default: claimgraph.jsonld / .trig / .graphml / "
                                                   "claimgraph-parquet")] = None,
           force: Annotated[bool, typer.Option("--force", help="Replace an existing file or folder.")] = False,
           base: Annotated[str | None, typer.Option(help="IRI that node ids are appended to in JSON-LD and TriG "
                                                    "(default urn:claimgraph:).")] = None,
           context_iri: Annotated[bool, typer.Option("--context-iri", help="JSON-LD: refer to the published "
                                                     "context by its IRI instead of embedding it.")] = False):
    """Export the graph with claim statuses, evidence and provenance; never overwrites without --force.
    Example: claimgraph export --format graphml -o claims.graphml"""
    from claimgraph.graph.exchange import DEFAULT_NAMES, FORMATS
    from claimgraph.graph.exchange import export as do_export

    from .main import _opts, _store

    fmt = format.lower()
    target = out or DEFAULT_NAMES.get({"jsonld": "json", "json-ld": "json"}.get(fmt, fmt), "")
    if not target:
        from claimgraph.graph.errors import InvalidInput

        raise InvalidInput(f"unknown export format {format!r}; choose one of {', '.join(FORMATS)} (json is JSON-LD)")
    with _store(ctx) as s:
        files = do_export(s, format, target, force=force, base=base, inline_context=not context_iri)
    if target == "-":
        return
    if _opts(ctx).json:
        emit_json({"format": fmt, "files": [str(f) for f in files]})
    else:
        for f in files:
            note(f"wrote {f}")


def import_(ctx: typer.Context,
            path: Annotated[Path, typer.Argument(metavar="EXPORT", help="A JSON-LD or GraphML file, or a Parquet "
                                                 "folder, that `claimgraph export` wrote.")],
            format: Annotated[str, typer.Option("--format", "-f", help="auto | json | parquet | graphml")] = "auto",
            base: Annotated[str | None, typer.Option(help="JSON-LD: the base IRI of node ids, when the file does "
                                                     "not say it.")] = None,
            embed: Annotated[bool, typer.Option("--embed/--no-embed", help="Encode texts that have no vector "
                                                "(JSON-LD and GraphML carry none; Parquet does).")] = True):
    """Rebuild a store from an export, into a new (empty) store: nodes, edges, provenance, evidence, documents,
    suggestions' decisions and runs; the keyword index is rebuilt.
    Example: claimgraph --db copy.duckdb import claims.jsonld"""
    from claimgraph.graph.exchange import import_ as do_import

    from .main import _opts, _store

    db = Path(_opts(ctx).db)
    fresh = not db.exists()
    try:
        with _store(ctx, create=True, write=True) as s:
            counts = do_import(s, path, format, base=base)
            encoded = 0
            if embed and counts.get("nodes"):
                from claimgraph.graph.embed import embed_all

                encoded = embed_all(s)
    except BaseException:
        if fresh:  # nothing half-written: a store this command created for a failed import goes again
            for p in (db, db.with_name(db.name + ".wal")):
                if p.exists():
                    os.unlink(p)
        raise
    if _opts(ctx).json:
        emit_json({"db": str(db), "imported": counts, "encoded": encoded})
    else:
        note(f"imported into {db}: {fmt_counts({k: v for k, v in counts.items() if v})}"
             + (f"; encoded {encoded} text(s)" if encoded else ""))


def register(app: typer.Typer) -> None:
    """Add `export` and `import` to the root app."""
    app.command("export")(export)
    app.command("import")(import_)
