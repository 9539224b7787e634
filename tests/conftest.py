"""Shared fixtures: real DuckDB stores (in memory and on disk), the seed documents, and an isolated
cache for trained toy models (one per test session, so tiny models are trained once)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SEEDS = REPO.parent / "shared" / "seeds"

# Spinning OpenMP threads make torch crawl when processes share two cores; passive threads sleep instead.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """Trained toy models go to a per-session cache, never the user's ~/.cache."""
    old = os.environ.get("CLAIMGRAPH_CACHE")
    os.environ["CLAIMGRAPH_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if old is None:
        os.environ.pop("CLAIMGRAPH_CACHE", None)
    else:
        os.environ["CLAIMGRAPH_CACHE"] = old


@pytest.fixture
def store():
    """A fresh in-memory store."""
    from claimgraph.graph import Store

    with Store(None) as s:
        yield s


_DOCUMENT_ROWS = {
    "nodes": "id, type, title, text, attrs, text_hash, source, source_hash, made_by",
    "edges": "src, type, dst, attrs, source, source_hash, made_by",
    "node_sources": "*", "edge_sources": "*", "paper_keys": "*", "node_terms": "*",
    "stated_similarity": "node_id, other_key, other_id, other_title, other_type, other_text, score, source, source_hash",
    "documents": "path, content_hash, format, title", "embeddings": "text_hash, model, vector"}


@pytest.fixture
def store_rows():
    """store_rows(store) -> every row that applying documents writes, by table, without the times it was written
    at: for comparing two ways of writing the same documents."""
    return lambda store: {t: store.sql(f"SELECT {cols} FROM {t} ORDER BY ALL") for t, cols in _DOCUMENT_ROWS.items()}


@pytest.fixture
def db_path(tmp_path) -> Path:
    return tmp_path / "claims.duckdb"


@pytest.fixture
def file_store(db_path):
    """A fresh store in a real file."""
    from claimgraph.graph import Store

    with Store(db_path) as s:
        yield s


@pytest.fixture(scope="session")
def seeds_dir() -> Path:
    """../shared/seeds beside the clone (CI has it); tests that need it skip without it."""
    if not SEEDS.is_dir():
        pytest.skip(f"seed documents not found at {SEEDS}")
    return SEEDS


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return REPO / "data"
