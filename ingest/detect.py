"""Which of the four document kinds a text is, by its structure and vocabulary (never by line numbers)."""
from __future__ import annotations

import re
from pathlib import Path

from claimgraph.graph.errors import InvalidDocument
from claimgraph.graph.models import NodeType

from . import claim_page, novelty, summary

FORMATS = ("structured", "claim-page", "novelty", "summary")
STRUCTURED_SUFFIXES = (".yaml", ".yml", ".json")
_YAML_PAPERS = re.compile(r"^papers\s*:", re.M)
_JSON_PAPERS = re.compile(r'"papers"\s*:')
_TYPE_WORDS = {t.value for t in NodeType}


def _body(text: str) -> list[str]:
    """Non-blank stripped lines, a leading `---` front matter block skipped."""
    lines = text.split("\n")
    if lines and lines[0].strip() == "---":
        for end in range(1, min(len(lines), 60)):
            if lines[end].strip() == "---":
                lines = lines[end + 1:]
                break
    return [s.strip() for s in lines if s.strip()]


def format_scores(text: str) -> dict[str, int]:
    """Evidence for each text format (higher is stronger); the structured format is decided before this."""
    lines = _body(text)
    scores = dict.fromkeys(FORMATS[1:], 0)
    for i, s in enumerate(lines):
        if claim_page.ID_LINE.match(s):
            scores["claim-page"] += 2 + any(p.lower() in _TYPE_WORDS for p in lines[max(0, i - 2):i])
        elif (h := claim_page.heading(s)) is not None and h.kind != "extra":
            scores["claim-page"] += 1
        if novelty._heading(s):
            scores["novelty"] += 2 if novelty._heading(s) in ("claimed", "analysis", "assessment") else 1
        if summary.LEGEND.match(s):
            scores["summary"] += 3
        elif summary.GENERATED.match(s):
            scores["summary"] += 2
        elif summary.NO_CITATIONS.match(s) or summary.NO_KEY_TERMS.match(s) or summary.COMMENTS.match(s):
            scores["summary"] += 1
    return scores


def detect_format(text: str, path: str) -> str:
    """`structured`, `claim-page`, `novelty` or `summary`; InvalidDocument naming the file if none fits."""
    if _YAML_PAPERS.search(text) or (text.lstrip().startswith("{") and _JSON_PAPERS.search(text)):
        return "structured"
    if Path(path).suffix.lower() in STRUCTURED_SUFFIXES:
        return "structured"  # validation will say what the document lacks
    scores = format_scores(text)
    best = max(scores.values())
    winners = [f for f, v in scores.items() if v == best]
    if best < 2 or len(winners) > 1:
        what = "matches none of them" if best < 2 else f"looks equally like {' and '.join(winners)}"
        raise InvalidDocument(
            f"cannot tell what kind of document this is: it {what}. Known kinds: a structured YAML/JSON document "
            "with a `papers:` key; a claim page (`claim` then a `claim:slug` id line); a novelty report "
            "(Overview / Claimed Contributions / Contribution Analysis); a paper summary (TL;DR, 'Generated <date>', "
            "'Current paper (gray), citations (green), references (blue)'). Pass --format to choose", path=path)
    return winners[0]
