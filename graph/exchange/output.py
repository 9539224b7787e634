"""Where an export may write, and writing it so that nothing is half-written.

An export never writes onto the store it reads (its file, its write-ahead log or its `<db>.d/` folder), and
never replaces an existing file or folder unless asked (`force`). It is written to a temporary file (or folder)
beside the target and renamed into place in one step, so a failure (a full disk, a killed process) leaves the
previous content, if any, as it was. A target that is not a regular file or folder (a pipe, `/dev/stdout`) is
written directly, since there is nothing to rename onto; `-` means standard output.
"""
from __future__ import annotations

import errno
import os
import shutil
import stat
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING

from ..errors import InvalidInput

if TYPE_CHECKING:
    from ..store import Store


class OutputError(InvalidInput):
    """The export's target cannot be written (refused, or the write failed); nothing was replaced."""


def _same(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.abspath(a) == os.path.abspath(b)


def check_target(store: Store, out: Path, *, force: bool, folder: bool) -> None:
    """Refuse a target that is the store (always) or that exists (unless `force`); `folder`: the export is a
    folder of files (Parquet)."""
    if store.path is not None:
        db = store.path
        protected = [db, db.with_name(db.name + ".wal"), store.home]
        for p in protected:
            if _same(out, p) or (p == store.home and os.path.abspath(out).startswith(os.path.abspath(p) + os.sep)):
                raise OutputError(f"refusing to write the export onto the store itself ({p}); choose another -o path")
        if folder and os.path.abspath(db).startswith(os.path.abspath(out) + os.sep):
            raise OutputError(f"refusing to replace {out}: it holds the store {db}; choose another -o path")
    if not os.path.lexists(out):
        return
    mode = os.stat(out).st_mode if os.path.exists(out) else 0
    kind = "folder" if stat.S_ISDIR(mode) else "file" if stat.S_ISREG(mode) else "special file"
    if not force:
        raise OutputError(f"{out} exists ({kind}); pass --force to replace it, or choose another -o path")
    if kind == "folder" and not folder:
        raise OutputError(f"{out} is a folder; this format writes one file: give a file name with -o")
    if kind == "special file" and folder:
        raise OutputError(f"{out} is not a regular file or folder; Parquet writes a folder of files")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fail(out: Path | str, e: OSError) -> OutputError:
    why = os.strerror(e.errno) if e.errno else str(e)
    if e.errno == errno.ENOSPC:
        why += " (disk full)"
    return OutputError(f"cannot write {out}: {why}; nothing was replaced")


@contextmanager
def atomic_file(out: Path | str, *, binary: bool = False) -> Iterator[IO]:
    """A file object to write the export to; on success it becomes `out` in one rename (or `out` is written
    directly when it is `-` or a special file). On failure nothing is left behind and OutputError is raised."""
    mode = "wb" if binary else "w"
    enc = None if binary else "utf-8"
    if str(out) == "-":
        stream: IO = sys.stdout.buffer if binary else sys.stdout
        try:
            yield stream
            stream.flush()
        except BrokenPipeError:  # the reader stopped reading (`| head`): not an error of the export
            try:
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            except (OSError, ValueError):
                pass
        except OSError as e:
            raise _fail("standard output", e) from None
        return
    out = Path(out)
    if os.path.exists(out) and not stat.S_ISREG(os.stat(out).st_mode):
        try:
            with open(out, mode, encoding=enc) as f:
                yield f
        except OSError as e:
            raise _fail(out, e) from None
        return
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    except OSError as e:
        raise _fail(out, e) from None
    try:
        with os.fdopen(fd, mode, encoding=enc) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private; an export gets the usual mode
        os.replace(tmp, out)
    except OSError as e:
        _remove(tmp)
        raise _fail(out, e) from None
    except BaseException:
        _remove(tmp)
        raise


def atomic_folder(out: Path, write: Callable[[Path], list[Path]]) -> list[Path]:
    """Run `write(tmp_folder)` into a fresh folder beside `out`, then put it in place of `out` (an existing one is
    moved aside first and removed once the new one is in). Returns the written files under `out`."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    except OSError as e:
        raise _fail(out, e) from None
    old: Path | None = None
    try:
        files = write(tmp)
        os.chmod(tmp, 0o777 & ~_umask())
        for f in files:
            os.chmod(f, 0o666 & ~_umask())
        if os.path.lexists(out):
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
            os.replace(out, old / "x")
        os.replace(tmp, out)
    except OSError as e:
        _remove(tmp)
        if old is not None and os.path.lexists(old / "x") and not os.path.lexists(out):
            os.replace(old / "x", out)
        raise _fail(out, e) from None
    except BaseException:
        _remove(tmp)
        raise
    finally:
        if old is not None:
            _remove(old)
    return [out / f.relative_to(tmp) for f in files]


def _remove(p: str | Path) -> None:
    try:
        if os.path.isdir(p) and not os.path.islink(p):
            shutil.rmtree(p)
        else:
            os.unlink(p)
    except OSError:
        pass
