"""claimgraph.ingest: paper documents -> typed nodes and edges in the store, with provenance.

    from claimgraph.ingest import ingest_paths
    reports = ingest_paths(store, ["data/papers"])           # every document parsed first, then applied

Four document kinds, detected by structure: `structured` (YAML/JSON, see docs/document-format.md),
`claim-page`, `novelty` (novelty reports) and `summary` (paper summary pages, which need a title).
"""
from .detect import FORMATS, detect_format
from .pipeline import ParsedDocument, ingest_documents, ingest_paths, parse_document, parse_text, read_documents

__all__ = ["FORMATS", "ParsedDocument", "detect_format", "ingest_documents", "ingest_paths", "parse_document",
           "parse_text", "read_documents"]
