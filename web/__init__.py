"""claimgraph.web: the local web UI over the claim graph (`claimgraph serve`). See app.py for the pages."""
from .app import Settings, create_app

__all__ = ["Settings", "create_app"]
