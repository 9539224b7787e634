"""The `claimgraph` command: a thin typer shell over claimgraph.graph, .ingest and .experiments.

Each command parses its arguments, holds the store only for its database work (a reading command shares it
with other readers and opens it read-only; see claimgraph.graph.store), and renders the result afterwards: a
table, or JSON with --json (before or after the command), or CSV with --csv / --format csv on listings.
Expected failures print `Error: <message>` on stderr and exit 2 (bad input or usage) or 1.
"""
from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, cast

import typer
from typer.core import TyperGroup

from claimgraph.graph.errors import ClaimgraphError, InvalidInput

if TYPE_CHECKING:
    from claimgraph.graph import Store

from . import render
from .render import emit_csv, emit_json, fmt_counts, fmt_score, note, table

DEFAULT_DB = "claimgraph.duckdb"
FORMATS = ("table", "json", "csv")


def _hoist_json(args: list[str]) -> list[str]:
    """`--json` anywhere before a `--` means the root option: move it to the front."""
    end = args.index("--") if "--" in args else len(args)
    n = args[:end].count("--json")
    if not n:
        return args
    return ["--json"] + [a for a in args[:end] if a != "--json"] + args[end:]


class _Group(TyperGroup):
    """Catches expected failures once, for every command and sub-command; takes --json after the command too."""

    def parse_args(self, ctx, args):
        if ctx.parent is None:
            args = _hoist_json(list(args))
        return super().parse_args(ctx, args)

    def invoke(self, ctx):  # typer's own (vendored) click Context
        try:
            return super().invoke(ctx)
        except ClaimgraphError as e:
            typer.echo(f"Error: {render.safe(e)}", err=True)
            ctx.exit(e.exit_code)


# rich_markup_mode=None: help text is shown as written (rich markup would swallow `[band=X]`)
app = typer.Typer(cls=_Group, no_args_is_help=True, add_completion=True, pretty_exceptions_enable=False,
                  rich_markup_mode=None,
                  help="A knowledge graph of research claims, findings and methods, linked to experiments that "
                       "test them. Example: claimgraph ingest data/papers && claimgraph list --type claim")
experiment_app = typer.Typer(cls=_Group, no_args_is_help=True, rich_markup_mode=None,
                             help="Register and list experiments.")
app.add_typer(experiment_app, name="experiment")


class Opts:
    def __init__(self, db: Path, json_out: bool):
        self.db = db
        self.json = json_out


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("claimgraph")
    except PackageNotFoundError:
        return "unknown (not installed)"


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"claimgraph {_version()}")
        raise typer.Exit()


@app.callback()
def _root(ctx: typer.Context,
          db: Annotated[Path, typer.Option("--db", envvar="CLAIMGRAPH_DB", help="Database file.")] = Path(DEFAULT_DB),
          json_out: Annotated[bool, typer.Option("--json", help="Machine-readable JSON on stdout (before or after "
                                                                "the command).")] = False,
          version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                                help="Show the version and exit.")] = False):
    """claimgraph: which claims hold up, and what tested them."""
    ctx.obj = Opts(db, json_out)


def _opts(ctx: typer.Context) -> Opts:
    return ctx.find_root().obj


def _label(ctx: typer.Context) -> str:
    """How the store's queue names this command to others waiting ("claimgraph ingest docs/")."""
    if sys.argv and Path(sys.argv[0]).name in ("claimgraph", "main.py", "__main__.py"):
        text = " ".join(["claimgraph", *sys.argv[1:]])
    else:
        text = "claimgraph " + " ".join(ctx.command_path.split()[1:])
    return text if len(text) <= 90 else text[:89] + "…"


@contextmanager
def _store(ctx: typer.Context, *, write: bool = False, create: bool = False, session: bool = True) -> Iterator[Store]:
    """The store, held for the block (reading, or writing with `write`); `session=False` leaves each call to
    take its own turn (commands that compute between database steps)."""
    from claimgraph.graph import Store

    s = Store(_opts(ctx).db, create=create, label=_label(ctx), check=False)  # the first turn checks the file
    if not session:
        yield s
        return
    with s.session(write=write):
        yield s


def _reconcile(s: Store) -> None:
    """Give runs whose process has died their final status (where run status is shown or changed)."""
    if not s.writable():
        return
    from claimgraph.experiments.runner import reconcile

    for row in reconcile(s):
        note(f"run {row['run_id']} of {row['experiment_id']} ended: {row['status']}"
             + (f" ({row['error']})" if row.get("error") else ""))


def _stale_check():
    """The graph's StaleCheck: which evidence no longer matches the code, model, data or parameters."""
    from claimgraph.experiments.staleness import stale_evidence

    return stale_evidence


def _node_type(value: str | None):
    from claimgraph.graph.models import parse_node_type

    return parse_node_type(value)


# ---- output formats for listings -------------------------------------------------------------------
FormatOpt = Annotated[str | None, typer.Option("--format", help="table | json | csv (default table; --json is json).")]
CsvOpt = Annotated[bool, typer.Option("--csv", help="CSV on stdout (same as --format csv).")]
LimitOpt = Annotated[int | None, typer.Option("--limit", help="At most this many.")]
OffsetOpt = Annotated[int, typer.Option("--offset", help="Skip this many first.")]


def _format(ctx: typer.Context, fmt: str | None = None, csv: bool = False) -> str:
    if fmt is not None and fmt not in FORMATS:
        raise InvalidInput(f"unknown --format {fmt!r}; choose table, json or csv")
    if csv or fmt == "csv":
        return "csv"
    if _opts(ctx).json or fmt == "json":
        return "json"
    return "table"


def _page(rows: Sequence[Any], limit: int | None, offset: int) -> list[Any]:
    from claimgraph.graph.store import check_page

    check_page(limit, offset)
    return list(rows[offset:offset + limit] if limit is not None else rows[offset:])


