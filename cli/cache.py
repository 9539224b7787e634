"""`claimgraph cache list` and `claimgraph cache clear`: the shared cache folder (claimgraph.experiments.cachefolders).

Registered on the root app by cli/main.py (`register(app)`); `clear` asks the store through main's `_store` whether a
run is in flight.
"""
from __future__ import annotations

from typing import Annotated

import typer

from claimgraph.graph.errors import InvalidInput, StoreBusy

from .render import emit_json, note, table

cache_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None,
                        help="What the shared cache ($CLAIMGRAPH_CACHE or ~/.cache/claimgraph) holds, and clearing "
                             "parts of it: every entry is computed again on next use.")


@cache_app.command("list")
def cache_list(ctx: typer.Context):
    """Each kind of entry in the cache: how many, their size on disk, the newest, and what they are.
    Example: claimgraph cache list"""
    from claimgraph.experiments.cachefolders import cache_summary, human_bytes

    from .main import _opts

    root, kinds = cache_summary()
    if _opts(ctx).json:
        emit_json({"root": str(root), "bytes": sum(k.bytes for k in kinds), "kinds": [k.as_dict() for k in kinds]})
        return
    table(f"cache at {root}", ["kind", "entries", "size", "newest", "holds"],
          [(k.kind, k.entries, human_bytes(k.bytes) if k.entries else "", f"{k.newest:%Y-%m-%d %H:%M}" if k.newest
            else "", k.holds) for k in kinds], wrap=("holds",))
    note(f"{human_bytes(sum(k.bytes for k in kinds))} in all; `claimgraph cache clear KIND` removes a kind")


@cache_app.command("clear")
def cache_clear(ctx: typer.Context,
                kinds: Annotated[list[str] | None, typer.Argument(metavar="[KIND]...",
                                                                   help="Kinds to remove (see `cache list`).")] = None,
                all_: Annotated[bool, typer.Option("--all", help="Every kind.")] = False,
                dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what would be removed; remove "
                                                                         "nothing.")] = False,
                force: Annotated[bool, typer.Option("--force", help="Even while a run of the store is queued or "
                                                                     "running (it may fail or recompute).")] = False):
    """Remove kinds of cache entries; each is computed again when a run next needs it (feature pages of finished
    runs read their SAE from `saes`: after clearing it, run the experiment again with --force to see them). A kind
    that another process is building into is left alone. Refused while a run of the store (--db) is queued or running, unless --force;
    runs of other stores sharing the cache are not seen. Example: claimgraph cache clear acts saes --dry-run"""
    from claimgraph.experiments.cachefolders import KINDS, cache_kinds, clear_cache, human_bytes

    from .main import _opts, _reconcile, _store

    if all_ and kinds:
        raise InvalidInput("give kinds or --all, not both")
    if not all_ and not kinds:
        raise InvalidInput(f"name the kinds to remove ({', '.join(KINDS)}), or give --all")
    names = cache_kinds()[1] if all_ else list(kinds or [])
    if not force and not dry_run and _opts(ctx).db.exists():
        with _store(ctx, session=False) as s:
            _reconcile(s)  # a run whose process died is not in flight
            with s.session():
                busy = [r for r in s.runs() if r["status"] in ("queued", "running")]
        if busy:
            raise StoreBusy(f"{len(busy)} run{'s are' if len(busy) > 1 else ' is'} queued or running in "
                            f"{_opts(ctx).db} ({', '.join(r['run_id'] for r in busy[:3])}"
                            f"{', ...' if len(busy) > 3 else ''}) and may be reading the cache; wait for "
                            f"{'them' if len(busy) > 1 else 'it'} (claimgraph runs), or give --force")
    report = clear_cache(names, dry_run=dry_run)
    if _opts(ctx).json:
        emit_json({"root": report.root, "dry_run": dry_run, "bytes": report.bytes,
                   "removed": [k.as_dict() for k in report.removed], "skipped": report.skipped})
    else:
        verb = "would remove" if dry_run else "removed"
        for k in report.removed:
            note(f"{verb} {k.kind}: {k.entries} entr{'y' if k.entries == 1 else 'ies'}, {human_bytes(k.bytes)}")
        for sk in report.skipped:
            note(f"left {sk['kind']}: {sk['reason']}")
        note(f"{verb} {human_bytes(report.bytes)} from {report.root}")
    if report.skipped:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.add_typer(cache_app, name="cache")
