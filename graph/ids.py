"""Stable identifiers: `type:slug`, derived from content so that re-ingest finds the same node.

A slug is lowercase ASCII letters, digits and single hyphens. Titles are folded to ASCII (accents
dropped); text with no Latin letters at all, and slugs longer than MAX_SLUG, fall back to a short
content hash so the id stays stable and bounded.
"""
from __future__ import annotations

import functools
import hashlib
import re
import unicodedata
from typing import Any

from .errors import InvalidInput
from .models import NODE_TYPES, NodeType

MAX_SLUG = 200
_ID_RE = re.compile(r"^(?P<type>[a-z_]+):(?P<slug>[a-z0-9]+(?:-[a-z0-9]+)*)$")


def sha256_hex(data: bytes | str) -> str:
    """Hex sha256 of bytes, or of a string's UTF-8 encoding."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    return hashlib.sha256(data).hexdigest()


_NOT_SLUG = re.compile(r"[^a-z0-9]+")


@functools.lru_cache(maxsize=1 << 14)  # a document names most titles several times (node, edge ends, references)
def slugify(text: str) -> str:
    """`"Logit Weight Analysis"` -> `"logit-weight-analysis"`; stable, bounded, never empty."""
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii").lower()
    slug = _NOT_SLUG.sub("-", folded).strip("-")
    if not slug:
        return "h-" + sha256_hex(normalize_text(text))[:12]
    if len(slug) > MAX_SLUG:
        slug = slug[: MAX_SLUG - 13].rstrip("-") + "-" + sha256_hex(slug)[:12]
    return slug


def normalize_text(text: str) -> str:
    """Whitespace-collapsed, case-folded, NFKC text: the key for 'same title'."""
    return re.sub(r"\s+", " ", unicodedata.normalize("NFKC", text)).strip().casefold()


def normalize_title(title: str) -> str:
    """Title identity: punctuation and quotes dropped, whitespace collapsed, case-folded."""
    t = normalize_text(title)
    t = re.sub(r"[\"'`\u2018\u2019\u201c\u201d]", "", t)
    t = re.sub(r"[^\w]+", " ", t)
    return re.sub(r"\s+", " ", t).strip()


def make_id(node_type: NodeType | str, title: str) -> str:
    """The id of a node of this type and title: `claim:learned-features-reflect-...`."""
    if not isinstance(node_type, NodeType):
        node_type = NodeType(node_type)  # (a NodeType is a str: the check keeps a member from the slow lookup)
    return f"{node_type.value}:{slugify(title)}"


def paper_id(*, title: str | None = None, doi: str | None = None, arxiv: str | None = None,
             fallback: str | None = None) -> str:
    """Paper identity: DOI, else arXiv id, else normalised title, else a fallback key (e.g. first author + year)."""
    if doi:
        return f"paper:doi-{slugify(normalize_doi(doi))}"
    if arxiv:
        return f"paper:arxiv-{slugify(normalize_arxiv(arxiv))}"
    if title and normalize_title(title):
        return f"paper:{slugify(normalize_title(title))}"
    if fallback:
        return f"paper:{slugify(fallback)}"
    raise InvalidInput("a paper needs a DOI, an arXiv id or a title")


def normalize_doi(doi: str) -> str:
    d = doi.strip().lower()
    d = re.sub(r"^(https?://)?(dx\.)?doi\.org/", "", d)
    return d.removeprefix("doi:")


def normalize_arxiv(arxiv: str) -> str:
    a = arxiv.strip().lower()
    a = re.sub(r"^(https?://)?arxiv\.org/(abs|pdf)/", "", a).removeprefix("arxiv:")
    return re.sub(r"v\d+$", "", a.removesuffix(".pdf"))


def parse_id(node_id: str) -> tuple[NodeType, str]:
    """Split and validate `type:slug`; raises InvalidInput naming what is wrong."""
    m = _ID_RE.match(node_id or "")
    if not m:
        raise InvalidInput(f"{node_id!r} is not a node id; ids look like 'claim:some-slug' (lowercase letters, digits, hyphens)")
    ntype = NODE_TYPES.get(m["type"])  # a dict, not NodeType(...): ingest splits both ends of every edge
    if ntype is None:
        raise InvalidInput(
            f"{node_id!r} has unknown node type {m['type']!r}; known types: {', '.join(t.value for t in NodeType)}")
    return ntype, m["slug"]


def is_id(text: str) -> bool:
    """True for a well-formed `type:slug` with a known type."""
    try:
        parse_id(text)
        return True
    except InvalidInput:
        return False


def paper_keys(title: str, attrs: dict[str, Any]) -> list[str]:
    """Identity keys of a paper: its DOI, arXiv id and (when the title is known) normalised title."""
    keys = []
    if attrs.get("doi"):
        keys.append("doi:" + normalize_doi(attrs["doi"]))
    if attrs.get("arxiv"):
        keys.append("arxiv:" + normalize_arxiv(attrs["arxiv"]))
    if attrs.get("title_known", True):
        norm = attrs.get("title_norm") or normalize_title(title)
        if norm:
            keys.append("title:" + norm)
    return keys