FIELDS = {  # CSV header of an empty listing
    "nodes": ("id", "type", "title", "text", "status", "edges", "attrs", "stale"),
    "results": ("id", "type", "title", "score", "semantic", "keyword"),
    "suggestions": ("src", "dst", "score", "duplicate", "src_type", "dst_type", "src_title", "dst_title"),
    "runs": ("run_id", "experiment_id", "config_hash", "status", "device", "run_dir", "pid", "host", "created_at",
             "started_at", "ended_at", "error", "verdict", "evidence_id"),
    "experiments": ("id", "title", "kind", "targets", "criterion", "model", "seeds", "last_run", "last_status",
                    "verdict"),
}


def _listing(out: str, key: str, records: list[dict[str, Any]], title: str, columns: Sequence[str],
             rows: Iterable[Sequence[Any]], **table_kw: Any) -> None:
    """One listing in the chosen format: {key: records} as JSON, the records as CSV, or the table."""
    if out == "json":
        emit_json({key: records})
    elif out == "csv":
        emit_csv(records, None if records else FIELDS.get(key))
    else:
        table(title, columns, rows, **table_kw)


# ---- graph ----------------------------------------------------------------------------------------
@app.command()
def init(ctx: typer.Context):
    """Create an empty store (or migrate an existing one). Example: claimgraph --db claims.duckdb init"""
    with _store(ctx, write=True, create=True) as s:
        info = {"db": str(s.path), "schema_version": s.schema_version(), "nodes": sum(s.count_nodes().values())}
    if _opts(ctx).json:
        emit_json(info)
    else:
        note(f"store {info['db']} ready (schema v{info['schema_version']}, {info['nodes']} nodes)")


@app.command()
def ingest(ctx: typer.Context,
           paths: Annotated[list[str], typer.Argument(help="Documents or folders of documents.")],
           format: Annotated[str, typer.Option("--format", "-f",
                                               help="auto|structured|claim-page|novelty|summary")] = "auto",
           title: Annotated[str | None, typer.Option(help="Paper title for a summary document (it has none).")] = None,
           embed: Annotated[bool, typer.Option("--embed/--no-embed", help="Encode new texts for similarity.")] = True):
    """Ingest paper documents; re-ingesting an unchanged document is a no-op.
    Example: claimgraph ingest data/papers ../shared/seeds/003_*.txt"""
    from claimgraph.ingest import ingest_documents, read_documents

    docs = read_documents(paths, format=format, title=title)  # a bad document fails before a new store is created
    with _store(ctx, create=True, session=False) as s:  # encoding happens between turns
        reports = ingest_documents(s, docs, embed=embed)
    for w in (w for r in reports for w in r.warnings):
        typer.echo(f"Warning: {w}", err=True)
    if _opts(ctx).json:
        emit_json({"documents": [{"path": r.path, "format": r.format, "unchanged": r.unchanged,
                                  "nodes_added": r.nodes_added, "edges_added": r.edges_added,
                                  "nodes_updated": r.nodes_updated, "nodes_removed": r.nodes_removed,
                                  "edges_removed": r.edges_removed,
                                  "warnings": [w.model_dump(mode="json") for w in r.warnings]} for r in reports]})
        return
    table("Ingested", ["document", "format", "nodes added", "edges added", "updated", "removed"],
          [(Path(r.path).name, r.format, "unchanged" if r.unchanged else fmt_counts(r.nodes_added),
            "" if r.unchanged else fmt_counts(r.edges_added), fmt_counts(r.nodes_updated),
            fmt_counts({**r.nodes_removed, **{f"edge {k}": v for k, v in r.edges_removed.items()}}))
           for r in reports])


@app.command("list")
def list_nodes(ctx: typer.Context,
               type: Annotated[str | None, typer.Option("--type", "-t", help="Only nodes of this type.")] = None,
               limit: LimitOpt = None, offset: OffsetOpt = 0, fmt: FormatOpt = None, csv: CsvOpt = False):
    """List nodes (claims and findings with their evidence status). Example: claimgraph list --type claim --limit 20"""
    from claimgraph.graph.queries import list_rows

    out = _format(ctx, fmt, csv)
    ntype = _node_type(type)
    with _store(ctx) as s:
        records = list_rows(s, s.list_nodes(ntype, limit=limit, offset=offset), stale=_stale_check())
    _listing(out, "nodes", records, f"{type + ' ' if type else ''}nodes ({len(records)})",
             ["id", "type", "title", "status", "edges"],
             [(r["id"], r["type"], r["title"], (r["status"] or "") + (" · STALE" if r["stale"] else ""), r["edges"])
              for r in records])
    if out == "table" and any(r["stale"] for r in records):
        note("STALE: evidence whose code, model, data or parameters changed since it ran (`claimgraph show ID` says "
             "which; `claimgraph run --stale` re-runs them)")


@app.command()
def show(ctx: typer.Context, node_id: Annotated[str, typer.Argument(metavar="ID", help="A node id or its prefix.")],
         k: Annotated[int, typer.Option("-k", help="Computed similarity neighbours to add.")] = 8,
         threshold: Annotated[float, typer.Option(help="Cosine threshold for similarity neighbours.")] = 0.65):
    """A node's page: status, source paper, typed neighbours by edge count, evidence, similar entries.
    Example: claimgraph show claim:learned-features-reflect-the-functionality"""
    from claimgraph.graph.queries import node_page

    from .pages import page_json, render_page

    with _store(ctx) as s:
        page = node_page(s, s.resolve_id(node_id), k_similar=k, threshold=threshold, stale=_stale_check())
    if _opts(ctx).json:
        emit_json(page_json(page))
    else:
        render_page(page)


