"""Reading document files: size limit, binary and encoding checks, directory expansion, front matter.

Every failure is an InvalidDocument naming the file (and the line where there is one), raised before
anything is parsed or written.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import yaml
from pydantic import BaseModel

from claimgraph.graph.errors import InvalidDocument, InvalidInput, NotFound
from claimgraph.graph.ids import sha256_hex

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
    if mb <= 0:
        raise InvalidInput(f"CLAIMGRAPH_MAX_DOC_MB={raw!r} must be positive")
    return int(mb * 1024 * 1024)


def read_source(path: str | os.PathLike) -> SourceText:
    """Read one document file as UTF-8 text, refusing missing, empty, huge, binary and non-UTF-8 files."""
    p = Path(path).expanduser()
    if not p.exists():
        raise NotFound(f"no such file: {p}")
    if p.is_dir():
        raise InvalidDocument("is a directory; pass it to ingest_paths, which expands directories", path=str(p))
    p = p.resolve()
    limit = max_doc_bytes()
    size = p.stat().st_size
    if size > limit:
        raise InvalidDocument(f"is {size / 1048576:.1f} MB, over the {limit / 1048576:g} MB limit for a document; "
                              "split it, or raise the limit with CLAIMGRAPH_MAX_DOC_MB", path=str(p))
    try:
        data = p.read_bytes()
    except OSError as e:
        raise InvalidDocument(f"cannot be read: {e.strerror}", path=str(p)) from None
    return decode_source(data, str(p))


def decode_source(data: bytes, path: str) -> SourceText:
    """Check and decode a document's bytes (see read_source)."""
    if len(data) > max_doc_bytes():
        raise InvalidDocument(f"is {len(data) / 1048576:.1f} MB, over the document size limit; "
                              "raise it with CLAIMGRAPH_MAX_DOC_MB", path=path)
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
    text = text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    if not text.strip():
        raise InvalidDocument("is empty; a document needs content to ingest", path=path)
    return SourceText(path=path, content_hash=sha256_hex(data), text=text)


def expand_paths(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """Files as given; directories expand to their documents (sorted, recursive, hidden entries skipped)."""
    if not paths:
        raise InvalidInput("no paths given; name document files or directories to ingest")
    out: list[Path] = []
    for raw in paths:
        p = Path(raw).expanduser()
        if not p.exists():
            raise NotFound(f"no such file or directory: {p}")
        if p.is_dir():
            found = sorted(
                f.resolve() for f in p.rglob("*")
                if f.is_file() and f.suffix.lower() in DOC_SUFFIXES
                and not any(part.startswith(".") for part in f.relative_to(p).parts))
            if not found:
                raise InvalidInput(f"{p} holds no documents (looked for {' '.join('*' + s for s in DOC_SUFFIXES)})")
            out.extend(found)
        else:
            out.append(p.resolve())
    return list(dict.fromkeys(out))


FRONT_MATTER_KEYS = ("title", "authors", "year", "doi", "arxiv")


def split_front_matter(text: str, path: str) -> tuple[dict, str, int]:
    """(front matter, body, lines consumed) for a text page that opens with a `---` ... `---` YAML block.

    Only summary pages read it (they carry no title of their own); the body keeps its line numbers
    relative to the file through the returned offset.
    """
    lines = text.split("\n")
    if not lines or lines[0].strip() != "---":
        return {}, text, 0
    for end in range(1, min(len(lines), 60)):
        if lines[end].strip() == "---":
            break
    else:
        return {}, text, 0
    block = "\n".join(lines[1:end])
    try:
        meta = yaml.safe_load(block) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise InvalidDocument(f"front matter is not valid YAML: {getattr(e, 'problem', None) or e}", path=path,
                              line=(mark.line + 2) if mark is not None else 2) from None
    if not isinstance(meta, dict):
        raise InvalidDocument("front matter must be `key: value` lines between two `---` lines", path=path, line=2)
    unknown = sorted(str(k) for k in meta if k not in FRONT_MATTER_KEYS)
    if unknown:
        raise InvalidDocument(f"unknown front matter key(s) {', '.join(unknown)}; allowed: {', '.join(FRONT_MATTER_KEYS)}",
                              path=path, line=2, field=unknown[0])
    return meta, "\n".join(lines[end + 1:]), end + 1


def numbered_lines(text: str, offset: int = 0) -> list[tuple[int, str]]:
    """(1-based line number, stripped text) of each non-blank line."""
    return [(i + 1 + offset, s.strip()) for i, s in enumerate(text.split("\n")) if s.strip()]
