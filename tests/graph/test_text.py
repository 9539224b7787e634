"""Index terms and slugs, pinned on the cases their fast paths treat specially (hyphens and apostrophes split
a word, stop words and single ASCII letters dropped, case folding, the slug cache)."""
from __future__ import annotations

from claimgraph.graph.ids import slugify
from claimgraph.graph.text import tokens


def test_tokens_split_fold_drop_and_stem():
    text = "The model's in-context learning isn't a x-ray of SAEs; ß é I'd features-of-interest"
    assert tokens(text) == ["model", "context", "learn", "isn", "ray", "sae", "ss", "é", "featur", "interest"]
    assert tokens("") == [] and tokens("-- ' _ a i") == []
    assert tokens("Learned FEATURES") == tokens("learning features") == ["learn", "featur"]


def test_slugify_is_stable_bounded_and_cached_calls_agree():
    assert slugify("Logit Weight Analysis — ÉCOLE (2024)") == "logit-weight-analysis-ecole-2024"
    assert slugify("日本語").startswith("h-") and slugify("日本語") == slugify("日本語")
    long = slugify("a" * 300)
    assert len(long) <= 200 and long == slugify("a" * 300)
    assert slugify("x" * 300) != long
