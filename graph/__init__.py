"""claimgraph.graph: the DuckDB store and the data model. Imports neither torch nor sentence-transformers."""
from .errors import ClaimgraphError, InvalidDocument, InvalidInput, JobFailed, NotFound, StoreBusy, StoreError
from .ids import make_id, paper_id, slugify
from .models import (
                     ApplyReport,
                     DocumentRef,
                     Edge,
                     EdgeType,
                     GraphDelta,
                     MadeBy,
                     Node,
                     NodeType,
                     Provenance,
                     StatedSimilarity,
)
from .store import Store

__all__ = [
    "Store", "Node", "Edge", "NodeType", "EdgeType", "MadeBy", "Provenance", "GraphDelta", "DocumentRef",
    "ApplyReport", "StatedSimilarity", "make_id", "paper_id", "slugify",
    "ClaimgraphError", "InvalidDocument", "InvalidInput", "NotFound", "StoreBusy", "StoreError", "JobFailed",
]
