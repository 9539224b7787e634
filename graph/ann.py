"""Approximate nearest neighbours over stored vectors, for stores too large to scan (usearch HNSW).

`suggest` on a store with at least `ANN_MIN_NODES` embedded nodes finds each node's neighbours through an
HNSW index instead of all-pairs products, and saves the index beside the database
(`<db>.d/ann/<model>.usearch`, the node ids and text hashes in key order in `<model>.keys.arrow`, and what
it was built from in `<model>.json`). Node pages (`computed_neighbors`) and search then read neighbours from
it, memory-mapped, so a cold `show` does not load a million vectors.

Consistency. DuckDB stays the truth; the index is a derived copy of the vectors as of its build, which may
be stale, and `nearest` makes every answer agree with the store as it is now:
- a candidate from the index counts only if its node still exists with the text hash it was indexed under
  (deleted and rewritten nodes drop out);
- nodes written or vectors stored after the last write the build saw are scored exactly, by a scan of just
  those rows (zone maps skip the rest of the table), and merged in.
So the index only goes out of date in speed, never in what it answers; `suggest` at scale rebuilds it.
A rolled-back write never reaches it (it is built from one read transaction, after the writes it saw had
committed). Written to temporary names and renamed into place, so a reader sees an old or a new index,
never half of one.

Library: bench/bench_ann.py compares usearch (f32 and int8 storage), hnswlib and faiss's HNSW on the
benchmark's vectors (docs/benchmarks.md): usearch with int8 storage built and searched fastest at recall
0.999, and it serves a saved index memory-mapped (`restore(view=True)`), which a cold node page at a million
nodes needs (hnswlib loads the whole index). The index only proposes candidates: their cosines are
recomputed from the float vectors in the store.
"""
from __future__ import annotations

import bisect
import json
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .schema import EMBED_DIM

if TYPE_CHECKING:
    from collections.abc import Callable

    import numpy as np

    from .store import Store

ANN_MIN_NODES = 200_000  # suggest uses the index from this many embedded nodes (exact products below)
CONNECTIVITY = 16        # HNSW links per node ("M")
EXPANSION_ADD = 128      # search depth while building ("efConstruction")
EXPANSION_SEARCH = 96    # search depth while querying ("ef")
DTYPE = "i8"             # vectors stored as int8 in the index: 3-4x faster than f32 here, recall measured
                         # (bench_ann.py); every cosine handed out is recomputed from the stored float vectors


def threads() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def build(X: "np.ndarray") -> Any:
    """An HNSW index (inner product on unit vectors = cosine) over the rows of X [n, 384], keys 0..n-1."""
    import numpy as np
    from usearch.index import Index

    index = Index(ndim=EMBED_DIM, metric="ip", dtype=DTYPE, connectivity=CONNECTIVITY, expansion_add=EXPANSION_ADD,
                  expansion_search=EXPANSION_SEARCH)
    index.add(np.arange(len(X), dtype=np.uint64), np.ascontiguousarray(X, dtype=np.float32), threads=threads())
    return index


def knn(index: Any, Q: "np.ndarray", k: int) -> tuple["np.ndarray", "np.ndarray"]:
    """(keys [q, k] int64, -1 where fewer were found; cosines [q, k] float32) of the k nearest rows to each query."""
    import numpy as np

    found = index.search(np.ascontiguousarray(Q, dtype=np.float32), k, threads=threads())
    if hasattr(found, "counts"):  # a batch: [q, k] with counts
        keys = np.asarray(found.keys).astype(np.int64).reshape(len(Q), -1)
        cos = (1 - np.asarray(found.distances, dtype=np.float32)).reshape(len(Q), -1)
        counts = np.asarray(found.counts).reshape(-1)
    else:  # one query: only what was found
        got = np.asarray(found.keys).astype(np.int64)
        keys = np.full((1, k), -1, dtype=np.int64)
        cos = np.zeros((1, k), dtype=np.float32)
        keys[0, :len(got)] = got
        cos[0, :len(got)] = 1 - np.asarray(found.distances, dtype=np.float32)
        counts = np.array([len(got)])
    keys[np.arange(keys.shape[1])[None, :] >= counts[:, None]] = -1
    return keys, cos


# -- the saved index ------------------------------------------------------------------------------
def _paths(store: "Store", model: str) -> tuple[Path, Path, Path] | None:
    if store.path is None:
        return None
    folder = store.home / "ann"
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in model)
    return folder / f"{safe}.usearch", folder / f"{safe}.keys.arrow", folder / f"{safe}.json"


def _vectors_path(idx_path: Path) -> Path:
    return idx_path.with_name(idx_path.name.replace(".usearch", ".vectors.npy"))


