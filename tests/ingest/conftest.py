"""Fixtures for ingest tests: seed documents by kind, and the title the summary seed needs."""
from __future__ import annotations

import contextlib
import os
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


NOBODY = 65534


@contextlib.contextmanager
def _unprivileged():
    if os.geteuid() != 0:
        yield
        return
    os.setegid(NOBODY)
    os.seteuid(NOBODY)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(0)


@pytest.fixture
def as_nobody():
    """A context manager running its body as the unprivileged `nobody` when the tests run as root (as in CI), so
    that unreadable files and folders are really unreadable; a no-op for an ordinary user."""
    return _unprivileged
