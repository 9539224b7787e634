"""Reading document files: size limit, binary and encoding checks, directory expansion, front matter.

Every failure is an InvalidDocument naming the file (and the line where there is one), raised before
anything is parsed or written.
"""
from __future__ import annotations

import errno
import math
import os
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from claimgraph.graph.errors import InvalidDocument, InvalidInput, NotFound
from claimgraph.graph.ids import sha256_hex
from claimgraph.graph.yamlsafe import compose_bounded

from .locate import YamlLines

DOC_SUFFIXES = (".yaml", ".yml", ".json", ".txt", ".md")  # what a directory expands to
DEFAULT_MAX_DOC_MB = 20.0  # documents are hand-written or scraped pages; anything bigger is a mistake
BINARY_SNIFF_BYTES = 8192  # a NUL byte in the first 8 KiB marks a binary file


class SourceText(BaseModel):
    """A document file read as text: resolved path, sha256 of its bytes, and its text (newlines normalised)."""

    path: str
    content_hash: str
    text: str


def max_doc_bytes() -> int:
    """The size limit in bytes: CLAIMGRAPH_MAX_DOC_MB (megabytes) or 20 MB."""
    raw = os.environ.get("CLAIMGRAPH_MAX_DOC_MB")
    if raw is None or not raw.strip():
        return int(DEFAULT_MAX_DOC_MB * 1024 * 1024)
    try:
        mb = float(raw)
    except ValueError:
        raise InvalidInput(f"CLAIMGRAPH_MAX_DOC_MB={raw!r} is not a number; set it to a size in megabytes, e.g. 50") from None
    if not math.isfinite(mb) or mb <= 0:
        raise InvalidInput(f"CLAIMGRAPH_MAX_DOC_MB={raw!r} must be a positive, finite number of megabytes, e.g. 50")
    return int(mb * 1024 * 1024)


def _size(n: int) -> str:
    return f"{n / 1048576:.1f} MB" if n >= 104858 else f"{n:,} bytes"


def shown(path: str | os.PathLike) -> str:
    """A path as it can be printed: bytes that are not UTF-8 shown as \\xNN escapes."""
    raw = os.fspath(path)
    if isinstance(raw, bytes):
        return raw.decode("utf-8", "backslashreplace")
    try:
        return raw.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a lone surrogate that no file system byte maps to
        return raw.encode("utf-8", "backslashreplace").decode("utf-8")


def _checked(raw: str | os.PathLike) -> Path:
    """A path given by the user or found in a folder: non-empty and with a UTF-8 name."""
    if str(raw) == "" or (isinstance(raw, bytes) and not raw):
        raise InvalidInput("an empty path was given; name a document file or folder (use . for the current folder)")
    p = Path(os.fsdecode(raw)).expanduser()
    if shown(p) != str(p):
        raise InvalidDocument("the file name is not valid UTF-8, so it cannot be recorded as the document's source; "
                              "rename the file", path=shown(p))
    return p


_KINDS = {stat.S_IFIFO: "a named pipe (FIFO)", stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device",
          stat.S_IFSOCK: "a socket", stat.S_IFDIR: "a directory"}


def _stat(p: Path) -> os.stat_result:
    """stat() following symlinks, with each failure as a message naming the file."""
    try:
        return os.stat(p)
    except FileNotFoundError:
        if os.path.islink(p):
            raise InvalidDocument(f"is a symbolic link to {shown(os.readlink(p))}, which does not exist",
                                  path=shown(p)) from None
        raise NotFound(f"no such file or directory: {shown(p)}") from None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise InvalidDocument("is a symbolic link that loops back on itself", path=shown(p)) from None
        if e.errno == errno.EACCES:
            raise InvalidDocument("cannot be reached: permission denied (a folder on the way is not readable)",
                                  path=shown(p)) from None
        raise InvalidDocument(f"cannot be read: {e.strerror}", path=shown(p)) from None