@app.command()
def neighbors(ctx: typer.Context, node_id: Annotated[str, typer.Argument(metavar="ID", help="A node id or its prefix.")],
              depth: Annotated[int, typer.Option("--depth", "-d", help="Hops to follow.")] = 1,
              edge: Annotated[list[str] | None, typer.Option("--edge", help="Only these edge types.")] = None,
              fmt: FormatOpt = None, csv: CsvOpt = False):
    """Nodes within N typed hops. Example: claimgraph neighbors claim:... --depth 2 --edge supports"""
    from claimgraph.graph.models import parse_edge_type
    from claimgraph.graph.queries import neighborhood

    out = _format(ctx, fmt, csv)
    edges = [parse_edge_type(e).value for e in edge or []] or None
    with _store(ctx) as s:
        start = s.resolve_id(node_id)
        hops = neighborhood(s, start, depth=depth, edge_types=edges)
    _listing(out, "nodes", [h.model_dump(mode="json") for h in hops], f"within {depth} hop(s) of {start}",
             ["depth", "id", "type", "title", "via"],
             [(h.depth, h.id, h.type.value, h.title,
               "" if h.via is None or h.edge is None else
               f"{'→' if h.direction == 'out' else '←'} {h.edge.value} {h.via}") for h in hops])


@app.command()
def path(ctx: typer.Context, a: Annotated[str, typer.Argument(metavar="A")],
         b: Annotated[str, typer.Argument(metavar="B")]):
    """Shortest chain of typed edges between two nodes (ids or their prefixes). Example: claimgraph path claim:x paper:y"""
    from claimgraph.graph.queries import shortest_path

    with _store(ctx) as s:
        a, b = s.resolve_id(a), s.resolve_id(b)
        steps = shortest_path(s, a, b)
    if _opts(ctx).json:
        emit_json({"path": steps})
        return
    table(f"path {a} → {b} ({len(steps) - 1} hops)", ["step", "edge", "id", "title"],
          [(i, "" if st.edge is None else (f"-{st.edge.value}->" if st.direction == "out" else f"<-{st.edge.value}-"),
            st.id, st.title) for i, st in enumerate(steps)])


@app.command()
def search(ctx: typer.Context, query: Annotated[str, typer.Argument(help="Words or a sentence.")],
           type: Annotated[str | None, typer.Option("--type", "-t", help="Only nodes of this type.")] = None,
           k: Annotated[int, typer.Option("-k", "--limit", help="Results to return.")] = 10,
           fmt: FormatOpt = None, csv: CsvOpt = False):
    """Hybrid semantic + keyword search. Example: claimgraph search "features of shuffled models" --type finding"""
    from claimgraph.graph.search import search as do_search

    out = _format(ctx, fmt, csv)
    ntype = _node_type(type)
    with _store(ctx) as s:  # the query is encoded between turns
        results = do_search(s, query, type=ntype, k=k)
    _listing(out, "results", [{"id": r.id, "type": r.type.value, "title": r.title, "score": r.score,
                               "semantic": r.semantic, "keyword": r.keyword} for r in results],
             f"search: {query}", ["score", "semantic", "keyword", "id", "type", "title"],
             [(fmt_score(r.score), fmt_score(r.semantic), fmt_score(r.keyword), r.id, r.type.value, r.title)
              for r in results])


@app.command()
def suggest(ctx: typer.Context,
            threshold: Annotated[float, typer.Option(help="Minimum cosine.")] = 0.65,
            type: Annotated[str | None, typer.Option("--type", "-t", help="Only pairs of this node type.")] = None,
            limit: LimitOpt = None, offset: OffsetOpt = 0, fmt: FormatOpt = None, csv: CsvOpt = False):
    """Pairs that look related but have no typed edge, best first; near-identical ones flagged duplicate.
    Example: claimgraph suggest --threshold 0.7 --type claim"""
    from claimgraph.graph.similarity import suggest as do_suggest

    out = _format(ctx, fmt, csv)
    ntype = _node_type(type)
    _page([], limit, offset)  # checks them before any work
    with _store(ctx, session=False) as s:  # pairs are computed between a reading and a writing turn
        found = do_suggest(s, threshold=threshold, type=ntype,
                           limit=None if limit is None else limit + offset)[offset:]
    _listing(out, "suggestions", [{"src": x.src, "dst": x.dst, "score": x.score, "duplicate": x.duplicate,
                                   "src_type": x.src_type.value if x.src_type else None,
                                   "dst_type": x.dst_type.value if x.dst_type else None,
                                   "src_title": x.src_title, "dst_title": x.dst_title} for x in found],
             f"suggestions (cosine ≥ {threshold:g}, no typed edge)",
             ["score", "dup", "src", "dst", "src title", "dst title"],
             [(fmt_score(x.score), "yes" if x.duplicate else "", x.src, x.dst, x.src_title, x.dst_title) for x in found],
             wrap=("src title", "dst title"))
    if found and out == "table":
        note("accept one with `claimgraph accept SRC DST [--edge TYPE]`, or `claimgraph reject SRC DST`")


@app.command()
def accept(ctx: typer.Context, src: str, dst: str,
           edge: Annotated[str | None, typer.Option(help="Edge type (default: duplicate_of for duplicates, "
                                                            "else associated_with).")] = None):
    """Turn a suggested pair into a typed edge. Example: claimgraph accept finding:a claim:b --edge supports"""
    from claimgraph.graph.similarity import accept as do_accept

    with _store(ctx, write=True) as s:
        e = do_accept(s, s.resolve_id(src), s.resolve_id(dst), edge=edge)
    if _opts(ctx).json:
        emit_json({"edge": e})
    else:
        note(f"added {e.src} -{e.type.value}-> {e.dst}")


