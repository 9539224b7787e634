"""Fixtures for ingest tests: seed documents by kind, and the title the summary seed needs."""
from __future__ import annotations

from pathlib import Path

import pytest

# The summary seed (002) is the abstract page of arXiv 2505.19440; the page itself carries no title.
BIRTH_TITLE = "The Birth of Knowledge: Emergent Features across Time, Space, and Scale in Large Language Models"


@pytest.fixture(scope="session")
def birth_title() -> str:
    return BIRTH_TITLE


@pytest.fixture(scope="session")
def seed(seeds_dir):
    """seed("000") -> path of the seed document whose name starts with that prefix."""
    def get(prefix: str) -> Path:
        found = sorted(seeds_dir.glob(prefix + "_*"))
        assert len(found) == 1, f"expected one seed {prefix}_*, found {found}"
        return found[0]
    return get