@dataclass
class SavedIndex:
    """A loaded index: usearch view, ids and text hashes by key, and the write times it was built after."""

    index: Any
    ids: Any       # pyarrow strings [n], key order (sorted)
    hashes: Any    # pyarrow strings [n]
    nodes_since: datetime
    vectors_since: datetime
    vectors: Any = None  # float32 [n, 384] memory-mapped, key order: the stored vectors as of the build (an
    #                      embedding is keyed by text hash and model, so a node whose text hash is unchanged has
    #                      exactly this vector); None for an index saved without them


def save(store: "Store", model: str, index: Any, ids: Any, hashes: Any, nodes_since: datetime | None,
         vectors_since: datetime | None, X: "np.ndarray | None" = None) -> None:
    """Write the index, its keys and (given X, the float vectors in key order) a memory-mappable copy of the
    vectors beside the database (temporary names, then renamed into place; the metadata file last)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.ipc as ipc

    found = _paths(store, model)
    if found is None:
        return
    idx_path, keys_path, meta_path = found
    idx_path.parent.mkdir(parents=True, exist_ok=True)
    vec_path = _vectors_path(idx_path)
    paths: list[Path] = [idx_path, keys_path, vec_path, meta_path] if X is not None else [idx_path, keys_path, meta_path]
    if X is None:
        vec_path.unlink(missing_ok=True)  # an old copy would not match the new keys
    tmp = [p.with_name(p.name + f".tmp{os.getpid()}") for p in paths]
    if X is not None:
        with open(tmp[2], "wb") as f:
            np.save(f, np.ascontiguousarray(X, dtype=np.float32))
    index.save(str(tmp[0]))
    with ipc.new_file(str(tmp[1]), pa.schema([("id", pa.string()), ("text_hash", pa.string())])) as w:
        w.write_table(pa.table({"id": ids, "text_hash": hashes}))
    tmp[-1].write_text(json.dumps({"model": model, "n": len(ids), "library": "usearch", "vectors": X is not None,
                                  "nodes_since": nodes_since.isoformat() if nodes_since else None,
                                  "vectors_since": vectors_since.isoformat() if vectors_since else None}))
    for t, p in zip(tmp, paths):
        os.replace(t, p)
    _LOADED.pop(str(idx_path), None)


_LOADED: dict[str, tuple[float, SavedIndex]] = {}


def load(store: "Store", model: str) -> SavedIndex | None:
    """The saved index of `model` (memory-mapped; cached per file until it is replaced), or None."""
    paths = _paths(store, model)
    if paths is None or not paths[2].exists():
        return None
    idx_path, keys_path, meta_path = paths
    try:
        mtime = meta_path.stat().st_mtime
        hit = _LOADED.get(str(idx_path))
        if hit is not None and hit[0] == mtime:
            return hit[1]
        import pyarrow as pa
        import pyarrow.ipc as ipc
        from usearch.index import Index

        meta = json.loads(meta_path.read_text())
        index = Index.restore(str(idx_path), view=True)  # keeps the expansion_search it was saved with
        if index is None:
            return None
        keys = ipc.open_file(pa.memory_map(str(keys_path))).read_all()
        vectors = None
        if meta.get("vectors"):
            import numpy as np

            vectors = np.load(_vectors_path(idx_path), mmap_mode="r")
            if vectors.shape != (len(keys), EMBED_DIM):
                vectors = None
    except (OSError, ValueError, RuntimeError, KeyError):
        return None  # unreadable (e.g. replaced while reading): answer without it
    when = lambda v: datetime.fromisoformat(v) if v else datetime(1970, 1, 1)  # built empty: everything is new
    one = lambda col: col.chunk(0) if col.num_chunks == 1 else col.combine_chunks()  # one chunk: no copy (0.13 s at 1M)
    saved = SavedIndex(index=index, ids=one(keys.column("id")), hashes=one(keys.column("text_hash")),
                       nodes_since=when(meta.get("nodes_since")), vectors_since=when(meta.get("vectors_since")),
                       vectors=vectors)
    _LOADED[str(idx_path)] = (mtime, saved)
    return saved


def nearest(store: "Store", qvec: "np.ndarray", k: int, model: str,
            current: "Callable[[list[str]], dict[str, str]] | None" = None) -> list[tuple[str, float]] | None:
    """Up to `k` (node id, cosine) nearest to the unit vector `qvec` among the store's current nodes, best first;
    None when the store has no saved index for `model` (then the caller scans). `current(ids)` gives the text
    hash of each of those nodes that exists now (default: a lookup in the store; search passes its in-memory
    keyword index's, which is as fresh as the store)."""
    import numpy as np

    saved = load(store, model)
    if saved is None:
        return None
    q = np.asarray(qvec, dtype=np.float32).reshape(1, EMBED_DIM)
    keys, _ = knn(saved.index, q, 2 * k + 16)  # oversampled: the int8 distances only nominate, exact ones decide
    keys = keys[0][keys[0] >= 0]
    cand = {saved.ids[int(x)].as_py(): (saved.hashes[int(x)].as_py(), int(x)) for x in keys}
    changed = _changed_since(store, saved, q[0], model)  # written after the build: scored exactly, below
    if saved.vectors is not None:
        # exact cosines from the build's float vectors, best first; then only the best k that are not among the
        # changed nodes are checked against the store (still there, with the text they were indexed under): a
        # point lookup per id reads the file's pages, tens of ms for all 2k + 16 candidates at a million nodes
        scored = sorted(((i, float(np.asarray(saved.vectors[key]) @ q[0])) for i, (_, key) in cand.items()
                         if i not in changed), key=lambda p: (-p[1], p[0]))
        out: dict[str, float] = {}
        pos = 0
        while pos < len(scored) and len(out) < k:
            batch = scored[pos:pos + k - len(out)]
            pos += len(batch)
            now = (current or _current_hashes(store))([i for i, _ in batch])
            out.update((i, c) for i, c in batch if now.get(i) == cand[i][0])
    else:
        now = (current or _current_hashes(store))(list(cand)) if cand else {}
        valid = [i for i, (h, _) in cand.items() if now.get(i) == h]  # still there, with the text indexed
        out = {i: float(v @ q[0]) for i, v in vectors_of(store, valid, model).items()}
    out.update(changed)
    return sorted(out.items(), key=lambda p: (-p[1], p[0]))[:k]


def _changed_since(store: "Store", saved: SavedIndex, q: "np.ndarray", model: str) -> dict[str, float]:
    """Exact cosines to `q` of the nodes written, or given a vector, after the index was built: strictly after
    the last write the build saw (a bulk write gives all its rows one time, so `>=` would rescan all of them)."""
    import numpy as np

    # which rows changed first (zone maps skip the rest of each table: under a ms at a million nodes), and only
    # then their vectors; one join does not skip (16 ms at a million even with no changed row)
    written = [r[0] for r in store.sql("SELECT id FROM nodes WHERE updated_at > ?", [saved.nodes_since])]
    encoded = [r[0] for r in store.sql("SELECT text_hash FROM embeddings WHERE model = ? AND created_at > ?",
                                       [model, saved.vectors_since])]
    rows: list[tuple] = []
    if written:
        rows += list(vectors_of_table(store, written, model).items())
    if encoded:
        rows += store.sql("""SELECT n.id, e.vector FROM (SELECT text_hash, vector FROM embeddings
            WHERE model = ? AND created_at > ?) e JOIN nodes n ON n.text_hash = e.text_hash""",
                          [model, saved.vectors_since])
    if not rows:
        return {}
    mat = np.asarray([r[1] for r in rows], dtype=np.float32)  # [m, 384]
    return {r[0]: float(c) for r, c in zip(rows, mat @ q)}


def _arrow_ints(values: "np.ndarray") -> Any:
    """An int64 Arrow array over a numpy array's buffer. (pa.array on a list or a numpy array imports pandas,
    0.3-0.5 s, a third of a cold `show`; building from buffers does not.)"""
    import numpy as np
    import pyarrow as pa

    a = np.ascontiguousarray(values, dtype=np.int64)
    return pa.Array.from_buffers(pa.int64(), len(a), [None, pa.py_buffer(a)])


def _arrow_strings(values: list[str], typ: Any) -> Any:
    """A string (or large_string) Arrow array of `values`, from buffers (see _arrow_ints)."""
    import numpy as np
    import pyarrow as pa

    enc = [v.encode() for v in values]
    offsets = np.zeros(len(enc) + 1, dtype=np.int64 if pa.types.is_large_string(typ) else np.int32)
    offsets[1:] = np.cumsum([len(b) for b in enc])
    return pa.Array.from_buffers(typ, len(enc), [None, pa.py_buffer(offsets), pa.py_buffer(b"".join(enc))])


def _bools(arr: Any) -> "np.ndarray":
    """A boolean Arrow array as numpy bools (nulls false), from its bit-packed buffer (see _arrow_ints)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if arr.null_count:
        arr = pc.fill_null(arr, False)
    bits = np.frombuffer(arr.buffers()[1], dtype=np.uint8)
    return np.unpackbits(bits, count=arr.offset + len(arr), bitorder="little")[arr.offset:].view(bool)


_FEW = 16  # up to this many ids, sorted_positions bisects in Python over the array's buffers


def _bisect_buffers(ids: Any, node_ids: list[str]) -> "np.ndarray":
    """sorted_positions for a few ids in one unchunked array without nulls: Python's binary search over its
    offsets and bytes (about 20 slices an id at a million), so a node page needs no pyarrow.compute, whose
    import builds every compute function's docstring (60 ms of a cold `show`)."""
    import numpy as np
    import pyarrow as pa

    n = len(ids)
    width = np.int64 if pa.types.is_large_string(ids.type) else np.int32
    buffers = ids.buffers()
    offsets = np.frombuffer(buffers[1], dtype=width)[ids.offset:ids.offset + n + 1]  # a view: no copy
    data = memoryview(buffers[2]) if buffers[2] is not None else memoryview(b"")

    def at(i: int) -> bytes:
        return data[int(offsets[i]):int(offsets[i + 1])].tobytes()

    out = np.full(len(node_ids), -1, dtype=np.int64)
    for j, node_id in enumerate(node_ids):
        q = node_id.encode()
        lo = bisect.bisect_left(range(n), q, key=at)
        if lo < n and at(lo) == q:
            out[j] = lo
    return out


def sorted_positions(ids: Any, node_ids: list[str]) -> "np.ndarray":
    """[m] int64 positions of `node_ids` in the sorted pyarrow strings `ids` (-1 where absent), in byte order
    (code point order for UTF-8, and DuckDB's order of VARCHAR): for many ids one binary search for all of them
    at once, each of its ~log2(n) steps one Arrow take and one comparison, instead of a Python loop per id; for
    a few (`_FEW`), `_bisect_buffers`."""
    import numpy as np
    import pyarrow as pa

    m, n = len(node_ids), len(ids)
    if m == 0 or n == 0:
        return np.full(m, -1, dtype=np.int64)
    if m <= _FEW and isinstance(ids, pa.Array) and ids.null_count == 0:
        return _bisect_buffers(ids, node_ids)
    import pyarrow.compute as pc

    q = _arrow_strings(node_ids, ids.type)
    lo = np.zeros(m, dtype=np.int64)
    hi = np.full(m, n, dtype=np.int64)
    active = lo < hi
    while active.any():
        mid = (lo + hi) // 2
        probe = pc.take(ids, _arrow_ints(np.minimum(mid, n - 1)))
        less = _bools(pc.less(probe, q))
        lo = np.where(active & less, mid + 1, lo)
        hi = np.where(active & ~less, mid, hi)
        active = lo < hi
    inside = lo < n
    same = _bools(pc.equal(pc.take(ids, _arrow_ints(np.minimum(lo, n - 1))), q))
    return np.where(inside & same, lo, -1)


def _current_hashes(store: "Store") -> "Callable[[list[str]], dict[str, str]]":
    return lambda ids: dict(store.sql("SELECT id, text_hash FROM nodes WHERE id = ANY(?)", [ids])) if ids else {}


def vectors_of(store: "Store", node_ids: list[str], model: str,
               current: "Callable[[list[str]], dict[str, str]] | None" = None) -> dict[str, "np.ndarray"]:
    """The stored float vectors of these nodes (those that have one): from the saved index's copy for nodes
    whose text hash is the one it was built with (a point lookup each), else from the embeddings table (whose
    vectors a point query cannot reach without a scan at a million rows: about 0.7 s)."""
    import numpy as np

    if not node_ids:
        return {}
    out: dict[str, np.ndarray] = {}
    saved = load(store, model)
    if saved is not None and saved.vectors is not None:
        now = (current or _current_hashes(store))(node_ids)
        rest = []
        for i, p in zip(node_ids, sorted_positions(saved.ids, node_ids).tolist()):
            if p >= 0 and i in now and saved.hashes[p].as_py() == now[i]:
                out[i] = np.asarray(saved.vectors[p], dtype=np.float32)
            else:
                rest.append(i)
        node_ids = rest
        if not node_ids:
            return out
    out.update(vectors_of_table(store, node_ids, model))
    return out


def vectors_of_table(store: "Store", node_ids: list[str], model: str) -> dict[str, "np.ndarray"]:
    """The float vectors of these nodes from the embeddings table (a scan of its key column at scale)."""
    import numpy as np

    rows = store.sql("""SELECT n.id, e.vector FROM (SELECT id, text_hash FROM nodes WHERE id = ANY(?)) n
        JOIN embeddings e ON e.text_hash = n.text_hash AND e.model = ?""", [node_ids, model])
    return {r[0]: np.asarray(r[1], dtype=np.float32) for r in rows}