@app.command()
def reject(ctx: typer.Context, src: str, dst: str):
    """Record that a suggested pair is unrelated; it is never proposed again. Example: claimgraph reject claim:a claim:b"""
    from claimgraph.graph.similarity import reject as do_reject

    with _store(ctx, write=True) as s:
        src, dst = s.resolve_id(src), s.resolve_id(dst)
        do_reject(s, src, dst)
    if _opts(ctx).json:
        emit_json({"rejected": {"src": src, "dst": dst}})
    else:
        note(f"rejected {src} ~ {dst}")


@app.command()
def link(ctx: typer.Context, src: str, edge: str, dst: str,
         attr: Annotated[list[str] | None, typer.Option("--attr", help="Edge attribute name=value.")] = None):
    """Add a typed edge by hand. Example: claimgraph link finding:x supports claim:y"""
    from claimgraph.experiments.api import parse_param
    from claimgraph.graph.models import parse_edge_type

    attrs = dict(parse_param(a) for a in attr or [])
    etype = parse_edge_type(edge)
    with _store(ctx, write=True) as s:
        e = s.link(s.resolve_id(src), etype, s.resolve_id(dst), attrs=attrs)
    if _opts(ctx).json:
        emit_json({"edge": e})
    else:
        note(f"added {e.src} -{e.type.value}-> {e.dst}")


@app.command()
def unlink(ctx: typer.Context, src: str, edge: str, dst: str,
           reason: Annotated[str | None, typer.Option(help="Why it was removed (kept on record).")] = None):
    """Remove a typed edge; the removal is recorded with the edge's provenance and when it was removed.
    Example: claimgraph unlink finding:x supports claim:y --reason "accepted by mistake"."""
    from claimgraph.graph.models import parse_edge_type

    etype = parse_edge_type(edge)
    with _store(ctx, write=True) as s:
        removed = s.unlink(s.resolve_id(src), etype, s.resolve_id(dst), reason=reason)
    if _opts(ctx).json:
        emit_json({"removed": removed})
        return
    prov = removed.provenance
    made = f"{prov.made_by.value}" + (f" from {prov.source}" if prov and prov.source else "") if prov else "?"
    note(f"removed {removed.src} -{removed.type.value}-> {removed.dst} (it was {made})")
    if prov and prov.made_by.value == "accepted-suggestion":
        note(f"to stop the pair being suggested again: claimgraph reject {removed.src} {removed.dst}")
    elif prov and prov.made_by.value == "parsed":
        note("its document still states it: ingesting a changed version of that document adds it back")


@app.command()
def embed(ctx: typer.Context):
    """Encode every node whose text has no vector yet (ingest does this unless --no-embed). Example: claimgraph embed"""
    from claimgraph.graph.embed import embed_all

    with _store(ctx, session=False) as s:  # the encoder runs between turns
        n = embed_all(s, progress=None)
    if _opts(ctx).json:
        emit_json({"encoded": n})
    else:
        note(f"encoded {n} new text(s)")


@app.command()
def stats(ctx: typer.Context, fmt: FormatOpt = None, csv: CsvOpt = False):
    """Counts of nodes and edges by type. Example: claimgraph stats"""
    out = _format(ctx, fmt, csv)
    with _store(ctx) as s:
        nodes, edges = s.count_nodes(), s.count_edges()
        info = {"db": str(s.path), "schema_version": s.schema_version(), "nodes": nodes, "edges": edges,
                "documents": len(s.documents())}
    if out == "json":
        emit_json(info)
        return
    rows = [("node", k, v) for k, v in nodes.items()] + [("edge", k, v) for k, v in edges.items()]
    if out == "csv":
        emit_csv([{"kind": a, "type": b, "count": c} for a, b, c in rows])
        return
    table(f"{info['db']} (schema v{info['schema_version']}, {info['documents']} documents)", ["kind", "type", "count"],
          rows)


# ---- experiments ----------------------------------------------------------------------------------
@experiment_app.command("kinds")
def experiment_kinds(ctx: typer.Context, fmt: FormatOpt = None, csv: CsvOpt = False):
    """Job kinds that can be run, with their default criterion. Example: claimgraph experiment kinds"""
    from claimgraph.experiments.registry import get_job, kinds

    out = _format(ctx, fmt, csv)
    rows = []
    for k in kinds():
        job = get_job(k)
        rows.append({"kind": k, "summary": job.summary, "criterion": job.default_criterion.describe(),
                     "params": {name: f.default for name, f in job.Params.model_fields.items()},
                     "metrics": job.metrics})
    _listing(out, "kinds", rows, "job kinds", ["kind", "summary", "default criterion"],
             [(r["kind"], r["summary"], r["criterion"]) for r in rows], wrap=("summary", "default criterion"))


