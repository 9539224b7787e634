"""A store's content as plain rows, in the portable form every export writes and every import reads.

`read_snapshot` gives one list of row dicts per stored table (everything a store holds except what is derived
from it: text hashes, the keyword index, paper identity keys). Paths of source documents are written relative to
the folder holding the store (POSIX separators; `..` where a document lies outside it), so no export carries an
absolute path of this machine; `load_snapshot` resolves them against the folder of the store it writes to. Run
folders are already recorded relative to the store's `<db>.d/` folder (graph/portable.py) and pass unchanged.

Derived views that exports add for their readers (claim status, evidence summaries) are in `derived`; imports
ignore them and the store derives them again.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any

from ..errors import InvalidInput
from ..models import NodeType
from ..store import Store

FORMAT_VERSION = 1

# The stored tables and their columns, in the order exports write them. Vectors are carried by Parquet only.
COLUMNS: dict[str, tuple[str, ...]] = {
    "nodes": ("id", "type", "title", "text", "attrs", "source", "source_hash", "made_by", "created_at", "updated_at"),
    "node_sources": ("node_id", "path"),
    "edges": ("src", "type", "dst", "attrs", "source", "source_hash", "made_by", "created_at", "updated_at"),
    "edge_sources": ("src", "type", "dst", "path"),
    "documents": ("path", "content_hash", "format", "title", "ingested_at"),
    "stated_similarity": ("node_id", "other_key", "other_id", "other_title", "other_type", "other_text", "score",
                          "source", "source_hash", "created_at"),
    "suggestions": ("a", "b", "score", "duplicate", "state", "edge_type", "model", "created_at", "decided_at"),
    "runs": ("run_id", "experiment_id", "config_hash", "status", "device", "run_dir", "pid", "host", "created_at",
             "started_at", "ended_at", "error", "verdict", "evidence_id"),
    "embeddings": ("text_hash", "model", "vector", "created_at"),
}
ORDER_BY = {"nodes": "id", "node_sources": "node_id, path", "edges": "src, type, dst",
            "edge_sources": "src, type, dst, path", "documents": "path", "stated_similarity": "node_id, other_key",
            "suggestions": "a, b", "runs": "run_id", "embeddings": "model, text_hash"}
JSON_COLUMNS = {("nodes", "attrs"), ("edges", "attrs")}
# Columns that hold the path of a source document (made relative to the store's folder in exports).
DOC_PATH_COLUMNS = {("node_sources", "path"), ("edge_sources", "path"), ("documents", "path"),
                    ("stated_similarity", "source")}


def doc_base(store: Store) -> Path:
    """The folder document paths are written relative to: the one holding the store (cwd for an in-memory one)."""
    return store.path.parent if store.path is not None else Path.cwd()


def portable_doc_path(base: Path, path: str | None) -> str | None:
    """An absolute document path as a POSIX path relative to `base`. A path the store holds as relative (only
    the Python API can record one) is marked with a leading './', so `local_doc_path` gives it back as it was."""
    if path is None:
        return None
    if not os.path.isabs(path):
        return "./" + path
    return PurePosixPath(*Path(os.path.relpath(path, base)).parts).as_posix()


def local_doc_path(base: Path, path: str | None) -> str | None:
    """The inverse of `portable_doc_path` for the store at `base`."""
    if path is None or os.path.isabs(path):
        return path
    if path.startswith("./"):
        return path[2:]
    return os.path.normpath(os.path.join(base, *PurePosixPath(path).parts))


def _is_doc_source(table: str, row: dict[str, Any]) -> bool:
    """A node or edge `source` names a document when ingest made the row (made_by parsed)."""
    return table in ("nodes", "edges") and row.get("made_by") == "parsed"


@dataclass
class Snapshot:
    """A store's rows (`tables`), in portable form, and the store's schema version."""

    tables: dict[str, Any]  # table -> list of row dicts (or, from Parquet, an Arrow table for BULK_TABLES)
    schema_version: int
    derived: dict[str, Any] = field(default_factory=dict)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Snapshot) and self.tables == other.tables


def read_snapshot(store: Store, *, tables: tuple[str, ...] | None = None, vectors: bool = True) -> Snapshot:
    """Every stored table's rows (sorted by key), document paths relative to the store's folder."""
    base = doc_base(store)
    out: dict[str, list[dict[str, Any]]] = {}
    for name in tables or tuple(COLUMNS):
        if name == "embeddings" and not vectors:
            continue
        cols = COLUMNS[name]
        select = ", ".join(f"{c}::VARCHAR" if (name, c) in JSON_COLUMNS else c for c in cols)
        rows = [dict(zip(cols, r)) for r in store.sql(f"SELECT {select} FROM {name} ORDER BY {ORDER_BY[name]}")]
        for row in rows:
            for c in cols:
                if (name, c) in JSON_COLUMNS:
                    row[c] = json.loads(row[c]) if row[c] is not None else {}
                elif (name, c) in DOC_PATH_COLUMNS or (c == "source" and _is_doc_source(name, row)):
                    row[c] = portable_doc_path(base, row[c])
            if name == "embeddings":
                row["vector"] = [float(x) for x in row["vector"]]
        out[name] = rows
    return Snapshot(tables=out, schema_version=store.schema_version())


# Tables that can be large (millions of open suggestions, a vector per text) and hold no paths: Parquet moves them
# as Arrow tables, never as Python rows.
BULK_TABLES = ("suggestions", "embeddings")


def read_arrow(store: Store, name: str) -> Any:
    """One of BULK_TABLES as an Arrow table (columns as in COLUMNS, sorted by key)."""
    assert name in BULK_TABLES, name
    return store.arrow(f"SELECT {', '.join(COLUMNS[name])} FROM {name} ORDER BY {ORDER_BY[name]}")


def localize(snapshot: Snapshot, base: Path) -> dict[str, Any]:
    """The snapshot's rows with document paths resolved against `base` (the importing store's folder)."""
    out: dict[str, Any] = {}
    for name, rows in snapshot.tables.items():
        if not isinstance(rows, list):  # an Arrow table of BULK_TABLES: no paths in it
            out[name] = rows
            continue
        new = []
        for row in rows:
            row = dict(row)
            for c in COLUMNS[name]:
                if (name, c) in DOC_PATH_COLUMNS or (c == "source" and _is_doc_source(name, row)):
                    row[c] = local_doc_path(base, row.get(c))
            new.append(row)
        out[name] = new
    return out


def load_snapshot(store: Store, snapshot: Snapshot) -> dict[str, int]:
    """Write a snapshot into an empty store in one transaction (see Store.import_rows); returns rows per table."""
    if snapshot.schema_version > store.schema_version():
        raise InvalidInput(f"the export comes from a store of schema version {snapshot.schema_version}, newer than "
                           f"this claimgraph's {store.schema_version()}; upgrade claimgraph to import it")
    return store.import_rows(localize(snapshot, doc_base(store)))


# -- derived views for readers of an export -------------------------------------------------------------------
@dataclass(frozen=True)
class EvidenceSummary:
    """What an evidence node says, flat: the verdict, the value (mean over seeds) with its interval, the
    registered criterion and the run that produced it."""

    id: str
    verdict: str | None
    metric: str | None
    value: float | None
    ci_low: float | None
    ci_high: float | None
    n: int | None
    confidence: float | None
    criterion: str | None
    run_id: str | None
    experiment: str | None
    kind: str | None
    seeds: list[int] | None
    superseded: bool
    decisive: bool  # False: listed with its claim but not counted in the status (graph.models.STATUS_RULES)

    @property
    def interval_covers(self) -> str | None:
        """What the interval is over: a t-interval of the mean across the run's seeds."""
        if self.n is None or self.n < 2:
            return None
        conf = f"{self.confidence:.0%} " if self.confidence is not None else ""
        return f"{conf}t-interval of the mean over {self.n} seeds {self.seeds}" if self.seeds else \
            f"{conf}t-interval of the mean over {self.n} seeds"

    def text(self) -> str:
        """One line: `supported: m = 0.373 [0.36, 0.386] (3 seeds; criterion m > 0.1 band=0.05; run R)`."""
        value = "no value" if self.value is None else f"{self.value:.4g}"
        if self.ci_low is not None and self.ci_high is not None and (self.n or 0) > 1:
            value += f" [{self.ci_low:.4g}, {self.ci_high:.4g}]"
        parts = [f"{self.n} seed{'s' * (self.n != 1)}" if self.n is not None else None,
                 f"criterion {self.criterion}" if self.criterion else None, f"run {self.run_id}" if self.run_id else None]
        return f"{self.verdict}: {self.metric} = {value} ({'; '.join(p for p in parts if p)})"


