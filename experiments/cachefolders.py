"""What the shared cache folder ($CLAIMGRAPH_CACHE, ~/.cache/claimgraph) holds, and clearing parts of it.

Every entry there is derived: a trained toy model, an SAE, an activation cache, a dequantized real model, a corpus,
latent scores, file digests, the encoder's export. Each is built once under an advisory lock and renamed into place
(substrate/atomic.py), and its key says what it was computed from, so removing one costs only the time to compute
it again when a run next needs it. One thing reads it for finished runs: a run's feature pages (`claimgraph
feature`, the web UI's) find its SAE in `saes` by key, and after clearing that say so and ask for the run again
with --force. Clearing a kind renames its folder aside first
(one atomic step, so a reader never sees half a folder) and then deletes it; a kind that another process is
building into (one of its locks held) is left alone. Torch-free.
"""
from __future__ import annotations

import os
import shutil
import uuid
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from claimgraph.graph.errors import InvalidInput, StoreError

from .context import cache_dir

# the cache's top-level folders, in the order shown, and what each holds (with the module that writes it)
KINDS: dict[str, str] = {
    "models": "toy models trained here (substrate/load.py)",
    "saes": "trained sparse autoencoders (sae/provision.py)",
    "acts": "activations at a hook, by model, corpus and split (substrate/acts_cache.py)",
    "latent-stats": "every latent's scores on held-out tokens (features/target.py)",
    "lm": "real language models dequantized to float32, and their manifests (substrate/lm.py)",
    "text": "text corpora built from installed packages (substrate/text.py)",
    "digests": "content digests of input files (context.py)",
    "encoder": "the embedding model's OpenVINO export (graph/embed.py)",
}


@dataclass
class CacheKind:
    """One top-level folder of the cache: its entries (what it holds, not counting locks and temp folders of
    builds in progress), their size on disk, and when the newest was written."""

    kind: str
    path: str
    holds: str
    entries: int = 0
    bytes: int = 0
    newest: datetime | None = None

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "newest": self.newest.isoformat() if self.newest else None}


@dataclass
class ClearReport:
    """What `clear` removed (or, with dry_run, would remove) and what it left, with why."""

    root: str
    dry_run: bool
    removed: list[CacheKind] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)  # {"kind", "reason"}

    @property
    def bytes(self) -> int:
        return sum(k.bytes for k in self.removed)


def _size(path: Path) -> tuple[int, float]:
    """(bytes on disk, newest mtime) of a file or folder tree; links are not followed."""
    try:
        st = path.lstat()
    except OSError:
        return 0, 0.0
    total, newest = st.st_blocks * 512, st.st_mtime
    if path.is_dir() and not path.is_symlink():
        stack = [path]
        while stack:
            try:
                with os.scandir(stack.pop()) as it:
                    for e in it:
                        try:
                            s = e.stat(follow_symlinks=False)
                        except OSError:
                            continue
                        total += s.st_blocks * 512
                        newest = max(newest, s.st_mtime)
                        if e.is_dir(follow_symlinks=False):
                            stack.append(Path(e.path))
            except OSError:
                continue
    return total, newest


def _is_entry(name: str) -> bool:
    return not name.startswith(".")  # locks (.x.lock) and builds in progress (.tmp-x-...) are not entries


def _summarise(kind: str, folder: Path) -> CacheKind:
    out = CacheKind(kind=kind, path=str(folder), holds=KINDS.get(kind, "(not written by this version)"))
    if not folder.is_dir():
        return out
    total, newest = _size(folder)
    out.bytes = total
    out.entries = sum(1 for p in folder.iterdir() if _is_entry(p.name))
    out.newest = datetime.fromtimestamp(newest, timezone.utc) if out.entries else None
    return out


def cache_kinds(root: Path | None = None) -> tuple[Path, list[str]]:
    """(the cache folder, the names of its kinds): the known kinds in KINDS' order, present or not, then any other
    folder; nothing is measured."""
    root = root or cache_dir()
    others = sorted(p.name for p in root.iterdir() if p.is_dir() and _is_entry(p.name) and p.name not in KINDS) \
        if root.is_dir() else []
    return root, [*KINDS, *others]


def cache_summary(root: Path | None = None) -> tuple[Path, list[CacheKind]]:
    """(the cache folder, each kind in it, measured), in `cache_kinds`' order."""
    root, names = cache_kinds(root)
    return root, [_summarise(k, root / k) for k in names]


def _lock_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob(".*.lock") if p.is_file())


def _try_locks(stack: ExitStack, locks: list[Path]) -> Path | None:
    """Take every lock without waiting (held until `stack` closes); the first one another process holds, or None."""
    try:
        import fcntl
    except ImportError:  # not on POSIX: nothing to test against
        return None
    for p in locks:
        try:
            fh = stack.enter_context(open(p, "a"))
        except OSError:
            continue
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return p
        except OSError:
            continue
        stack.callback(fcntl.flock, fh, fcntl.LOCK_UN)
    return None


def clear_cache(kinds: list[str], *, root: Path | None = None, dry_run: bool = False) -> ClearReport:
    """Remove the named kinds of the cache (see KINDS; any other top-level folder by its name too). A kind with a
    build in progress (one of its locks held by another process) is skipped and said so; one that is absent is
    reported as nothing removed."""
    root, known = cache_kinds(root)
    unknown = [k for k in kinds if k not in known]
    if unknown:
        raise InvalidInput(f"unknown cache kind{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; "
                           f"the cache at {root} holds: {', '.join(known)}")
    report = ClearReport(root=str(root), dry_run=dry_run)
    if not dry_run:
        _remove_abandoned_trash(root)
    for name in dict.fromkeys(kinds):
        folder = root / name
        info = _summarise(name, folder)  # only the kinds named are measured
        if not folder.is_dir():
            report.removed.append(info)  # nothing there: nothing removed
            continue
        with ExitStack() as stack:
            busy = _try_locks(stack, _lock_files(folder))
            if busy is not None:
                report.skipped.append({"kind": name, "reason": f"another process is building into it (it holds "
                                                               f"{busy.relative_to(root)}); run again when it is done"})
                continue
            if not dry_run:
                aside = root / f".trash-{name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
                try:
                    os.rename(folder, aside)  # one step: a reader sees the whole kind or none of it
                except FileNotFoundError:  # another clear took it first
                    info = CacheKind(kind=name, path=info.path, holds=info.holds)
                except OSError as e:
                    raise StoreError(f"cannot remove {folder}: {e.strerror}; nothing of {name} was removed") from None
                else:
                    stack.callback(shutil.rmtree, aside, True)
        report.removed.append(info)
    return report


def _remove_abandoned_trash(root: Path) -> None:
    """Folders an earlier clear set aside and did not finish deleting (it was killed): `.trash-<kind>-<pid>-...`
    whose process is gone."""
    for p in root.glob(".trash-*"):
        try:
            pid = int(p.name.rsplit("-", 2)[-2])
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(p, ignore_errors=True)
        except (ValueError, IndexError, OSError):  # not one of ours, or a live process of another user
            continue


def human_bytes(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} B"
