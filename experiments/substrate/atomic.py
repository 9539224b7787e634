"""Cache folders built once: each is built in a fresh temp folder beside it and renamed into place under an
advisory lock, so concurrent first users build it once and a reader never sees half a folder. Torch-free."""
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
    if (final / marker).is_file():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(final.parent / f".{final.name}.lock"):
        if (final / marker).is_file():  # another process finished while we waited
            return final
        tmp = final.parent / f".tmp-{final.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            build(tmp)
            try:
                os.rename(tmp, final)
            except OSError:
                if not (final / marker).is_file():
                    raise
                # lost a race with a process that did not take the lock: use the winner's copy
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return final