@experiment_app.command("add")
def experiment_add(ctx: typer.Context,
                   claim: Annotated[list[str] | None, typer.Option(
                       "--claim", "-c", help="Claim or finding it tests (repeatable).")] = None,
                   kind: Annotated[str | None, typer.Option("--kind", "-k", help="Job kind (see `experiment kinds`).")] = None,
                   param: Annotated[list[str] | None, typer.Option("--param", "-p", help="name=value (repeatable).")] = None,
                   criterion: Annotated[str | None, typer.Option(
                       help="'metric > threshold [band=X] [conf=Y]'; default: the kind's.")] = None,
                   model: Annotated[str | None, typer.Option(help="toy:<preset> or hf:<local dir>[@revision]")] = None,
                   data: Annotated[str | None, typer.Option(help="synthetic:<preset> or text:<file>")] = None,
                   seeds: Annotated[str | None, typer.Option(
                       help="N (seeds 0..N-1), A-B (A..B, e.g. fresh seeds for a replication) or A,B,C.")] = None,
                   device: Annotated[str | None, typer.Option(help="cpu | cuda | auto")] = None,
                   title: Annotated[str | None, typer.Option(help="Title of the experiment node.")] = None,
                   exp_id: Annotated[str | None, typer.Option("--id", help="Experiment id (experiment:slug).")] = None,
                   plan: Annotated[Path | None, typer.Option(
                       "--file", "-f", help="Register every experiment of a plan file (YAML/JSON, one entry per "
                                            "experiment with the fields of these options; see "
                                            "data/experiments.yaml) in one transaction: all or none.")] = None):
    """Register an experiment testing a claim; its spec and criterion are fixed now, before any run.
    Example: claimgraph experiment add --claim claim:x --kind sae --param control=shuffled;
    claimgraph experiment add --file data/experiments.yaml"""
    from claimgraph.experiments.api import add_experiment, parse_param

    if plan is not None:
        given = [name for name, v in (("--claim", claim), ("--kind", kind), ("--param", param),
                                      ("--criterion", criterion), ("--model", model), ("--data", data),
                                      ("--seeds", seeds), ("--device", device), ("--title", title), ("--id", exp_id))
                 if v]
        if given:
            raise typer.BadParameter(f"--file registers the plan's own entries; leave out {', '.join(given)}")
        from claimgraph.experiments.plan import add_plan

        with _store(ctx, write=True) as s:
            nodes = add_plan(s, plan)
        if _opts(ctx).json:
            emit_json({"experiments": nodes})
        else:
            note(f"{len(nodes)} experiment(s) of {plan} registered (or found registered with the same spec)")
            for n in nodes:
                print(n.id)
        return
    if not claim or not kind:
        raise typer.BadParameter("give --claim and --kind (or --file with a plan)")
    params = dict(parse_param(p) for p in param or [])
    with _store(ctx, write=True) as s:
        targets = [s.resolve_id(c) for c in claim]
        node = add_experiment(s, targets, kind, title=title, experiment_id=exp_id, params=params, criterion=criterion,
                              model=model, data=data, seeds=seeds, device=device)
    if _opts(ctx).json:
        emit_json({"experiment": node})
    else:
        spec = node.attrs["spec"]
        note(f"experiment {node.id}\n  kind {spec['kind']} on {spec['model']} / {spec['data']}, seeds {spec['seeds']}\n"
             f"  params {spec['params']}\n  criterion {spec['criterion']}")
        print(node.id)


@experiment_app.command("list")
def experiment_list(ctx: typer.Context, limit: LimitOpt = None, offset: OffsetOpt = 0, fmt: FormatOpt = None,
                    csv: CsvOpt = False):
    """Experiments with what they test and their latest verdict. Example: claimgraph experiment list"""
    from claimgraph.experiments.api import list_experiments

    out = _format(ctx, fmt, csv)
    with _store(ctx, session=False) as s:
        _reconcile(s)
        with s.session():
            rows = _page(list_experiments(s), limit, offset)
    _listing(out, "experiments", rows, "experiments", ["id", "kind", "tests", "criterion", "last run", "status", "verdict"],
             [(r["id"], r["kind"], ", ".join(r["targets"]), r["criterion"], r["last_run"], r["last_status"], r["verdict"])
              for r in rows], wrap=("tests", "criterion"))


