"""What a running job sees: its run folder, device, model and data references, and ways to report; and the
few helpers every layer of experiments shares (the cache folder, CPU threads, the device, atomic JSON).

Every report also refreshes the heartbeat in `status.json`, so a run that stops reporting is visible.
Torch is not imported at module level; `ctx.device` is a string a job passes to torch.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from claimgraph.graph.errors import InvalidInput

T = TypeVar("T")


def cache_dir() -> Path:
    """Shared cache for trained toy models and corpora: $CLAIMGRAPH_CACHE or ~/.cache/claimgraph."""
    root = os.environ.get("CLAIMGRAPH_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "claimgraph")
    p = Path(root)
    p.mkdir(parents=True, exist_ok=True)
    return p


def train_threads() -> int:
    """Threads for training on CPU: half the cores (at least one), or CLAIMGRAPH_TRAIN_THREADS. On a shared
    small machine, threads spin-waiting on busy cores make each step many times slower."""
    return max(1, int(os.environ.get("CLAIMGRAPH_TRAIN_THREADS") or (os.cpu_count() or 2) // 2))


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """torch's CPU thread count set to n for the block (None: unchanged)."""
    import torch

    old = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def torch_is_cpu_build() -> bool:
    """Whether the installed torch is a CPU-only build (its version's local tag says "+cpu", as the CPU wheels'
    do), read from the package metadata without importing torch (1-2 s): such a build never sees CUDA."""
    if "torch" in sys.modules:
        return sys.modules["torch"].version.cuda is None and not getattr(sys.modules["torch"].version, "hip", None)
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("torch").partition("+")[2] == "cpu"
    except PackageNotFoundError:
        return False


def resolve_device(spec: str | None) -> str:
    """The device a run computes on: 'auto' (or None) is 'cuda' when torch sees a CUDA device, else 'cpu';
    'cpu'; 'cuda' or 'cuda:N' only where CUDA is available. InvalidInput names the choices otherwise. Torch is
    imported only to look for CUDA, and not at all for a CPU-only build (a run served from the cache needs no
    torch)."""
    spec = (spec or "auto").strip().lower()
    if spec == "cpu":
        return "cpu"
    if spec not in ("auto", "cuda") and not (spec.startswith("cuda:") and spec[5:].isdigit()):
        raise InvalidInput(f"unknown device {spec!r}; use 'auto', 'cpu', 'cuda' or 'cuda:N'")
    if torch_is_cpu_build():
        if spec == "auto":
            return "cpu"
        raise InvalidInput(f"device {spec!r} asked for, but torch sees no CUDA device (the installed torch is a "
                           "CPU-only build); use --device cpu or auto")
    import torch

    if spec == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if not torch.cuda.is_available():
        raise InvalidInput(f"device {spec!r} asked for, but torch sees no CUDA device; use --device cpu or auto")
    return spec


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write JSON so a reader never sees half a file."""
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str))
    os.replace(tmp, path)


def file_digest(path: Path) -> str:
    """sha256 of a file's content, computed once per (path, size, mtime): kept under cache_dir()/digests/, so
    checking a large weights file again (every `list` that asks whether evidence is stale) costs one stat."""
    path = Path(path).resolve()
    st = path.stat()
    key = hashlib.sha256(f"{path}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:24]
    cached = cache_dir() / "digests" / key
    try:
        return cached.read_text().strip()
    except OSError:
        pass
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    digest = h.hexdigest()
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_name(f"{key}.tmp{os.getpid()}")
        tmp.write_text(digest)
        os.replace(tmp, cached)
    except OSError:
        pass  # a read-only cache only costs the hash next time
    return digest


def folder_digest(folder: Path) -> str:
    """One sha256 over the names and content digests of the regular files directly in `folder` (a model
    checkpoint folder: config, weights, tokenizer)."""
    h = hashlib.sha256()
    for p in sorted(Path(folder).iterdir()):
        if p.is_file():
            h.update(f"{p.name}\0{file_digest(p)}\n".encode())
    return h.hexdigest()


def ref_digest(ref: str | None) -> str | None:
    """What a model or data reference points at, as one string that changes when it does: a local file's
    content digest (`text:/path/file`), a local folder's (`hf:/dir`, without a revision), else the reference
    itself (`toy:<preset>`, `synthetic:<preset>`, text recipes: built by code that the kind's code version covers).
    Kinds on substrate models refine this (`substrate.families.ModelJob.input_fingerprint`)."""
    if not ref or ":" not in ref:
        return ref
    scheme, _, rest = ref.partition(":")
    path = Path(rest)
    if path.is_file():
        return f"sha256:{file_digest(path)}"
    if path.is_dir():
        return f"sha256:{folder_digest(path)}"
    return ref


class RunContext:
    """Handed to Job.run. Paths are inside `run_dir`; nothing here touches the database."""

    HEARTBEAT_EVERY = 2.0  # seconds between status.json refreshes

    def __init__(self, run_dir: Path, *, device: str, model_ref: str | None, data_ref: str | None,
                 progress: bool = True, status_writer: Callable[[], None] | None = None):
        self.run_dir = Path(run_dir)
        self.device = device
        self.model_ref = model_ref
        self.data_ref = data_ref
        self.seed: int | None = None
        self.show_progress = progress
        self.artifacts_dir = self.run_dir / "artifacts"
        self.artifacts_dir.mkdir(parents=True, exist_ok=True)
        self._log = open(self.run_dir / "log.txt", "a", buffering=1, encoding="utf-8")
        self._metrics = open(self.run_dir / "metrics.jsonl", "a", buffering=1, encoding="utf-8")
        self._status_writer = status_writer
        self._last_beat = 0.0

    @property
    def cache_dir(self) -> Path:
        return cache_dir()

    def heartbeat(self, force: bool = False) -> None:
        now = time.monotonic()
        if self._status_writer is not None and (force or now - self._last_beat >= self.HEARTBEAT_EVERY):
            self._last_beat = now
            self._status_writer()

    def log(self, message: str) -> None:
        """A line in log.txt (and on stderr)."""
        stamp = time.strftime("%H:%M:%S")
        prefix = f"[seed {self.seed}] " if self.seed is not None else ""
        self._log.write(f"{stamp} {prefix}{message}\n")
        print(f"{prefix}{message}", file=sys.stderr, flush=True)
        self.heartbeat()

    def log_metrics(self, step: int, metrics: dict[str, float], **labels: Any) -> None:
        """One row of metrics.jsonl: the seed, the step, any labels (e.g. condition='shuffled') and the values."""
        row = {"seed": self.seed, "step": int(step), **labels,
               **{k: (float(v) if v is not None else None) for k, v in metrics.items()}}
        self._metrics.write(json.dumps(row) + "\n")
        self.heartbeat()

    def artifact(self, name: str) -> Path:
        """Path for an output file (sub-folders allowed); its sha256 goes in the result when the run ends."""
        p = self.artifacts_dir / name
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def progress(self, iterable: Iterable[T], *, total: int | None = None, desc: str = "") -> Iterator[T]:
        """A progress bar on stderr (tqdm) that also keeps the heartbeat going."""
        from tqdm.auto import tqdm

        prefix = f"seed {self.seed} " if self.seed is not None else ""
        for item in tqdm(iterable, total=total, desc=prefix + desc, disable=not self.show_progress,
                         file=sys.stderr, leave=False, mininterval=1.0):
            self.heartbeat()
            yield item

    def close(self) -> None:
        self._log.close()
        self._metrics.close()
