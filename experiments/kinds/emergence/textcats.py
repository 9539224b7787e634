"""Categories of a real-text corpus (`text:<recipe>`, substrate/text.py) for the emergence sweep, and which of
them the current token gives away. Torch-free (numpy): `experiment add` checks the names with it.

A category is one term or an intersection of terms joined by `&`, a term negated by a leading `!`:
- a character label of the corpus (text.LABELS: base64, arabic, code, prose, string, comment; a token carries
  it when at least half its characters do);
- `doc:<kind>`: the token lies in a document of that kind (prose, python, pem, mime, po: how text.py reads the
  source's labels).
So `string&prose` is a Python docstring (a string literal that counts as prose), `arabic&doc:po` Arabic text in
a gettext catalogue (translations) rather than in Python string literals, `string&!prose` a string literal that
is not a docstring. Document separators belong to no category.

`TEXT_CATEGORIES` is the default set on a text corpus: the six labels, whose token-alone F1 on text:mixed is
0.66-0.98 (the current token mostly gives them away, except `comment`), and two intersections the token does not
give away (token-alone F1 0.30 each), known from the corpus before any model was run (the table in
docs/preregistration/2026-12-01-real-model-depth.md).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from claimgraph.experiments.substrate.text import LABELS
from claimgraph.graph.errors import InvalidInput

DOC_KINDS = ("prose", "python", "pem", "mime", "po")
TEXT_CATEGORIES = ["base64", "arabic", "code", "prose", "string", "comment", "string&prose", "arabic&doc:po"]


def parse_category(expr: str) -> list[tuple[bool, str]]:
    """The terms of a category expression as (negated, term); InvalidInput names what is wrong."""
    terms = []
    for raw in expr.split("&"):
        raw = raw.strip()
        neg = raw.startswith("!")
        term = raw[1:].strip() if neg else raw
        if term in LABELS or (term.startswith("doc:") and term[4:] in DOC_KINDS):
            terms.append((neg, term))
            continue
        raise InvalidInput(f"category {expr!r}: {term!r} is neither a label of a text: corpus ({', '.join(LABELS)}) "
                           f"nor a document kind doc:<{'|'.join(DOC_KINDS)}>; join terms with & and negate with !")
    if all(neg for neg, _ in terms):
        raise InvalidInput(f"category {expr!r} has no positive term: name at least one label or doc:<kind>")
    return terms


def check_categories(categories: list[str]) -> None:
    for c in categories:
        parse_category(c)


def category_masks(corpus: Any, split: str, rows: np.ndarray | None, categories: list[str]) -> np.ndarray:
    """bool [n, T, C]: membership of every position of windows `rows` of `split` (all when None) in each
    category; separators (doc index -1) are in none."""
    lab = corpus.labels[split] if rows is None else corpus.labels[split][rows]          # [n, T, L]
    doc = corpus.doc_index[split] if rows is None else corpus.doc_index[split][rows]    # [n, T]
    kinds = np.array([d["kind"] for d in corpus.documents] + [""])                     # [D + 1], -1 -> ""
    doc_kind = kinds[doc]                                                                # [n, T]
    out = np.zeros((*doc.shape, len(categories)), bool)
    for c, expr in enumerate(categories):
        mask = doc >= 0
        for neg, term in parse_category(expr):
            m = doc_kind == term[4:] if term.startswith("doc:") else lab[..., LABELS.index(term)]
            mask &= ~m if neg else m
        out[..., c] = mask
    return out


def token_set_f1(fit_tokens: np.ndarray, fit_labels: np.ndarray, tokens: np.ndarray, labels: np.ndarray,
                 d_vocab: int) -> list[float]:
    """Per category (columns of the bool [M, C] label arrays, at the positions of the int [M] token arrays): the
    best F1 on (tokens, labels) of a detector that sees the current token only and fires on a set of token ids,
    the ids ranked by P(category | token) on (fit_tokens, fit_labels) and the best cut-off of that ranking taken.

    Fitted on the scored positions themselves this is the best token set exactly (`sweep.token_alone_f1`: the F1
    of a set grows by adding any token whose share of positives exceeds F1 / 2, so the optimum takes the
    highest-share tokens first). On real text the ranking is fitted on the train split and the eval split is
    scored: over a 49k-token vocabulary an in-sample ranking overfits (a token seen once, inside the category,
    gets share 1), which a planted test shows; only the cut-off is chosen on the scored positions."""
    count = np.bincount(fit_tokens, minlength=d_vocab).astype(np.float64)                # [V]
    scored = np.bincount(tokens, minlength=d_vocab).astype(np.float64)                   # [V]
    out = []
    for c in range(fit_labels.shape[1]):
        pos = np.bincount(fit_tokens, weights=fit_labels[:, c].astype(np.float64), minlength=d_vocab)  # [V]
        order = np.argsort(-(pos / np.maximum(count, 1)), kind="stable")                  # [V] by fitted share
        hit = np.bincount(tokens, weights=labels[:, c].astype(np.float64), minlength=d_vocab)          # [V]
        tp = np.cumsum(hit[order])                                                        # [V] positives caught
        fired = np.cumsum(scored[order])                                                  # [V] positions fired on
        out.append(float((2 * tp / np.maximum(fired + labels[:, c].sum(), 1)).max()))
    return out