@app.command()
def run(ctx: typer.Context,
        experiment: Annotated[list[str] | None, typer.Argument(
            metavar="[EXP]...", help="Experiment id(s) or prefix(es), run one after another.")] = None,
        run_all: Annotated[bool, typer.Option("--all", help="Run every registered experiment (in `experiment list` "
                                                           "order; completed identical runs come from the cache).")] = False,
        jobs: Annotated[int, typer.Option("--jobs", "-j", min=1, help="Run up to N groups of experiments side by side "
                                                                     "(a process each; a group is the experiments of "
                                                                     "one model, run one after another), each with "
                                                                     "cores/N torch threads unless OMP_NUM_THREADS "
                                                                     "is set.")] = 1,
        device: Annotated[str | None, typer.Option(help="cpu | cuda | auto (default: the spec's)")] = None,
        seeds: Annotated[str | None, typer.Option(
            help="Run these seeds instead of the spec's: N (0..N-1), A-B or A,B,C.")] = None,
        force: Annotated[bool, typer.Option("--force", help="Recompute even if an identical run completed.")] = False,
        stale: Annotated[bool, typer.Option("--stale", help="Re-run every experiment whose evidence is stale "
                                                            "(code, model, data or parameters changed).")] = False,
        executor: Annotated[str | None, typer.Option(
            help="local | slurm: hand each seed to submitit as one task (on Slurm, one array task) and return at "
                 "once; `claimgraph runs` follows it, `claimgraph collect` attaches it. Default: run here.")] = None,
        partition: Annotated[str | None, typer.Option(help="Slurm partition.")] = None,
        gpus: Annotated[int, typer.Option(help="GPUs per task (executor runs).")] = 0,
        time_min: Annotated[float | None, typer.Option("--time", help="Time limit per task, minutes (executor runs; "
                                                                       "default: the spec's timeout).")] = None,
        mem: Annotated[float | None, typer.Option(help="Memory per task, GB (executor runs).")] = None,
        runs_dir: Annotated[str | None, typer.Option(
            "--runs-dir", envvar="CLAIMGRAPH_RUNS_DIR",
            help="Folder for run folders, on a filesystem the cluster's nodes share (default: the store's).")] = None):
    """Run an experiment in its own process and attach its evidence; an identical completed run is reused.
    Example: claimgraph run experiment:sae-learned-features-reflect-... --seeds 3; claimgraph run --all;
    claimgraph run --stale;
    claimgraph run EXP --executor slurm --partition gpu --gpus 1 --time 30"""
    from functools import partial

    from claimgraph.experiments.runner import run_experiment, run_stale

    opts = _opts(ctx)
    started = lambda rid, d: note(f"run {rid} started; folder {d}")
    submit: Callable[..., Any] | None = None
    if executor is not None:
        from claimgraph.experiments.executors import EXECUTORS, ClusterOptions
        from claimgraph.experiments.runner import submit_run

        if executor not in EXECUTORS:
            raise typer.BadParameter(f"--executor {executor!r}: use local or slurm (or leave it out to run here)")
        chosen = cast(Literal["local", "slurm"], executor)
        options = ClusterOptions(partition=partition, gpus=gpus, time_min=time_min, mem_gb=mem)

        def submit(store, exp, *, device=None, seeds=None, force=False, progress=True, on_start=None):
            return submit_run(store, exp, executor=chosen, seeds=seeds, device=device, force=force,
                              options=options, runs_dir=runs_dir)
    elif any(x for x in (partition, gpus, time_min, mem)):
        raise typer.BadParameter("--partition, --gpus, --time and --mem are for --executor local|slurm")
    if stale:
        if experiment or seeds or run_all:
            raise typer.BadParameter("--stale re-runs every stale experiment on its own seeds; give no EXP or --seeds")
        with _store(ctx, write=True) as s:
            _reconcile(s)
            outcomes = run_stale(s, device=device, on_start=started,
                                 run=submit if submit is not None else partial(run_experiment, runs_dir=runs_dir))
        if opts.json:
            emit_json({"runs": outcomes})
        elif not outcomes:
            note("no stale evidence: nothing to re-run")
        else:
            table("re-runs of stale experiments", ["experiment", "run", "status", "verdict", "evidence"],
                  [(o.experiment_id, o.run_id, o.status, o.verdict, o.evidence_id) for o in outcomes])
        if any(o.status != "completed" and not (o.executor and o.status == "queued") for o in outcomes):
            raise typer.Exit(1)
        return
    if run_all and experiment:
        raise typer.BadParameter("--all runs every experiment; give no EXP with it")
    if not experiment and not run_all:
        raise typer.BadParameter("give the experiment(s) to run (EXP...), or --all, or --stale")
    if run_all:
        from claimgraph.experiments.api import list_experiments

        with _store(ctx, session=False) as s, s.session():
            experiment = [r["id"] for r in list_experiments(s)]
    names = experiment or []
    if jobs > 1 and len(names) > 1:
        if submit is not None or seeds:
            raise typer.BadParameter("--jobs runs groups of local runs on the spec's seeds; leave out --executor "
                                     "and --seeds")
        _run_groups(ctx, names, jobs, device=device, force=force, runs_dir=runs_dir)
        return
    outcomes = []
    for k, name in enumerate(names):
        # one writing turn for the bookkeeping before each job; the runner lets go while the worker computes
        with _store(ctx, write=True) as s:
            _reconcile(s)
            exp_id = s.resolve_id(name, type="experiment")
            if len(names) > 1 and not opts.json:
                note(f"[{k + 1}/{len(names)}] {exp_id}")
            if submit is not None:
                outcome = submit(s, exp_id, device=device, seeds=seeds, force=force)
            else:
                outcome = run_experiment(s, exp_id, device=device, seeds=seeds, force=force, on_start=started,
                                         runs_dir=runs_dir)
        outcomes.append(outcome)
        if not opts.json:
            _print_outcome(outcome)
        if outcome.status == "killed":  # a signal for this command ends the batch too
            break
    if opts.json:
        emit_json(outcomes[0] if len(names) == 1 else {"runs": outcomes})
    bad = [o for o in outcomes if o.status != "completed" and not (o.executor and o.status == "queued")]
    if len(names) > 1 and not opts.json:
        note(f"{len(outcomes)} of {len(names)} run: {len(outcomes) - len(bad)} completed or queued"
             + (f", {len(bad)} not: {', '.join(o.experiment_id for o in bad)}" if bad else ""))
    if bad:
        raise typer.Exit(1)


