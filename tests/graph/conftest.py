"""Fixtures of the graph tests: the small hand-written corpus's real vectors, encoded once per session."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from sim_corpus import NODES


@pytest.fixture(scope="session")
def vectors():
    """Real all-MiniLM-L6-v2 vectors of sim_corpus.NODES, keyed by text hash."""
    from claimgraph.graph import Store
    from claimgraph.graph.embed import vectors_for

    with Store(None) as s:
        return vectors_for(s, NODES, progress=False)
