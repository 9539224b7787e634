"""`claimgraph serve`: the web UI over the store, on a local port (claimgraph.web)."""
from __future__ import annotations

import ipaddress
from typing import Annotated

import typer

from .render import note


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def serve(ctx: typer.Context,
          host: Annotated[str, typer.Option(help="Address to bind; loopback unless you mean to share the store.")]
          = "127.0.0.1",
          port: Annotated[int, typer.Option(help="TCP port.", min=1, max=65535)] = 8000,
          allow_host: Annotated[list[str] | None, typer.Option(
              "--allow-host", help="Another name this server answers to in the Host header (repeatable).")] = None):
    """Browse the graph in a web browser: claim pages, search, suggestions, experiments, runs, feature pages.
    Example: claimgraph serve --port 8000  (then open http://127.0.0.1:8000/)"""
    import uvicorn

    from claimgraph.web import Settings, create_app
    from claimgraph.web.access import StoreAccess

    db = ctx.find_root().obj.db
    info = StoreAccess(db).check()  # a missing store or a newer schema fails here, before the port is taken
    if not _loopback(host):
        note(f"warning: serving on {host}: anyone who can reach this address can read the store and accept or "
             "reject suggestions")
    app = create_app(Settings(db, host=host, port=port, allow_hosts=allow_host or ()))
    note(f"serving {info['db']} ({info['nodes']} nodes) at http://{host}:{port}/ — the store is opened per "
         "request, so CLI commands can write meanwhile; Ctrl-C stops")
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