def read_source(path: str | os.PathLike) -> SourceText:
    """Read one document file as UTF-8 text, refusing missing, empty, huge, binary and non-UTF-8 files and
    anything that is not a regular file (FIFOs, devices, sockets; symlinks are followed to what they name).

    The file is opened non-blocking and read to at most the size limit, so neither a FIFO nor a device such
    as /dev/zero can hold the command.
    """
    p = _checked(path)
    st = _stat(p)
    if stat.S_ISDIR(st.st_mode):
        raise InvalidDocument("is a directory; pass it to ingest_paths, which expands directories", path=shown(p))
    if not stat.S_ISREG(st.st_mode):
        raise InvalidDocument(f"is {_KINDS.get(stat.S_IFMT(st.st_mode), 'not a regular file')}; ingest reads only "
                              "regular files", path=shown(p))
    real = os.path.realpath(p)
    limit = max_doc_bytes()
    if st.st_size > limit:
        raise InvalidDocument(f"is {_size(st.st_size)}, over the {_size(limit)} limit for a document; "
                              "split it, or raise the limit with CLAIMGRAPH_MAX_DOC_MB", path=real)
    try:
        fd = os.open(real, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
                     | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise InvalidDocument(f"cannot be read: {e.strerror}", path=real) from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # replaced between stat() and open()
            raise InvalidDocument("is no longer a regular file; ingest reads only regular files", path=real)
        chunks, left = [], limit + 1
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
    except OSError as e:
        raise InvalidDocument(f"cannot be read: {e.strerror}", path=real) from None
    finally:
        os.close(fd)
    return decode_source(b"".join(chunks), real)


def decode_source(data: bytes, path: str) -> SourceText:
    """Check and decode a document's bytes (see read_source)."""
    if len(data) > max_doc_bytes():
        raise InvalidDocument(f"is over the {_size(max_doc_bytes())} limit for a document; "
                              "split it, or raise the limit with CLAIMGRAPH_MAX_DOC_MB", path=path)
    if b"\x00" in data[:BINARY_SNIFF_BYTES]:
        at = data.index(b"\x00")
        raise InvalidDocument(f"looks like a binary file (NUL byte at offset {at}); "
                              "documents are UTF-8 text (YAML, JSON or a page saved as .txt)",
                              path=path, line=data.count(b"\n", 0, at) + 1)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        col = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise InvalidDocument(f"is not UTF-8: byte 0x{data[e.start]:02x} at offset {e.start} (line {line}, "
                              f"column {col}); re-save the file as UTF-8", path=path, line=line) from None
    if "\x00" in text:
        at = text.index("\x00")
        raise InvalidDocument("contains a NUL character, which text documents do not have",
                              path=path, line=text.count("\n", 0, at) + 1)
    text = text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    if not text.strip():
        raise InvalidDocument("is empty; a document needs content to ingest", path=path)
    return SourceText(path=path, content_hash=sha256_hex(data), text=text)


def _unreadable_folder(e: OSError) -> None:
    raise InvalidDocument(f"folder cannot be read: {e.strerror}; fix its permissions, or leave it out",
                          path=shown(e.filename) if e.filename else None) from None


def expand_paths(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """Files as given; directories expand to their documents (sorted, recursive, hidden entries skipped).

    Symlinked folders are followed once each (a link back up the tree is not followed again). A folder that
    cannot be read fails the command, naming it, rather than being skipped; so do entries with a document
    suffix that are not regular files (read_source refuses them).
    """
    if not paths:
        raise InvalidInput("no paths given; name document files or directories to ingest")
    out: list[Path] = []
    for raw in paths:
        p = _checked(raw)
        st = _stat(p)
        if not stat.S_ISDIR(st.st_mode):
            out.append(p)
            continue
        found: list[Path] = []
        visited = {os.path.realpath(p)}
        for top, dirs, files in os.walk(p, onerror=_unreadable_folder, followlinks=True):
            keep = []
            for d in sorted(dirs):
                real = os.path.realpath(os.path.join(top, d))
                if d.startswith(".") or real in visited:
                    continue  # hidden, or a folder already read (a symlink back up the tree)
                visited.add(real)
                keep.append(d)
            dirs[:] = keep
            for f in files:
                if not f.startswith(".") and Path(f).suffix.lower() in DOC_SUFFIXES:
                    found.append(_checked(Path(top) / f))
        if not found:
            raise InvalidInput(f"{shown(p)} holds no documents (looked for {' '.join('*' + s for s in DOC_SUFFIXES)})")
        out.extend(sorted(found))
    unique: dict[str, Path] = {}
    for given in out:
        unique.setdefault(os.path.realpath(given), given)
    return list(unique.values())


class FrontMatter(BaseModel):
    """The `---` block a summary page may open with (summary pages carry no title of their own)."""

    model_config = ConfigDict(extra="forbid")
    title: str | None = None
    authors: list[str] | None = None
    year: int | None = Field(None, ge=1000, le=9999)
    doi: str | None = None
    arxiv: str | None = None

    @field_validator("authors", mode="before")
    @classmethod
    def _author_string(cls, v: Any) -> Any:
        return [a.strip() for a in v.split(",") if a.strip()] if isinstance(v, str) else v


FRONT_MATTER_KEYS = tuple(FrontMatter.model_fields)
_FM_HINTS = {"string_type": "must be text (quote it if it looks like a number or a list)",
             "list_type": "must be a list of names, or names separated by commas",
             "int_type": "must be a year such as 2024", "int_parsing": "must be a year such as 2024"}


def split_front_matter(text: str, path: str) -> tuple[dict, str, int]:
    """(front matter, body, lines consumed) for a text page that opens with a `---` ... `---` YAML block.

    Only summary pages read it (they carry no title of their own); the body keeps its line numbers
    relative to the file through the returned offset. Values are checked: `title: [a, b]` or `doi: [1]`
    is an InvalidDocument naming the key's line, not a crash later.
    """
    lines = text.split("\n")
    if not lines or lines[0].strip() != "---":
        return {}, text, 0
    for end in range(1, min(len(lines), 60)):
        if lines[end].strip() == "---":
            break
    else:
        return {}, text, 0
    root, meta = compose_bounded("\n".join(lines[1:end]), path, what="front matter is not valid YAML", line_offset=1)
    if meta is None:
        meta = {}
    if not isinstance(meta, dict) or not isinstance(root, yaml.MappingNode):
        raise InvalidDocument("front matter must be `key: value` lines between two `---` lines", path=path, line=2)
    key_lines = {str(k.value): k.start_mark.line + 2 for k, _ in root.value if isinstance(k, yaml.ScalarNode)}
    dup = YamlLines(root).duplicate_key()
    if dup:
        raise InvalidDocument(f"front matter key {dup[0]!r} appears twice", path=path, line=dup[1] + 1, field=dup[0])
    unknown = sorted(str(k) for k in meta if k not in FRONT_MATTER_KEYS)
    if unknown:
        raise InvalidDocument(f"unknown front matter key(s) {', '.join(unknown)}; allowed: {', '.join(FRONT_MATTER_KEYS)}",
                              path=path, line=key_lines.get(unknown[0], 2), field=unknown[0])
    try:
        fm = FrontMatter.model_validate(meta)
    except ValidationError as e:
        err = e.errors()[0]
        key = str(err["loc"][0]) if err["loc"] else ""
        hint = _FM_HINTS.get(err["type"], err["msg"])
        raise InvalidDocument(f"front matter {key}: {hint}, not {err.get('input')!r}"[:300], path=path,
                              line=key_lines.get(key, 2), field=key or None) from None
    return fm.model_dump(exclude_none=True), "\n".join(lines[end + 1:]), end + 1


def numbered_lines(text: str, offset: int = 0) -> list[tuple[int, str]]:
    """(1-based line number, stripped text) of each non-blank line."""
    return [(i + 1 + offset, s.strip()) for i, s in enumerate(text.split("\n")) if s.strip()]
