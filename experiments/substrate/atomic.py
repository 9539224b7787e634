"""Cache folders built once (alone, or several from one computation): each is built in a fresh temp folder
beside it and renamed into place under an advisory lock, so concurrent first users build it once and a reader
never sees half a folder. Torch-free."""
from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Advisory exclusive lock so concurrent first loads build once; correctness does not depend on it
    (the atomic rename does), so a filesystem without flock just proceeds."""
    try:
        import fcntl
    except ImportError:  # not on POSIX
        yield
        return
    with open(path, "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX)
        except OSError:
            pass
        try:
            yield
        finally:
            try:
                fcntl.flock(fh, fcntl.LOCK_UN)
            except OSError:
                pass


def build_once(final: Path, marker: str, build: Callable[[Path], None]) -> Path:
    """`final`, unless a finished copy (one holding the file `marker`) exists: then `build(tmp)` fills a temp
    folder that does not exist yet (build creates it), which is renamed to `final`. On any error the temp
    folder is removed and nothing is left at `final`."""
    return build_all_once([final], marker, lambda tmps: build(tmps[final]))[0]


def build_all_once(finals: list[Path], marker: str, build: Callable[[dict[Path, Path]], None]) -> list[Path]:
    """`build_once` for folders computed together (one pass that yields several cache entries): under the locks
    of all of them (taken in sorted order), `build({final: tmp})` fills a fresh temp folder for each final folder
    that has no finished copy, and each is renamed into place. On any error every temp folder is removed."""
    from contextlib import ExitStack

    missing = [f for f in finals if not (f / marker).is_file()]
    if not missing:
        return finals
    with ExitStack() as stack:
        for f in sorted(set(missing)):
            f.parent.mkdir(parents=True, exist_ok=True)
            stack.enter_context(file_lock(f.parent / f".{f.name}.lock"))
        missing = [f for f in dict.fromkeys(missing) if not (f / marker).is_file()]  # finished while we waited
        if not missing:
            return finals
        tmps = {f: f.parent / f".tmp-{f.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}" for f in missing}
        try:
            build(tmps)
            for f, tmp in tmps.items():
                try:
                    os.rename(tmp, f)
                except OSError:
                    if not (f / marker).is_file():
                        raise
        finally:
            for tmp in tmps.values():
                if tmp.exists():
                    shutil.rmtree(tmp, ignore_errors=True)
    return finals
