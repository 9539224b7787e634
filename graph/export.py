"""Export the graph in standard exchange formats; the formats themselves live in graph/exchange/."""
from __future__ import annotations

from .exchange import FORMATS, export

__all__ = ["FORMATS", "export"]
