"""The `claimgraph` command: a thin typer shell over claimgraph.graph, .ingest and .experiments.

Each command opens the store, calls one to three API functions and renders the result (a table, or JSON
with --json). Expected failures print `Error: <message>` on stderr and exit 2 (bad input or usage) or 1.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, cast

import typer
from typer.core import TyperGroup

from claimgraph.graph.errors import ClaimgraphError

if TYPE_CHECKING:
    from claimgraph.graph import Store

from . import render
from .render import emit_json, fmt_counts, fmt_score, note, table

DEFAULT_DB = "claimgraph.duckdb"


class _Group(TyperGroup):
    """Catches expected failures once, for every command and sub-command."""

    def invoke(self, ctx):  # typer's own (vendored) click Context
        try:
            return super().invoke(ctx)
        except ClaimgraphError as e:
            typer.echo(f"Error: {e}", err=True)
            ctx.exit(e.exit_code)


app = typer.Typer(cls=_Group, no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="A knowledge graph of research claims, findings and methods, linked to experiments that "
                       "test them. Example: claimgraph ingest data/papers && claimgraph list --type claim")
experiment_app = typer.Typer(cls=_Group, no_args_is_help=True, help="Register and list experiments.")
app.add_typer(experiment_app, name="experiment")


class Opts:
    def __init__(self, db: Path, json_out: bool):
        self.db = db
        self.json = json_out


@app.callback()
def _root(ctx: typer.Context,
          db: Annotated[Path, typer.Option("--db", envvar="CLAIMGRAPH_DB", help="Database file.")] = Path(DEFAULT_DB),
          json_out: Annotated[bool, typer.Option("--json", help="Machine-readable JSON on stdout.")] = False):
    """claimgraph: which claims hold up, and what tested them."""
    ctx.obj = Opts(db, json_out)


def _opts(ctx: typer.Context) -> Opts:
    return ctx.find_root().obj


@contextmanager
def _store(ctx: typer.Context, *, create: bool = False) -> Iterator[Store]:
    from claimgraph.graph import Store

    with Store(_opts(ctx).db, create=create) as s:
        if s.schema_version() >= 2:
            from claimgraph.experiments.runner import reconcile

            for row in reconcile(s):
                note(f"run {row['run_id']} of {row['experiment_id']} ended: {row['status']}"
                     + (f" ({row['error']})" if row.get("error") else ""))
        yield s


def _stale_check():
    """The graph's StaleCheck: which evidence no longer matches the code, model, data or parameters."""
    from claimgraph.experiments.staleness import stale_evidence

    return stale_evidence


def _node_type(value: str | None):
    from claimgraph.graph.models import parse_node_type

    return parse_node_type(value)


# ---- graph ----------------------------------------------------------------------------------------
@app.command()
def init(ctx: typer.Context):
    """Create an empty store (or migrate an existing one). Example: claimgraph --db claims.duckdb init"""
    with _store(ctx, create=True) as s:
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
    from claimgraph.ingest import ingest_paths

    with _store(ctx, create=True) as s:
        reports = ingest_paths(s, paths, format=format, title=title, embed=embed)
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
               limit: Annotated[int | None, typer.Option(help="At most this many.")] = None):
    """List nodes (claims and findings with their evidence status). Example: claimgraph list --type claim"""
    from claimgraph.graph.queries import list_rows

    ntype = _node_type(type)
    with _store(ctx) as s:
        rows = list_rows(s, s.list_nodes(ntype, limit=limit), stale=_stale_check())
    if _opts(ctx).json:
        emit_json({"nodes": rows})
        return
    cols = ["id", "type", "title", "status", "edges"]
    table(f"{type + ' ' if type else ''}nodes ({len(rows)})", cols,
          [(r["id"], r["type"], r["title"], (r["status"] or "") + (" · STALE" if r["stale"] else ""), r["edges"])
           for r in rows])
    if any(r["stale"] for r in rows):
        note("STALE: evidence whose code, model, data or parameters changed since it ran (`claimgraph show ID` says "
             "which; `claimgraph run --stale` re-runs them)")