def _run_groups(ctx: typer.Context, names: list[str], jobs: int, *, device: str | None, force: bool,
               runs_dir: str | None) -> None:
    """`run --jobs N`: the experiments grouped by model (experiments.api.plan_groups), a `claimgraph run EXP...`
    child process per group, at most N at once, the next group starting as one ends; signals for this command are
    passed on to the running ones (and no new group starts); exit 1 if any group had a run that did not complete."""
    import json
    import signal
    import subprocess
    import tempfile
    import time

    from claimgraph.experiments.api import list_experiments, plan_groups
    from claimgraph.graph.ann import threads as cores

    opts = _opts(ctx)
    with _store(ctx, session=False) as s, s.session():
        ids = [s.resolve_id(n, type="experiment") for n in names]
        rows = {r["id"]: r for r in list_experiments(s)}
    groups = plan_groups([rows[i] for i in dict.fromkeys(ids)])
    extra = [*(["--device", device] if device else []), *(["--force"] if force else []),
             *(["--runs-dir", runs_dir] if runs_dir else [])]
    # N groups share the cores: each child's torch (and BLAS) gets cores/N threads, unless the user chose. Two
    # processes of two threads each on two cores took 1.6x the CPU and 1.5x the time of one thread each for the
    # same work (bench/bench_threads.py), and every process here computes beside another
    env = dict(os.environ)
    if jobs > 1 and "OMP_NUM_THREADS" not in env:
        env["OMP_NUM_THREADS"] = str(max(1, cores() // jobs))
    pending = list(enumerate(groups))
    running: list[tuple[int, subprocess.Popen, Any]] = []
    finished: dict[int, tuple[int, str | None]] = {}
    received: list[int] = []

    def forward(signum, frame):
        received.append(signum)
        for _, p, _sink in running:
            if p.poll() is None:
                p.send_signal(signum)

    old = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        while pending or running:
            while pending and len(running) < jobs and not received:
                k, group = pending.pop(0)
                note(f"group {k + 1}/{len(groups)}: {len(group)} experiment(s) on {rows[group[0]].get('model')}")
                # --json: each child's JSON goes to a file (a pipe read only at the end could fill and stall it)
                sink = tempfile.TemporaryFile(mode="w+") if opts.json else None
                running.append((k, subprocess.Popen(
                    [sys.executable, "-m", "claimgraph.cli.main", "--db", str(opts.db),
                     *(["--json"] if opts.json else []), "run", *group, *extra], stdout=sink, text=True, env=env),
                    sink))
            if received:
                pending.clear()
            for item in list(running):
                k, p, sink = item
                if p.poll() is not None:
                    out = None
                    if sink is not None:
                        sink.seek(0)
                        out = sink.read()
                        sink.close()
                    finished[k] = (p.wait(), out)
                    running.remove(item)
            time.sleep(0.2)
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)
    if opts.json:
        runs: list[Any] = []
        for k in sorted(finished):
            out = finished[k][1]
            doc = json.loads(out) if out and out.strip() else {}
            runs += doc.get("runs", [doc] if doc else [])
        emit_json({"runs": runs, "groups": groups})
    if received or any(rc != 0 for rc, _ in finished.values()):
        raise typer.Exit(1)


def _print_outcome(outcome: Any) -> None:
    if outcome.executor and outcome.status == "queued":
        render.lines([f"run {outcome.run_id}: submitted to {outcome.executor} ({len(outcome.job_ids)} task(s): "
                      f"{', '.join(outcome.job_ids)})", f"folder: {outcome.run_dir}",
                      "follow it with `claimgraph runs`; `claimgraph collect` attaches its evidence when it is done"])
        return
    lines = [f"run {outcome.run_id}: {outcome.status}" + (" (cached)" if outcome.cached else "")]
    if outcome.reused_from:
        lines.append(f"computation reused from {outcome.reused_from}, decided by this experiment's criterion")
    if outcome.verdict:
        lines.append(f"verdict: {outcome.verdict}" + (f" — {outcome.reason}" if outcome.reason else ""))
    if outcome.evidence_id:
        lines.append(f"evidence: {outcome.evidence_id}")
    if outcome.error:
        lines.append(f"error: {outcome.error}")
    lines.append(f"folder: {outcome.run_dir}")
    render.lines(lines)


@app.command()
def runs(ctx: typer.Context,
         experiment: Annotated[str | None, typer.Argument(metavar="[EXP]", help="Experiment id or prefix.")] = None,
         limit: LimitOpt = None, offset: OffsetOpt = 0, fmt: FormatOpt = None, csv: CsvOpt = False):
    """Run records, newest first; runs handed to Slurm or a local executor as the scheduler reports them
    (--json: each task). Example: claimgraph runs experiment:..."""
    from claimgraph.experiments.executors import task_summary

    out = _format(ctx, fmt, csv)
    with _store(ctx, session=False) as s:
        _reconcile(s)
        with s.session():
            exp = s.resolve_id(experiment, type="experiment") if experiment is not None else None
            rows = _page(s.runs(exp), limit, offset)
    if out == "json":
        for r in rows:
            r["executor"] = task_summary(r["run_dir"]) if r["status"] in ("queued", "running") else \
                _executor_brief(r["run_dir"])

    def took(r):
        if r["started_at"] is None and r["ended_at"] is None:
            return ""
        start = r["started_at"] or r["created_at"]
        return f"{(r['ended_at'] - start).total_seconds():.0f}s" if r["ended_at"] else "…"

    _listing(out, "runs", rows, "runs", ["run", "experiment", "status", "verdict", "device", "took", "created"],
             [(r["run_id"], r["experiment_id"], r["status"], r["verdict"], r["device"], took(r),
               f"{r['created_at']:%Y-%m-%d %H:%M}") for r in rows])


@app.command()
def evidence(ctx: typer.Context,
             claims: Annotated[list[str], typer.Argument(metavar="CLAIM...", help="Claim/finding ids or prefixes.")],
             all_: Annotated[bool, typer.Option("--all", help="Include evidence superseded by later runs.")] = False,
             limit: LimitOpt = None, offset: OffsetOpt = 0, fmt: FormatOpt = None, csv: CsvOpt = False):
    """Evidence about a claim or finding, and its derived status; several claims: one after another (--json: a
    list of what one claim gives; --csv: one table with a claim column). Example: claimgraph evidence claim:..."""
    from claimgraph.graph.queries import STATUS_TYPES, evidence_for, status_reports

    out = _format(ctx, fmt, csv)
    with _store(ctx) as s:
        ids = [s.resolve_id(c) for c in claims]
        for claim in ids:
            node = s.get_node(claim)
            if node.type not in STATUS_TYPES:
                raise InvalidInput(f"{claim} is a {node.type.value}; evidence is about claims and findings "
                                   "(`claimgraph list --type claim` lists them)")
        ids = list(dict.fromkeys(ids))
        evs = {c: _page(evidence_for(s, c, include_superseded=all_), limit, offset) for c in ids}
        reports = status_reports(s, ids, stale=_stale_check())
    every = [e for ev in evs.values() for e in ev]
    stale = _stale_check()(every) if every else {}
    d = lambda e: e.attrs.get("decision", {})
    if out == "json":
        docs = [{"claim": c, "status": reports[c].status, "status_report": reports[c].model_dump(mode="json"),
                 "evidence": [{"id": e.id, "title": e.title, "text": e.text, **e.attrs, "stale": stale.get(e.id)}
                              for e in evs[c]]} for c in ids]
        emit_json(docs[0] if len(claims) == 1 else docs)
        return
    if out == "csv":
        emit_csv([{**({"claim": c} if len(claims) > 1 else {}), "id": e.id, "verdict": e.attrs.get("verdict"),
                   "value": d(e).get("mean"), "ci_low": d(e).get("ci_low"), "ci_high": d(e).get("ci_high"),
                   "n": d(e).get("n"), "criterion": _criterion_text(e.attrs.get("criterion")),
                   "experiment": e.attrs.get("experiment"), "run_id": e.attrs.get("run_id"), "title": e.title,
                   "decisive": e.attrs.get("decisive", True), "stale": stale.get(e.id)}
                  for c in ids for e in evs[c]])
        return
    for c in ids:
        ev = evs[c]
        table(f"{c}: {reports[c].describe()}", ["verdict", "value", "CI", "n", "criterion", "experiment", "run"],
              [(str(e.attrs.get("verdict")) + (" (not deciding)" if e.attrs.get("decisive", True) is False else "")
                + (" STALE" if e.id in stale else ""), fmt_score(d(e).get("mean")),
                "" if d(e).get("n", 0) < 2 or d(e).get("ci_low") is None
                else f"[{d(e)['ci_low']:.3g}, {d(e)['ci_high']:.3g}]", d(e).get("n"),
                _criterion_text(e.attrs.get("criterion")), e.attrs.get("experiment"), e.attrs.get("run_id"))
               for e in ev],
              wrap=("criterion",))
        for e in ev:
            if e.id in stale:
                note(f"stale: {e.id}: {stale[e.id]}")
    if stale:
        note("`claimgraph run --stale` re-runs the experiments whose evidence is stale")


def _executor_brief(run_dir: str):
    from claimgraph.experiments.executors import read_record

    rec = read_record(Path(run_dir))
    return None if rec is None else {"executor": rec.executor, "job_ids": rec.job_ids}


@app.command()
def collect(ctx: typer.Context, run_id: Annotated[str | None, typer.Argument(metavar="[RUN]", help="Run id or prefix.")] = None,
            wait: Annotated[bool, typer.Option("--wait", help="Wait until the run (or every run in flight) ends.")] = False,
            poll: Annotated[float, typer.Option(help="Seconds between checks with --wait.")] = 5.0):
    """Follow runs handed to an executor: when every task of one is done, aggregate its seeds, decide by its
    criterion and attach the evidence (once); `runs` does this too, `collect` says what it found.
    Example: claimgraph collect 20261201T120000-1a2b3c4d-5e6f7a8b --wait"""
    import time

    from claimgraph.experiments.runner import reconcile

    ended: list[dict] = []
    while True:
        with _store(ctx, session=False) as s:  # collecting computes between the store's turns
            ended += reconcile(s)
            rid = s.resolve_run(run_id) if run_id else None
            rows = s.runs(run_id=rid) if rid else s.runs(status="queued") + s.runs(status="running")
        left = [r for r in rows if r["status"] in ("queued", "running")]
        if not wait or not left:
            break
        time.sleep(poll)
    if _opts(ctx).json:
        emit_json({"runs": rows, "ended": ended})
        return
    table("runs", ["run", "experiment", "status", "verdict", "evidence", "error"],
          [(r["run_id"], r["experiment_id"], r["status"], r["verdict"], r["evidence_id"], r["error"]) for r in rows])
    if not run_id and not rows:
        note("no run in flight")


@app.command()
def cancel(ctx: typer.Context, run_id: Annotated[str, typer.Argument(metavar="RUN", help="Run id or prefix.")]):
    """Cancel a run in flight (its Slurm array, its local jobs or its worker) and record it killed.
    Example: claimgraph cancel 20261201T120000-1a2b3c4d-5e6f7a8b"""
    from claimgraph.experiments.executors import cancel_run

    with _store(ctx, write=True) as s:
        row = cancel_run(s, s.resolve_run(run_id))
    if _opts(ctx).json:
        emit_json({"run": row})
    else:
        note(f"run {row['run_id']}: {row['status']}")


@app.command()
def feature(ctx: typer.Context,
            run: Annotated[str, typer.Argument(metavar="RUN", help="Run id or prefix (see `claimgraph runs`), or run folder.")],
            feature: Annotated[int, typer.Argument(metavar="FEATURE", help="Latent index in the run's SAE.")],
            seed: Annotated[int | None, typer.Option(help="Seed whose SAE (default: the run's first).")] = None,
            condition: Annotated[str | None, typer.Option(help="sae runs: trained | shuffled (default trained).")] = None,
            device: Annotated[str, typer.Option(help="cpu | cuda | auto")] = "cpu"):
    """A feature's page: top activating contexts, density, logit table, related runs; HTML in the run folder.
    Example: claimgraph feature 20261121T061739-7838174d 186"""
    from claimgraph.experiments.pages import page_for_run

    from .feature import render_feature

    with _store(ctx) as s:  # the page is computed after the store is let go
        target: str | Path = run if (Path(run) / "config.json").is_file() else s.resolve_run(run)
        page = page_for_run(s, target, feature, seed=seed, condition=condition, device=device)
    render_feature(page, _opts(ctx).json)


def _criterion_text(c: dict | None) -> str:
    if not c:
        return ""
    from claimgraph.experiments.spec import Criterion

    return Criterion.model_validate(c).describe()


# ---- exchange formats (cli/exchange.py) -------------------------------------------------------------
from .exchange import register as _register_exchange  # noqa: E402

_register_exchange(app)

# ---- the shared cache folder (cli/cache.py) ---------------------------------------------------------
from .cache import register as _register_cache  # noqa: E402

_register_cache(app)

# ---- the web UI (cli/serve.py) ----------------------------------------------------------------------
from .serve import serve  # noqa: E402

app.command()(serve)


def _terminate(signum: int, frame: Any) -> None:
    """SIGTERM as an exit that unwinds: open transactions roll back and half-written exports are removed (the
    default action ended the process on the spot and left them). Commands that pass signals on to workers
    (`run`) and `serve` install their own handlers."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # once: the clean-up itself is not interrupted
    raise SystemExit(128 + signum)


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _terminate)
    app(prog_name="claimgraph")


if __name__ == "__main__":
    main()
