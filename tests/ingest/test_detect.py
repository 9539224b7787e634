"""Format detection by structure and vocabulary, not by file name or line numbers."""
from __future__ import annotations

import json
import random

import pytest

from claimgraph.ingest import detect_format

SEED_FORMATS = {"000": "novelty", "001": "novelty", "002": "summary", "003": "claim-page"}


@pytest.mark.parametrize("prefix", sorted(SEED_FORMATS))
def test_seeds_are_detected_wherever_their_lines_are(seed, prefix):
    text = seed(prefix).read_text()
    assert detect_format(text, str(seed(prefix))) == SEED_FORMATS[prefix]
    assert detect_format(text, "renamed.md") == SEED_FORMATS[prefix]
    assert detect_format("\n\n  \n" + text + "\n\n", "x.txt") == SEED_FORMATS[prefix]
    lines = text.split("\n")
    for k in range(3):
        random.Random(k).shuffle(lines)
        assert detect_format("\n".join(lines), "x.txt") == SEED_FORMATS[prefix]


def test_bundled_documents_are_detected(data_dir):
    kinds = {p.name: detect_format(p.read_text(), str(p)) for p in (data_dir / "papers").iterdir()}
    assert sorted(kinds.values()) == ["claim-page", "novelty", "novelty", "structured", "structured", "summary"]
    assert kinds["summary-birth-of-knowledge-emergent-features.txt"] == "summary"  # despite its front matter


def test_structured_by_papers_key_or_suffix():
    assert detect_format("# notes\npapers:\n  - title: A\n", "notes.txt") == "structured"
    assert detect_format(json.dumps({"edges": [], "papers": []}), "doc.txt") == "structured"
    assert detect_format("edges: []\n", "doc.yaml") == "structured"  # validation then says `papers` is missing
    assert detect_format("{}", "doc.json") == "structured"


def test_a_few_landmarks_are_enough():
    page = "finding\nfinding:some-resultSome result\nA description."
    assert detect_format(page, "p.txt") == "claim-page"
    report = "Paper title\nOverview\nClaimed Contributions\nOne contribution."
    assert detect_format(report, "p.txt") == "novelty"
    summary = "A TL;DR.\nAn abstract.\nGenerated Jan 02, 2024\nNo citations found for this paper."
    assert detect_format(summary, "p.txt") == "summary"