@app.command()
def show(ctx: typer.Context, node_id: Annotated[str, typer.Argument(metavar="ID")],
         k: Annotated[int, typer.Option("-k", help="Computed similarity neighbours to add.")] = 8,
         threshold: Annotated[float, typer.Option(help="Cosine threshold for similarity neighbours.")] = 0.65):
    """A node's page: status, source paper, typed neighbours by edge count, evidence, similar entries.
    Example: claimgraph show claim:learned-features-reflect-the-functionality-of-the-model-..."""
    from claimgraph.graph.queries import node_page

    from .pages import page_json, render_page

    with _store(ctx) as s:
        page = node_page(s, node_id, k_similar=k, threshold=threshold, stale=_stale_check())
    if _opts(ctx).json:
        emit_json(page_json(page))
    else:
        render_page(page)


@app.command()
def neighbors(ctx: typer.Context, node_id: Annotated[str, typer.Argument(metavar="ID")],
              depth: Annotated[int, typer.Option("--depth", "-d", help="Hops to follow.")] = 1,
              edge: Annotated[list[str] | None, typer.Option("--edge", help="Only these edge types.")] = None):
    """Nodes within N typed hops. Example: claimgraph neighbors claim:... --depth 2"""
    from claimgraph.graph.queries import neighborhood

    with _store(ctx) as s:
        hops = neighborhood(s, node_id, depth=depth, edge_types=edge)
    if _opts(ctx).json:
        emit_json({"nodes": hops})
        return
    table(f"within {depth} hop(s) of {node_id}", ["depth", "id", "type", "title", "via"],
          [(h.depth, h.id, h.type.value, h.title,
            "" if h.via is None or h.edge is None else f"{'→' if h.direction == 'out' else '←'} {h.edge.value} {h.via}") for h in hops])


@app.command()
def path(ctx: typer.Context, a: Annotated[str, typer.Argument(metavar="A")],
         b: Annotated[str, typer.Argument(metavar="B")]):
    """Shortest chain of typed edges between two nodes. Example: claimgraph path claim:x paper:y"""
    from claimgraph.graph.queries import shortest_path

    with _store(ctx) as s:
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
           k: Annotated[int, typer.Option("-k", help="Results to return.")] = 10):
    """Hybrid semantic + keyword search. Example: claimgraph search "features of shuffled models" --type finding"""
    from claimgraph.graph.search import search as do_search

    ntype = _node_type(type)
    with _store(ctx) as s:
        results = do_search(s, query, type=ntype, k=k)
    if _opts(ctx).json:
        emit_json({"results": [{"id": r.id, "type": r.type.value, "title": r.title, "score": r.score,
                                "semantic": r.semantic, "keyword": r.keyword} for r in results]})
        return
    table(f"search: {query}", ["score", "semantic", "keyword", "id", "type", "title"],
          [(fmt_score(r.score), fmt_score(r.semantic), fmt_score(r.keyword), r.id, r.type.value, r.title)
           for r in results])


@app.command()
def suggest(ctx: typer.Context,
            threshold: Annotated[float, typer.Option(help="Minimum cosine.")] = 0.65,
            type: Annotated[str | None, typer.Option("--type", "-t", help="Only pairs of this node type.")] = None,
            limit: Annotated[int | None, typer.Option(help="At most this many.")] = None):
    """Pairs that look related but have no typed edge, best first; near-identical ones flagged duplicate.
    Example: claimgraph suggest --threshold 0.7 --type claim"""
    from claimgraph.graph.similarity import suggest as do_suggest

    ntype = _node_type(type)
    with _store(ctx) as s:
        found = do_suggest(s, threshold=threshold, type=ntype, limit=limit)
    if _opts(ctx).json:
        emit_json({"suggestions": [{"src": x.src, "dst": x.dst, "score": x.score, "duplicate": x.duplicate,
                                    "src_type": x.src_type.value if x.src_type else None,
                                    "dst_type": x.dst_type.value if x.dst_type else None,
                                    "src_title": x.src_title, "dst_title": x.dst_title} for x in found]})
        return
    table(f"suggestions (cosine ≥ {threshold:g}, no typed edge)", ["score", "dup", "src", "dst", "src title", "dst title"],
          [(fmt_score(x.score), "yes" if x.duplicate else "", x.src, x.dst, x.src_title, x.dst_title) for x in found],
          wrap=("src title", "dst title"))
    if found:
        note("accept one with `claimgraph accept SRC DST [--edge TYPE]`, or `claimgraph reject SRC DST`")


