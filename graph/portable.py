"""Portable paths: what the store records for a path under its own folder (`<db>.d/`, run folders and their
artifacts) is relative to that folder, so a store copied or moved together with its `.d` folder works on
another path or machine. Paths outside the folder (and everything in an in-memory store) stay absolute.

    rel = stored_path(store, run_dir)     # 'runs/sae-shuffled/20261121T061739-7838174d'
    run_dir = local_path(store, rel)      # <db>.d/runs/sae-shuffled/20261121T061739-7838174d

Stores written before schema 6 recorded absolute paths; migration 6 rewrites those under the folder.
"""
from __future__ import annotations

import os
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .store import Store


def _home(store: Store | Path | None) -> Path | None:
    if store is None or isinstance(store, Path):
        return store
    return store.home if store.path is not None else None


def stored_path(store: Store | Path | None, path: str | os.PathLike | None) -> str | None:
    """`path` as the store records it: relative to the store's folder (POSIX separators) when it lies inside it,
    else absolute. `store` may be a Store or its folder. None stays None."""
    if path is None:
        return None
    home = _home(store)
    p = Path(path)
    if home is None or not p.is_absolute():
        return str(path)
    try:
        rel = Path(os.path.abspath(p)).relative_to(os.path.abspath(home))
    except ValueError:
        return str(p)
    return PurePosixPath(*rel.parts).as_posix() if rel.parts else "."


def local_path(store: Store | Path | None, value: str | None) -> Path | None:
    """A recorded path as a path on this machine: relative values lie under the store's folder."""
    if value is None:
        return None
    p = Path(value)
    home = _home(store)
    if p.is_absolute() or home is None:
        return p
    return home / p


def relativize_home(con: Any, home: Path) -> None:
    """Migration 6 backfill: rewrite absolute paths under `home` recorded by schema <= 5 (run folders in `runs`,
    the provenance of experiment-made nodes and edges, and evidence attributes `run_dir` / `reused_from`)."""
    import json

    def rel(v: str | None) -> str | None:
        return stored_path(home, v) if v else v

    for run_id, run_dir in con.execute("SELECT run_id, run_dir FROM runs").fetchall():
        if rel(run_dir) != run_dir:
            con.execute("UPDATE runs SET run_dir = ? WHERE run_id = ?", [rel(run_dir), run_id])
    for nid, source in con.execute("SELECT id, source FROM nodes WHERE made_by = 'experiment'").fetchall():
        if rel(source) != source:
            con.execute("UPDATE nodes SET source = ? WHERE id = ?", [rel(source), nid])
    for s, t, d, source in con.execute(
            "SELECT src, type, dst, source FROM edges WHERE made_by = 'experiment'").fetchall():
        if rel(source) != source:
            con.execute("UPDATE edges SET source = ? WHERE src = ? AND type = ? AND dst = ?", [rel(source), s, t, d])
    for nid, attrs in con.execute("SELECT id, attrs FROM nodes WHERE type = 'evidence'").fetchall():
        a = json.loads(attrs) if isinstance(attrs, str) else dict(attrs or {})
        new = {**a, **{k: rel(a[k]) for k in ("run_dir", "reused_from") if isinstance(a.get(k), str)}}
        if new != a:
            con.execute("UPDATE nodes SET attrs = ?::JSON WHERE id = ?", [json.dumps(new, sort_keys=True), nid])
