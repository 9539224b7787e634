"""Torch tests run on one intra-op thread: tiny matmuls are ~10x faster than with two threads on two busy
cores, and jobs that compute with one thread are then bit-comparable with the tests' independent
recomputations."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    from claimgraph.experiments.context import torch_threads

    with torch_threads(1):
        yield
