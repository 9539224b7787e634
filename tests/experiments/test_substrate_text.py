"""Real-text corpora: character labels on hand-made documents whose truth is known, the mapping to tokens through
SmolLM2's real tokenizer, a deterministic cached build (same sha256 twice, in two fresh caches), splits by
document, and the token-alone F1 on planted labels (one that is the token's identity, one that is not)."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch

from claimgraph.experiments.substrate.load import corpus_for, tokenizer_for
from claimgraph.experiments.substrate.text import (
    LABELS,
    TEXT_RECIPES,
    Document,
    _token_labels,
    build_documents,
    build_text_corpus,
    char_labels,
    token_alone_f1,
)
from claimgraph.graph.errors import InvalidInput

B64 = "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo0MTIz"  # base64 of b"ABCDEFGHIJKLMNOPQRSTUVWXYZ4123"


def _doc(text: str, kind: str = "python") -> Document:
    return Document("t/x", "test", kind, "test", "0", "x", text)


def _spans(mask: np.ndarray, text: str) -> list[str]:
    out, i = [], 0
    while i < len(mask):
        if mask[i]:
            j = i
            while j < len(mask) and mask[j]:
                j += 1
            out.append(text[i:j])
            i = j
        else:
            i += 1
    return out


@pytest.fixture(scope="module")
def tok():
    return tokenizer_for("lm:smollm2-135m")


def test_base64_spans_from_characters():
    text = (f"key = '{B64}'\nname = 'AbstractEventLoopPolicyXYZ'\nhexa = '0123456789abcdef0123abcd'\n"
            f"-----BEGIN CERTIFICATE-----\n{B64}\n{B64[:24]}==\n-----END CERTIFICATE-----\n")
    lab = char_labels(_doc(text, "pem"))
    assert _spans(lab["base64"], text) == [B64, f"{B64}\n{B64[:24]}=="]  # a PEM body is one span, padding included
    assert not lab["arabic"].any() and not lab["code"].any()  # pem documents carry no code/prose labels


def test_arabic_spans_take_the_spaces_between_words():
    text = "x = ['كما أن', 'hello']\ny = 'في hello من'\n"
    lab = char_labels(_doc(text))
    assert _spans(lab["arabic"], text) == ["كما أن", "في", "من"]  # a Latin word or newline ends a span


def test_python_code_comment_string_prose():
    text = '"""Module doc."""\nx = 1  # a note\ns = "str"\n'
    lab = char_labels(_doc(text))
    assert _spans(lab["comment"], text) == ["# a note"]
    assert _spans(lab["string"], text) == ['"""Module doc."""', '"str"']
    assert _spans(lab["prose"], text) == ['"""Module doc."""', "# a note"]  # docstrings and comments
    assert "x = 1" in "".join(_spans(lab["code"], text)) and not lab["code"][text.index("str")]


def test_prose_documents_mark_doctest_lines_as_code():
    text = "Use it like this:\n\n   >>> print(1)\n   1\n   ... more\n"
    lab = char_labels(_doc(text, "prose"))
    assert [s.strip() for s in _spans(lab["code"], text)] == [">>> print(1)", "... more"]
    assert lab["prose"][0] and not lab["code"][0]


def test_token_labels_follow_the_offsets(tok):
    text = f"hello كما أن world {B64} end"
    ids, lab = _token_labels(_doc(text, "po"), tok)
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    assert ids.tolist() == enc["input_ids"]

    def covered(label: str) -> str:  # characters of the labelled tokens (byte-level pieces of one character
        on = np.zeros(len(text), bool)  # share its offsets, so take the union)
        for (s, e), hit in zip(enc["offset_mapping"], lab[:, LABELS.index(label)]):
            on[s:e] |= bool(hit)
        return "".join(_spans(on, text)).strip()

    assert covered("arabic") == "كما أن" and covered("base64") == B64


def test_documents_keep_provenance():
    docs = build_documents(TEXT_RECIPES["small"])
    assert {d.source for d in docs} == set(TEXT_RECIPES["small"].sources)
    for d in docs:
        r = d.record()
        assert r["sha256"] == hashlib.sha256(d.text.encode()).hexdigest() and r["package"] and r["version"]
    assert build_documents(TEXT_RECIPES["small"]) == docs


@pytest.fixture(scope="module")
def small(tok):
    return build_text_corpus("text:small", tok)


def test_build_is_deterministic_and_cached(tok, tmp_path, monkeypatch, small):
    shas = []
    for i in range(2):
        monkeypatch.setenv("CLAIMGRAPH_CACHE", str(tmp_path / f"cache{i}"))
        c = build_text_corpus("text:small", tok)
        assert c.folder.is_relative_to(tmp_path / f"cache{i}")
        shas.append((c.manifest["documents_sha256"], c.manifest["tokens_sha256"]))
        assert build_text_corpus("text:small", tok).folder == c.folder  # served from the cache
    assert shas[0] == shas[1] == (small.manifest["documents_sha256"], small.manifest["tokens_sha256"])


def test_windows_and_splits_by_document(small):
    sep = small.manifest["separator_id"]
    docs = {s: set(np.unique(small.doc_index[s])) - {-1} for s in ("train", "eval")}
    assert docs["train"] and docs["eval"] and not docs["train"] & docs["eval"]
    by_split = {d["split"] for d in small.documents}
    assert by_split == {"train", "eval"}
    for s in ("train", "eval"):
        toks, lab = small.tokens[s], small.labels[s]
        assert toks.shape[1] == small.seq_len and (toks[:, 0] == sep).all()
        assert not lab[toks == sep].any()  # separators carry no label
        for i in docs[s]:
            assert small.documents[i]["split"] == s
    stats = small.stats()
    assert stats["total_tokens"] == sum(r["tokens"] for r in stats["sources"])
    assert set(stats["labels"]) == set(LABELS) and (small.folder / "stats.md").read_text().count("|") > 50


def test_sample_and_span_labels(small):
    a, b = small.sample(5, seed=1), small.sample(5, seed=1)
    assert torch.equal(a, b) and len({tuple(r) for r in a.tolist()}) == 5
    assert not torch.equal(a, small.sample(5, seed=2))
    rows = small.sample_rows(5, seed=1)
    want = small.window_labels("train", rows)
    got = small.span_labels(a)
    assert all(torch.equal(got[k], want[k]) for k in LABELS)
    prefix = small.span_labels(a[:, :10])
    assert torch.equal(prefix["base64"], want["base64"][:, :10])
    with pytest.raises(InvalidInput, match="not a window"):
        small.span_labels(torch.zeros(1, small.seq_len, dtype=torch.long))
    with pytest.raises(InvalidInput, match="eval windows"):
        small.sample(10**6, seed=0, split="eval")


def test_token_alone_f1_on_planted_labels():
    rng = np.random.default_rng(0)
    tr, ev = rng.integers(0, 50, 20000), rng.integers(0, 50, 20000)
    identity = lambda t: np.stack([t % 2 == 0] * len(LABELS), 1)  # the token gives it away
    f = token_alone_f1(tr, identity(tr), ev, identity(ev), 50)
    assert all(v["f1"] == 1.0 for v in f.values())
    ctx = lambda n: np.stack([rng.random(n) < 0.3] * len(LABELS), 1)  # independent of the token
    g = token_alone_f1(tr, ctx(len(tr)), ev, ctx(len(ev)), 50)
    assert all(v["f1"] < 0.2 for v in g.values())


def test_text_corpus_needs_the_models_tokenizer(small):
    with pytest.raises(InvalidInput, match="no tokenizer"):
        corpus_for("toy:tiny", "text:small")
    with pytest.raises(InvalidInput, match="unknown text corpus"):
        corpus_for("lm:smollm2-135m", "text:nope")
    from claimgraph.experiments.substrate.load import check_fit

    class Other:  # a model whose tokenizer is not the corpus' (only what check_fit reads)
        tokenizer = None
        n_ctx, d_vocab = 512, 49152

    with pytest.raises(InvalidInput, match="tokenized by tokenizer"):
        check_fit(Other(), "hf:/other", small, "text:small")  # type: ignore[arg-type]
    assert json.loads((small.folder / "manifest.json").read_text())["labels"] == list(LABELS)


@pytest.mark.slow
def test_readme_shows_the_text_mixed_stats(tok):
    """README's stats table is what building text:mixed with SmolLM2's tokenizer gives (same sha256, same table)."""
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    shown = readme.split("<!-- text:mixed stats -->\n", 1)[1].split("\n<!-- /text:mixed stats -->", 1)[0]
    corpus = build_text_corpus("text:mixed", tok)
    built = (corpus.folder / "stats.md").read_text().split("\n", 2)[2]  # without the title lines
    assert shown.strip() == built.strip(), ("README's text:mixed table is stale: paste the output of "
                                            "python -m claimgraph.experiments.substrate.text text:mixed")
    assert corpus.manifest["documents_sha256"].startswith(readme.split("documents sha256 `", 1)[1][:8])