@app.command()
def accept(ctx: typer.Context, src: str, dst: str,
           edge: Annotated[str | None, typer.Option(help="Edge type (default: duplicate_of for duplicates, "
                                                            "else associated_with).")] = None):
    """Turn a suggested pair into a typed edge. Example: claimgraph accept finding:a claim:b --edge supports"""
    from claimgraph.graph.similarity import accept as do_accept

    with _store(ctx) as s:
        e = do_accept(s, src, dst, edge=edge)
    if _opts(ctx).json:
        emit_json({"edge": e})
    else:
        note(f"added {e.src} -{e.type.value}-> {e.dst}")


@app.command()
def reject(ctx: typer.Context, src: str, dst: str):
    """Record that a suggested pair is unrelated; it is never proposed again. Example: claimgraph reject claim:a claim:b"""
    from claimgraph.graph.similarity import reject as do_reject

    with _store(ctx) as s:
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

    attrs = dict(parse_param(a) for a in attr or [])
    with _store(ctx) as s:
        e = s.link(src, edge, dst, attrs=attrs)
    if _opts(ctx).json:
        emit_json({"edge": e})
    else:
        note(f"added {e.src} -{e.type.value}-> {e.dst}")


@app.command()
def embed(ctx: typer.Context):
    """Encode every node whose text has no vector yet (ingest does this unless --no-embed). Example: claimgraph embed"""
    from claimgraph.graph.embed import embed_all

    with _store(ctx) as s:
        n = embed_all(s, progress=None)
    if _opts(ctx).json:
        emit_json({"encoded": n})
    else:
        note(f"encoded {n} new text(s)")


@app.command()
def stats(ctx: typer.Context):
    """Counts of nodes and edges by type. Example: claimgraph stats"""
    with _store(ctx) as s:
        nodes, edges = s.count_nodes(), s.count_edges()
        info = {"db": str(s.path), "schema_version": s.schema_version(), "nodes": nodes, "edges": edges,
                "documents": len(s.documents())}
    if _opts(ctx).json:
        emit_json(info)
        return
    table(f"{info['db']} (schema v{info['schema_version']}, {info['documents']} documents)", ["kind", "type", "count"],
          [("node", k, v) for k, v in nodes.items()] + [("edge", k, v) for k, v in edges.items()])


# ---- experiments ----------------------------------------------------------------------------------
@experiment_app.command("kinds")
def experiment_kinds(ctx: typer.Context):
    """Job kinds that can be run, with their default criterion. Example: claimgraph experiment kinds"""
    from claimgraph.experiments.registry import get_job, kinds

    rows = []
    for k in kinds():
        job = get_job(k)
        rows.append({"kind": k, "summary": job.summary, "criterion": job.default_criterion.describe(),
                     "params": {name: f.default for name, f in job.Params.model_fields.items()},
                     "metrics": job.metrics})
    if _opts(ctx).json:
        emit_json({"kinds": rows})
        return
    table("job kinds", ["kind", "summary", "default criterion"], [(r["kind"], r["summary"], r["criterion"]) for r in rows],
          wrap=("summary", "default criterion"))