def criterion_syntax(c: dict[str, Any] | None) -> str | None:
    """A criterion dict in the syntax `experiment add --criterion` takes: `metric > 0.1 band=0.05 conf=0.9`."""
    if not c or "metric" not in c:
        return None
    thr = c.get("threshold")
    out = f"{c['metric']} {c.get('op', '?')} {thr:g}" if isinstance(thr, (int, float)) else \
        f"{c['metric']} {c.get('op', '?')} {thr}"
    if c.get("band"):
        out += f" band={c['band']:g}"
    if c.get("confidence") not in (None, 0.95):
        out += f" conf={c['confidence']:g}"
    return out


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def evidence_summary(node_id: str, attrs: dict[str, Any]) -> EvidenceSummary:
    d: dict[str, Any] = attrs["decision"] if isinstance(attrs.get("decision"), dict) else {}
    c: dict[str, Any] = attrs["criterion"] if isinstance(attrs.get("criterion"), dict) else {}
    n = d.get("n")
    seeds = attrs.get("seeds")
    return EvidenceSummary(
        id=node_id, verdict=attrs.get("verdict"), metric=c.get("metric"), value=_num(d.get("mean")),
        ci_low=_num(d.get("ci_low")), ci_high=_num(d.get("ci_high")),
        n=int(n) if isinstance(n, int) and not isinstance(n, bool) else None, confidence=_num(c.get("confidence")),
        criterion=criterion_syntax(c), run_id=attrs.get("run_id"), experiment=attrs.get("experiment"),
        kind=attrs.get("kind"), seeds=[int(s) for s in seeds] if isinstance(seeds, list) and
        all(isinstance(s, int) for s in seeds) else None, superseded=bool(attrs.get("superseded", False)),
        decisive=attrs.get("decisive", True) is not False)


