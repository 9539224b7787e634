"""Exchange formats both ways: export a store as JSON-LD, TriG nanopublications, GraphML or Parquet, and
rebuild a store from its JSON-LD, Parquet or GraphML export.

    files = export(store, "json", "claims.jsonld")            # refuses an existing file unless force=True
    counts = import_(new_store, "claims.jsonld")              # into an empty store

Every export carries claim statuses and evidence, provenance and timestamps, and no absolute path of this
machine (document paths are relative to the store's folder, run folders to `<db>.d/`). See snapshot.py for the
rows every format carries, and docs/exchange.md for the vocabulary.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import InvalidInput
from ..store import Store
from .output import OutputError, atomic_file, atomic_folder, check_target
from .snapshot import Snapshot, load_snapshot, read_snapshot

FORMATS = ("json", "trig", "graphml", "parquet")          # json = JSON-LD
IMPORT_FORMATS = ("json", "parquet", "graphml")
ALIASES = {"jsonld": "json", "json-ld": "json"}
DEFAULT_NAMES = {"json": "claimgraph.jsonld", "trig": "claimgraph.trig", "graphml": "claimgraph.graphml",
                 "parquet": "claimgraph-parquet"}

__all__ = ["FORMATS", "IMPORT_FORMATS", "export", "import_", "detect_format", "Snapshot", "read_snapshot",
           "OutputError"]


def _format(fmt: str, known: tuple[str, ...], what: str) -> str:
    f = ALIASES.get(fmt.lower(), fmt.lower())
    if f not in known:
        raise InvalidInput(f"unknown {what} format {fmt!r}; choose one of {', '.join(known)} (json is JSON-LD)")
    return f


def export(store: Store, fmt: str, out: str | Path, *, force: bool = False, base: str | None = None,
           inline_context: bool = True) -> list[Path]:
    """Write the store to `out` (a file, `-` for stdout, or a folder for parquet); returns the files written.
    `base`: the IRI node ids are appended to in JSON-LD and TriG; `inline_context=False` refers to the
    published context by its IRI instead of embedding it."""
    fmt = _format(fmt, FORMATS, "export")
    if base is not None:
        from .vocab import check_base

        check_base(base)
    if fmt == "parquet":
        if str(out) == "-":
            raise OutputError("Parquet writes a folder of files; give a folder with -o, not '-'")
        out = Path(out)
        check_target(store, out, force=force, folder=True)
        from .parquet import write_parquet

        return atomic_folder(out, lambda tmp: write_parquet(store, tmp))
    if str(out) != "-":
        check_target(store, Path(out), force=force, folder=False)
    if fmt == "json":
        from .jsonld import jsonld_document

        doc = jsonld_document(store, base=base, inline_context=inline_context)
        with atomic_file(out) as f:
            json.dump(doc, f, indent=1, ensure_ascii=False)
            f.write("\n")
    elif fmt == "trig":
        from .trig import write_trig

        with atomic_file(out, binary=True) as f:
            write_trig(store, f, base=base)
    else:
        from .graphml import write_graphml

        with atomic_file(out, binary=True) as f:
            write_graphml(store, f)
    return [Path(out)]


def detect_format(path: Path) -> str:
    """The import format of `path`: a folder is Parquet; else by suffix (.jsonld/.json, .graphml/.xml)."""
    if path.is_dir():
        return "parquet"
    suffix = path.suffix.lower()
    if suffix in (".jsonld", ".json"):
        return "json"
    if suffix in (".graphml", ".xml"):
        return "graphml"
    if suffix == ".trig":
        raise InvalidInput(f"{path}: TriG nanopublications are an export only; import the JSON-LD or Parquet "
                           "export of the store instead")
    raise InvalidInput(f"{path}: cannot tell the format from the name; pass --format json|parquet|graphml")


def read_export(path: str | Path, fmt: str = "auto", *, base: str | None = None) -> Snapshot:
    """The rows of an export file or folder."""
    path = Path(path)
    if not path.exists():
        raise InvalidInput(f"{path} does not exist")
    fmt = detect_format(path) if fmt == "auto" else _format(fmt, IMPORT_FORMATS, "import")
    if fmt == "parquet":
        from .parquet import read_parquet

        return read_parquet(path)
    if path.is_dir():
        raise InvalidInput(f"{path} is a folder; a {fmt} export is one file")
    if fmt == "graphml":
        from .graphml import read_graphml

        return read_graphml(path)
    from .jsonld import read_jsonld

    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise InvalidInput(f"{path}: not UTF-8 text: {e}") from None
    except json.JSONDecodeError as e:
        raise InvalidInput(f"{path}:{e.lineno}: not JSON: {e.msg}") from None
    except OSError as e:
        raise InvalidInput(f"{path}: cannot read: {e.strerror}") from None
    return read_jsonld(doc, base=base)


def import_(store: Store, path: str | Path, fmt: str = "auto", *, base: str | None = None) -> dict[str, int]:
    """Rebuild `store` (which must be empty) from an export; returns rows written per table. The keyword index
    is rebuilt; vectors come with Parquet (JSON-LD and GraphML need `claimgraph embed` for semantic search)."""
    snap = read_export(path, fmt, base=base)
    return load_snapshot(store, snap)


def snapshot_equal(a: Snapshot, b: Snapshot) -> dict[str, Any]:
    """Differences between two snapshots by table (empty when equal): the rows only one side has."""
    out: dict[str, Any] = {}
    for name in sorted(set(a.tables) | set(b.tables)):
        ra, rb = a.tables.get(name, []), b.tables.get(name, [])
        if ra != rb:
            ka = [json.dumps(r, sort_keys=True, default=str) for r in ra]
            kb = [json.dumps(r, sort_keys=True, default=str) for r in rb]
            out[name] = {"only_first": sorted(set(ka) - set(kb))[:5], "only_second": sorted(set(kb) - set(ka))[:5]}
    return out
