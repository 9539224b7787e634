"""Keyword tokens for BM25: lowercase words, stop words dropped, a light suffix stemmer.

Deliberately simple and deterministic: the same function indexes nodes and parses queries, so
'features' matches 'feature' and 'learned' matches 'learning'.
"""
from __future__ import annotations

import functools
import re
import unicodedata
from collections import Counter

STOP_WORDS = frozenset("""
a about above after again against all am an and any are as at be because been before being below between
both but by can did do does doing down during each few for from further had has have having he her here hers
him his how i if in into is it its itself just me more most my no nor not now of off on once only or other our
out over own same she should so some such than that the their them then there these they this those through
to too under until up very was we were what when where which while who whom why will with you your
""".split())

_WORD = re.compile(r"[^\W_]+(?:[-'][^\W_]+)*", re.UNICODE)


@functools.lru_cache(maxsize=1 << 16)  # a corpus repeats its words: ingest stems each once, not once per use
def stem(word: str) -> str:
    """A light English stemmer: strips common inflections, never below three letters."""
    for suffix, min_len in (("ational", 5), ("ization", 5), ("ness", 4), ("ments", 4), ("ment", 4),
                            ("ities", 4), ("ity", 4), ("ings", 4), ("ing", 4), ("edly", 4), ("ed", 4),
                            ("ies", 3), ("es", 4), ("s", 3)):
        if word.endswith(suffix) and len(word) - len(suffix) >= min_len - 1 and len(word) - len(suffix) >= 3:
            base = word[: -len(suffix)]
            if suffix == "ies":
                return base + "y"
            if suffix == "s" and word.endswith("ss"):
                return word
            return base
    return word


def tokens(text: str) -> list[str]:
    """Index terms of a text, in order, with repeats."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    out = []
    for word in _WORD.findall(folded):
        for part in word.replace("'", "-").split("-") if ("-" in word or "'" in word) else (word,):
            if part not in STOP_WORDS and not (len(part) == 1 and part.isascii()):
                out.append(stem(part))
    return out


def term_counts(text: str) -> Counter[str]:
    return Counter(tokens(text))