@dataclass
class Derived:
    """Claim and finding statuses, and each one's current evidence, for the exports' readers."""

    status: dict[str, str]
    detail: dict[str, str]                        # the status with which methods gave which verdict
    evidence: dict[str, list[EvidenceSummary]]  # claim/finding id -> its current evidence
    summaries: dict[str, EvidenceSummary]         # evidence id -> summary


def derive(store: Store, snapshot: Snapshot) -> Derived:
    from ..queries import STATUS_TYPES, evidence_map, status_reports

    targets = [n["id"] for n in snapshot.tables["nodes"] if NodeType(n["type"]) in STATUS_TYPES]
    summaries = {n["id"]: evidence_summary(n["id"], n["attrs"]) for n in snapshot.tables["nodes"]
                 if n["type"] == NodeType.evidence.value}
    ev = evidence_map(store, targets)
    reports = status_reports(store, targets)
    return Derived(status={i: r.status for i, r in reports.items()}, detail={i: r.describe() for i, r in reports.items()},
                   evidence={t: [summaries[i] for i in ids if i in summaries] for t, ids in ev.items()},
                   summaries=summaries)


def iso(dt: datetime | None) -> str | None:
    """A stored (naive UTC) timestamp as ISO 8601 with its zone, microseconds kept."""
    return None if dt is None else dt.isoformat(timespec="microseconds") + ("Z" if dt.tzinfo is None else "")


def parse_iso(text: str | None, *, where: str) -> datetime | None:
    """The inverse of `iso`: an ISO 8601 timestamp as naive UTC."""
    from datetime import timezone

    if text is None:
        return None
    try:
        dt = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(f"{where}: {text!r} is not an ISO 8601 timestamp") from None
    return dt.astimezone(timezone.utc).replace(tzinfo=None) if dt.tzinfo else dt
