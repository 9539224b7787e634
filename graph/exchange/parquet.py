"""Parquet: one file per stored table (lossless, vectors included), for data work and for `claimgraph import`.

    nodes.parquet            every node; attrs as JSON text; `status` (and `status_detail`: which methods gave
                             which verdict) is the derived claim/finding status
    edges.parquet            every typed edge with its provenance
    node_sources.parquet, edge_sources.parquet   which documents mention which node / edge
    documents.parquet, stated_similarity.parquet, suggestions.parquet, runs.parquet, embeddings.parquet
    evidence.parquet         derived: one row per (claim or finding, current evidence) with verdict, value,
                             interval, criterion and run
    claimgraph.json          what the folder is: format version, schema version, row counts

Document paths are relative to the store's folder (see snapshot.py); import reads only the stored tables.
"""
from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..errors import InvalidInput
from ..schema import EMBED_DIM
from .snapshot import (
    BULK_TABLES,
    COLUMNS,
    FORMAT_VERSION,
    JSON_COLUMNS,
    Snapshot,
    derive,
    iso,
    read_arrow,
    read_snapshot,
)

MANIFEST = "claimgraph.json"
KIND = "claimgraph-parquet"


def _schema(name: str):
    import pyarrow as pa

    ts = pa.timestamp("us")
    types: dict[str, Any] = {
        "created_at": ts, "updated_at": ts, "ingested_at": ts, "decided_at": ts, "started_at": ts, "ended_at": ts,
        "score": pa.float64(), "duplicate": pa.bool_(), "pid": pa.int64(),
        "vector": pa.list_(pa.float32(), EMBED_DIM),
    }
    return pa.schema([(c, types.get(c, pa.string())) for c in COLUMNS[name]])


def write_parquet(store: Any, folder: Path) -> list[Path]:
    """Write the store's tables (and the derived evidence table) into `folder`; returns the files."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    snap = read_snapshot(store, tables=tuple(t for t in COLUMNS if t not in BULK_TABLES))
    der = derive(store, snap)
    written = []
    counts = {}
    for name in BULK_TABLES:
        table = read_arrow(store, name).cast(_schema(name))
        pq.write_table(table, folder / f"{name}.parquet")
        written.append(folder / f"{name}.parquet")
        counts[name] = table.num_rows
    for name, rows in snap.tables.items():
        data = {c: [json.dumps(r[c], sort_keys=True) if (name, c) in JSON_COLUMNS else r[c] for r in rows]
                for c in COLUMNS[name]}
        table = pa.table(data, schema=_schema(name))
        if name == "nodes":
            table = table.append_column("status", pa.array([der.status.get(i) for i in data["id"]], pa.string()))
            table = table.append_column("status_detail", pa.array([der.detail.get(i) for i in data["id"]], pa.string()))
        path = folder / f"{name}.parquet"
        pq.write_table(table, path)
        written.append(path)
        counts[name] = len(rows)
    ev_rows = [{"target": target, "evidence": s.id, "verdict": s.verdict, "metric": s.metric, "value": s.value,
                "ci_low": s.ci_low, "ci_high": s.ci_high, "n": s.n, "confidence": s.confidence,
                "interval_covers": s.interval_covers, "criterion": s.criterion, "run_id": s.run_id,
                "experiment": s.experiment, "superseded": s.superseded, "decisive": s.decisive,
                "status": der.status.get(target)}
               for target, evs in sorted(der.evidence.items()) for s in evs]
    ev_schema = pa.schema([("target", pa.string()), ("evidence", pa.string()), ("verdict", pa.string()),
                           ("metric", pa.string()), ("value", pa.float64()), ("ci_low", pa.float64()),
                           ("ci_high", pa.float64()), ("n", pa.int64()), ("confidence", pa.float64()),
                           ("interval_covers", pa.string()), ("criterion", pa.string()), ("run_id", pa.string()),
                           ("experiment", pa.string()), ("superseded", pa.bool_()), ("decisive", pa.bool_()),
                           ("status", pa.string())])
    pq.write_table(pa.Table.from_pylist(ev_rows, schema=ev_schema), folder / "evidence.parquet")
    written.append(folder / "evidence.parquet")
    manifest = {"format": KIND, "format_version": FORMAT_VERSION, "schema_version": snap.schema_version,
                "exported_at": iso(datetime.now(timezone.utc).replace(tzinfo=None)), "rows": counts,
                "paths": "document paths relative to the folder holding the store; run folders relative to <db>.d/"}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    written.append(folder / MANIFEST)
    return written


def read_parquet(folder: Path) -> Snapshot:
    """A snapshot from a folder `write_parquet` wrote (`claimgraph.json` says so)."""
    import pyarrow.parquet as pq

    folder = Path(folder)
    mpath = folder / MANIFEST
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InvalidInput(f"{folder} has no {MANIFEST}: not a folder that `claimgraph export --format parquet` "
                           "wrote") from None
    except (OSError, ValueError) as e:
        raise InvalidInput(f"{mpath}: {e}") from None
    if manifest.get("format") != KIND or manifest.get("format_version", 0) > FORMAT_VERSION:
        raise InvalidInput(f"{mpath}: format {manifest.get('format')!r} version {manifest.get('format_version')!r}; "
                           f"this claimgraph reads {KIND} up to version {FORMAT_VERSION}")
    tables: dict[str, list[dict[str, Any]]] = {}
    for name, cols in COLUMNS.items():
        path = folder / f"{name}.parquet"
        if not path.exists():
            if manifest.get("rows", {}).get(name):
                raise InvalidInput(f"{path} is missing ({manifest['rows'][name]} rows listed in {MANIFEST})")
            continue
        try:
            table = pq.read_table(path)
        except Exception as e:  # pyarrow raises its own error types for damaged files
            raise InvalidInput(f"{path}: not a readable Parquet file: {e}") from None
        missing = [c for c in cols if c not in table.column_names]
        if missing:
            raise InvalidInput(f"{path}: column(s) {', '.join(missing)} missing")
        table = table.select(list(cols))
        if name in BULK_TABLES:
            try:
                tables[name] = table.cast(_schema(name))
            except (ValueError, TypeError, NotImplementedError) as e:  # pyarrow's cast errors
                raise InvalidInput(f"{path}: columns of the wrong type: {e}") from None
            continue
        rows = table.to_pylist()
        for r in rows:
            for c in cols:
                if (name, c) in JSON_COLUMNS:
                    try:
                        r[c] = json.loads(r[c]) if r[c] is not None else {}
                    except ValueError as e:
                        raise InvalidInput(f"{path}: {c} of row {r.get('id') or r.get('src')!r} is not JSON: {e}") from None
                elif isinstance(r[c], datetime) and r[c].tzinfo is not None:
                    r[c] = r[c].astimezone(timezone.utc).replace(tzinfo=None)
        tables[name] = rows
    return Snapshot(tables=tables, schema_version=int(manifest.get("schema_version", 0)))