@experiment_app.command("add")
def experiment_add(ctx: typer.Context,
                   claim: Annotated[list[str], typer.Option("--claim", "-c", help="Claim or finding it tests (repeatable).")],
                   kind: Annotated[str, typer.Option("--kind", "-k", help="Job kind (see `experiment kinds`).")],
                   param: Annotated[list[str] | None, typer.Option("--param", "-p", help="name=value (repeatable).")] = None,
                   criterion: Annotated[str | None, typer.Option(
                       help="'metric > threshold [band=X] [conf=Y]'; default: the kind's.")] = None,
                   model: Annotated[str | None, typer.Option(help="toy:<preset> or hf:<local dir>[@revision]")] = None,
                   data: Annotated[str | None, typer.Option(help="synthetic:<preset> or text:<file>")] = None,
                   seeds: Annotated[str | None, typer.Option(
                       help="N (seeds 0..N-1), A-B (A..B, e.g. fresh seeds for a replication) or A,B,C.")] = None,
                   device: Annotated[str | None, typer.Option(help="cpu | cuda | auto")] = None,
                   title: Annotated[str | None, typer.Option(help="Title of the experiment node.")] = None,
                   exp_id: Annotated[str | None, typer.Option("--id", help="Experiment id (experiment:slug).")] = None):
    """Register an experiment testing a claim; its spec and criterion are fixed now, before any run.
    Example: claimgraph experiment add --claim claim:x --kind sae --param control=shuffled"""
    from claimgraph.experiments.api import add_experiment, parse_param

    params = dict(parse_param(p) for p in param or [])
    with _store(ctx) as s:
        node = add_experiment(s, claim, kind, title=title, experiment_id=exp_id, params=params, criterion=criterion,
                              model=model, data=data, seeds=seeds, device=device)
    if _opts(ctx).json:
        emit_json({"experiment": node})
    else:
        spec = node.attrs["spec"]
        note(f"experiment {node.id}\n  kind {spec['kind']} on {spec['model']} / {spec['data']}, seeds {spec['seeds']}\n"
             f"  params {spec['params']}\n  criterion {spec['criterion']}")
        print(node.id)


@experiment_app.command("list")
def experiment_list(ctx: typer.Context):
    """Experiments with what they test and their latest verdict. Example: claimgraph experiment list"""
    from claimgraph.experiments.api import list_experiments

    with _store(ctx) as s:
        rows = list_experiments(s)
    if _opts(ctx).json:
        emit_json({"experiments": rows})
        return
    table("experiments", ["id", "kind", "tests", "criterion", "last run", "status", "verdict"],
          [(r["id"], r["kind"], ", ".join(r["targets"]), r["criterion"], r["last_run"], r["last_status"], r["verdict"])
           for r in rows], wrap=("tests", "criterion"))


@app.command()
def run(ctx: typer.Context, experiment: Annotated[str | None, typer.Argument(metavar="[EXP]")] = None,
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
    Example: claimgraph run experiment:sae-learned-features-reflect-... --seeds 3; claimgraph run --stale;
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
        if experiment or seeds:
            raise typer.BadParameter("--stale re-runs every stale experiment on its own seeds; give no EXP or --seeds")
        with _store(ctx) as s:
            outcomes = run_stale(s, device=device, on_start=started,
                                 run=submit if submit is not None else partial(run_experiment, runs_dir=runs_dir))
        if opts.json:
            emit_json({"runs": outcomes})
        elif not outcomes:
            note("no stale evidence: nothing to re-run")
        else:
            table("re-runs of stale experiments", ["experiment", "run", "status", "verdict", "evidence"],
                  [(o.experiment_id, o.run_id, o.status, o.verdict, o.evidence_id) for o in outcomes])
        if any(o.status != "completed" for o in outcomes):
            raise typer.Exit(1)
        return
    if not experiment:
        raise typer.BadParameter("give the experiment to run (EXP), or --stale")
    with _store(ctx) as s:
        if submit is not None:
            outcome = submit(s, experiment, device=device, seeds=seeds, force=force)
        else:
            outcome = run_experiment(s, experiment, device=device, seeds=seeds, force=force, on_start=started,
                                     runs_dir=runs_dir)
    if opts.json:
        emit_json(outcome)
    elif outcome.executor and outcome.status == "queued":
        render.lines([f"run {outcome.run_id}: submitted to {outcome.executor} ({len(outcome.job_ids)} task(s): "
                      f"{', '.join(outcome.job_ids)})", f"folder: {outcome.run_dir}",
                      "follow it with `claimgraph runs`; `claimgraph collect` attaches its evidence when it is done"])
    else:
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
    if outcome.status != "completed" and not (outcome.executor and outcome.status == "queued"):
        raise typer.Exit(1)


@app.command()
def runs(ctx: typer.Context, experiment: Annotated[str | None, typer.Argument(metavar="[EXP]")] = None):
    """Run records, newest first; runs handed to Slurm or a local executor as the scheduler reports them.
    Example: claimgraph runs experiment:..."""
    from claimgraph.experiments.executors import task_summary

    with _store(ctx) as s:
        rows = s.runs(experiment)
    if _opts(ctx).json:
        for r in rows:
            r["executor"] = task_summary(r["run_dir"]) if r["status"] not in ("completed",) else \
                _executor_brief(r["run_dir"])
        emit_json({"runs": rows})
        return

    def took(r):
        if r["started_at"] is None and r["ended_at"] is None:
            return ""
        start = r["started_at"] or r["created_at"]
        return f"{(r['ended_at'] - start).total_seconds():.0f}s" if r["ended_at"] else "…"

    table("runs", ["run", "experiment", "status", "verdict", "device", "took", "created"],
          [(r["run_id"], r["experiment_id"], r["status"], r["verdict"], r["device"], took(r),
            f"{r['created_at']:%Y-%m-%d %H:%M}") for r in rows])


def _executor_brief(run_dir: str):
    from claimgraph.experiments.executors import read_record

    rec = read_record(Path(run_dir))
    return None if rec is None else {"executor": rec.executor, "job_ids": rec.job_ids}


@app.command()
def collect(ctx: typer.Context, run_id: Annotated[str | None, typer.Argument(metavar="[RUN]")] = None,
            wait: Annotated[bool, typer.Option("--wait", help="Wait until the run (or every run in flight) ends.")] = False,
            poll: Annotated[float, typer.Option(help="Seconds between checks with --wait.")] = 5.0):
    """Follow runs handed to an executor: when every task of one is done, aggregate its seeds, decide by its
    criterion and attach the evidence (once). Any command does this; `collect` says what it found.
    Example: claimgraph collect 20261201T120000-1a2b3c4d-5e6f7a8b --wait"""
    import time

    from claimgraph.experiments.runner import reconcile

    def pending(s) -> list[dict]:
        rows = s.runs(run_id=run_id) if run_id else s.runs(status="queued") + s.runs(status="running")
        if run_id and not rows:
            from claimgraph.graph.errors import NotFound

            raise NotFound(f"no run {run_id!r}; `claimgraph runs` lists them")
        return [r for r in rows if r["status"] in ("queued", "running")]

    ended: list[dict] = []
    while True:
        with _store(ctx) as s:  # reconciles
            ended += reconcile(s)
            left = pending(s)
            rows = s.runs(run_id=run_id) if run_id else left
        if not wait or not left:
            break
        time.sleep(poll)
    if _opts(ctx).json:
        emit_json({"runs": rows if run_id else left, "ended": ended})
        return
    table("runs", ["run", "experiment", "status", "verdict", "evidence", "error"],
          [(r["run_id"], r["experiment_id"], r["status"], r["verdict"], r["evidence_id"], r["error"])
           for r in (rows if run_id else left)])
    if not run_id and not left:
        note("no run in flight")


@app.command()
def cancel(ctx: typer.Context, run_id: Annotated[str, typer.Argument(metavar="RUN")]):
    """Cancel a run in flight (its Slurm array, its local jobs or its worker) and record it killed.
    Example: claimgraph cancel 20261201T120000-1a2b3c4d-5e6f7a8b"""
    from claimgraph.experiments.executors import cancel_run

    with _store(ctx) as s:
        row = cancel_run(s, run_id)
    if _opts(ctx).json:
        emit_json({"run": row})
    else:
        note(f"run {row['run_id']}: {row['status']}")


@app.command()
def evidence(ctx: typer.Context, claim: Annotated[str, typer.Argument(metavar="CLAIM")],
             all_: Annotated[bool, typer.Option("--all", help="Include evidence superseded by later runs.")] = False):
    """Evidence about a claim or finding, and its derived status. Example: claimgraph evidence claim:..."""
    from claimgraph.graph.queries import evidence_for, status_reports

    check = _stale_check()
    with _store(ctx) as s:
        s.get_node(claim)
        ev = evidence_for(s, claim, include_superseded=all_)
        report = status_reports(s, [claim], stale=check)[claim]
    stale = check(ev) if ev else {}
    if _opts(ctx).json:
        emit_json({"claim": claim, "status": report.status, "status_report": report.model_dump(mode="json"),
                   "evidence": [{"id": e.id, "title": e.title, "text": e.text, **e.attrs, "stale": stale.get(e.id)}
                                for e in ev]})
        return
    d = lambda e: e.attrs.get("decision", {})
    table(f"{claim}: {report.describe()}", ["verdict", "value", "CI", "n", "criterion", "experiment", "run"],
          [(str(e.attrs.get("verdict")) + (" (not deciding)" if e.attrs.get("decisive", True) is False else "")
            + (" STALE" if e.id in stale else ""), fmt_score(d(e).get("mean")),
            "" if d(e).get("n", 0) < 2 else f"[{d(e)['ci_low']:.3g}, {d(e)['ci_high']:.3g}]", d(e).get("n"),
            _criterion_text(e.attrs.get("criterion")), e.attrs.get("experiment"), e.attrs.get("run_id")) for e in ev],
          wrap=("criterion",))
    for e in ev:
        if e.id in stale:
            note(f"stale: {e.id}: {stale[e.id]}")
    if stale:
        note("`claimgraph run --stale` re-runs the experiments whose evidence is stale")


@app.command()
def feature(ctx: typer.Context,
            run: Annotated[str, typer.Argument(metavar="RUN", help="Run id (see `claimgraph runs`) or run folder.")],
            feature: Annotated[int, typer.Argument(metavar="FEATURE", help="Latent index in the run's SAE.")],
            seed: Annotated[int | None, typer.Option(help="Seed whose SAE (default: the run's first).")] = None,
            condition: Annotated[str | None, typer.Option(help="sae runs: trained | shuffled (default trained).")] = None,
            device: Annotated[str, typer.Option(help="cpu | cuda | auto")] = "cpu"):
    """A feature's page: top activating contexts, density, logit table, related runs; HTML in the run folder.
    Example: claimgraph feature 20261121T061739-7838174d 186"""
    from claimgraph.experiments.pages import page_for_run

    from .feature import render_feature

    with _store(ctx) as s:
        page = page_for_run(s, run, feature, seed=seed, condition=condition, device=device)
    render_feature(page, _opts(ctx).json)


def _criterion_text(c: dict | None) -> str:
    if not c:
        return ""
    from claimgraph.experiments.spec import Criterion

    return Criterion.model_validate(c).describe()


# ---- exchange formats (cli/exchange.py) -------------------------------------------------------------
from .exchange import register as _register_exchange  # noqa: E402

_register_exchange(app)

# ---- the web UI (cli/serve.py) ----------------------------------------------------------------------
from .serve import serve  # noqa: E402

app.command()(serve)


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    app()


if __name__ == "__main__":
    main()
