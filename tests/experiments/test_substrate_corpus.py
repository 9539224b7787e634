"""The synthetic corpus: vocabulary layout, determinism, and that the planted structure is really there
(checked on samples against rules written independently of the generator)."""
from __future__ import annotations

import math
import unicodedata

import pytest
import torch

from claimgraph.experiments.substrate.corpus import CORPUS_PRESETS, PAIRS, CorpusConfig, SyntheticCorpus, get_corpus
from claimgraph.graph.errors import InvalidInput


@pytest.fixture(scope="module")
def corpus() -> SyntheticCorpus:
    return get_corpus("synthetic:default")


@pytest.fixture(scope="module")
def sample(corpus) -> torch.Tensor:
    return corpus.sample(1500, seed=7)


def _rows(tokens: torch.Tensor, corpus: SyntheticCorpus) -> list[list[str]]:
    return [corpus.vocab.decode(r) for r in tokens]


def test_vocab_layout(corpus):
    v = corpus.vocab
    for name in ("base64", "arabic", "digit", "animal", "color", "number_word", "function"):
        assert name in v.categories, name
    b64 = [v.tokens[i] for i in v.categories["base64"]]
    assert "".join(b64) == "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    arabic = [v.tokens[i] for i in v.categories["arabic"]]
    assert len(arabic) >= 28 and all(unicodedata.name(ch).startswith("ARABIC LETTER") for ch in arabic)
    # every token in exactly one category; masks, category_of and decode agree
    total = torch.zeros(len(v), dtype=torch.long)
    for name, ids in v.categories.items():
        mask = v.category_mask(name)
        assert mask.shape == (len(v),) and mask.dtype == torch.bool and int(mask.sum()) == len(ids)
        total += mask.long()
        assert all(v.category_of(i) == name for i in ids)
    assert bool((total == 1).all())
    assert 300 <= len(v) <= 600
    assert v.decode(v.encode(["the", "cat", "b64:", "Q"])) == ["the", "cat", "b64:", "Q"]
    with pytest.raises(InvalidInput):
        v.category_mask("nonsense")


def test_sample_is_deterministic_and_shaped(corpus):
    a = corpus.sample(64, seed=3)
    assert a.shape == (64, corpus.config.seq_len) and a.dtype == torch.long
    assert torch.equal(a, corpus.sample(64, seed=3))
    assert not torch.equal(a, corpus.sample(64, seed=4))
    assert bool((a[:, 0] == corpus.vocab.id("<bos>")).all())
    assert int(a.min()) >= 0 and int(a.max()) < len(corpus.vocab)
    # a fresh corpus object with the same preset gives the same tokens
    assert torch.equal(a, get_corpus("synthetic:default").sample(64, seed=3))
    # the generator is not row-independent by accident: rows differ
    assert len({tuple(r) for r in a.tolist()}) == 64


def test_the_sample_memo_hands_out_what_the_generator_draws():
    from claimgraph.experiments.substrate import corpus as mod

    c = get_corpus("synthetic:default")
    mod._SAMPLES.clear()
    first = c.sample(40, seed=11)  # generated
    fresh = mod.generate(c.config, c.vocab, 40, torch.Generator().manual_seed(11))
    assert torch.equal(first, fresh)
    first[:] = 0  # a caller writing to its sample changes neither the memo nor the next caller's
    again = c.sample(40, seed=11)  # from the memo
    assert torch.equal(again, fresh) and again.data_ptr() != c.sample(40, seed=11).data_ptr()
    # (config, n, seed) is the key: another config, size or seed is drawn, not served
    other = SyntheticCorpus(CorpusConfig(p_b64=0.3))
    assert torch.equal(other.sample(40, seed=11),
                       mod.generate(other.config, other.vocab, 40, torch.Generator().manual_seed(11)))
    assert not torch.equal(other.sample(40, seed=11), fresh)
    for n, seed in ((39, 11), (40, 12)):
        assert torch.equal(c.sample(n, seed=seed),
                           mod.generate(c.config, c.vocab, n, torch.Generator().manual_seed(seed)))


def test_the_sample_memo_keeps_to_its_limit():
    from claimgraph.experiments.substrate.corpus import _SampleMemo

    memo = _SampleMemo(limit=3 * 80)  # bytes: three [10] int64 tensors
    for i in range(5):
        memo.put(("c", 10, i), torch.full((10,), i))
    assert memo.bytes == 240 and memo.get(("c", 10, 0)) is None and memo.get(("c", 10, 1)) is None
    assert torch.equal(memo.get(("c", 10, 2)), torch.full((10,), 2))  # and 2 is now the most recent
    memo.put(("c", 10, 5), torch.full((10,), 5))
    assert memo.get(("c", 10, 3)) is None and memo.get(("c", 10, 2)) is not None
    memo.put(("c", 40, 0), torch.zeros(40, dtype=torch.long))  # larger than the whole limit: not kept, nothing evicted
    assert memo.get(("c", 40, 0)) is None and memo.bytes == 240


def test_presets_and_errors():
    assert set(CORPUS_PRESETS) >= {"default", "tiny"}
    tiny = get_corpus("synthetic:tiny")
    assert tiny.sample(5, 0).shape == (5, tiny.config.seq_len)
    for bad in ("text:/tmp/x.txt", "synthetic:", "synthetic:nope", "default"):
        with pytest.raises(InvalidInput):
            get_corpus(bad)
    with pytest.raises(ValueError):
        CorpusConfig(b64_len=(5, 2))


def test_deterministic_bigrams_hold(corpus, sample):
    v = corpus.vocab
    prev, nxt = sample[:, :-1].reshape(-1), sample[:, 1:].reshape(-1)
    for a, b in PAIRS:
        after = nxt[prev == v.id(a)]
        assert len(after) > 20, a
        assert bool((after == v.id(b)).all()), f"{a} -> {b} broken"
    # number word -> plural always; "every" never -> plural; b64: -> base64 char; <ar> -> Arabic letter
    cat = v.category_ids
    names = list(v.categories)
    def follows(mask_prev: torch.Tensor) -> torch.Tensor:
        return cat[nxt[mask_prev[prev]]]
    assert bool((follows(v.category_mask("number_word")) == names.index("plural")).all())
    assert not bool((follows(v.category_mask("function") & (torch.arange(len(v)) == v.id("every")))
                     == names.index("plural")).any())
    assert bool((cat[nxt[prev == v.id("b64:")]] == names.index("base64")).all())
    assert bool((cat[nxt[prev == v.id("<ar>")]] == names.index("arabic")).all())
    # years start "#1 #9" or "#2 #0"
    digit = v.category_mask("digit")
    starts = digit[sample[:, 1:-1]] & ~digit[sample[:, :-2]]                     # [n, T-2]
    first_digit, second = sample[:, 1:-1][starts], sample[:, 2:][starts]
    assert len(first_digit) > 50
    assert bool(torch.isin(first_digit, v.encode(["#1", "#2"])).all())
    assert bool((second == torch.where(first_digit == v.id("#1"), v.id("#9"), v.id("#0"))).all())


def test_spans_and_their_labels(corpus, sample):
    cfg = corpus.config
    labels = corpus.span_labels(sample)
    cats = set(corpus.vocab.categories)
    assert {"base64_span", "arabic_span"} <= set(labels)
    assert {f"cat:{c}" for c in cats} <= set(labels)
    for k, lab in labels.items():
        assert lab.shape == sample.shape and lab.dtype == torch.bool, k
    # inside a base64 span only base64 chars; inside an Arabic span only Arabic letters and the word space
    assert bool(labels["cat:base64"][labels["base64_span"]].all())
    in_ar = labels["arabic_span"]
    assert bool((labels["cat:arabic"] | (sample == corpus.vocab.id(" ")))[in_ar].all())
    assert bool(labels["cat:arabic"][~in_ar].logical_not().all()), "Arabic letters outside Arabic spans"
    # base64 tokens also occur outside spans (name initials), so the span label is more than token identity
    assert bool((labels["cat:base64"] & ~labels["base64_span"]).any())
    # complete spans have the configured lengths
    lengths, word_lens, word_counts = [], [], []
    for row in _rows(sample[:400], corpus):
        text = " ".join(row)
        for chunk in text.split("b64: ")[1:]:
            if " =" in chunk:
                lengths.append(len(chunk.split(" =")[0].split(" ")))
        for chunk in text.split("<ar> ")[1:]:
            if "</ar>" in chunk:
                words = chunk.split(" </ar>")[0].split("   ")  # words are separated by the " " token
                word_counts.append(len(words))
                word_lens += [len(w.split(" ")) for w in words]
    assert min(lengths) >= cfg.b64_len[0] and max(lengths) <= cfg.b64_len[1]
    assert cfg.arabic_words[0] <= min(word_counts) and max(word_counts) <= cfg.arabic_words[1]
    assert cfg.arabic_word_len[0] <= min(word_lens) and max(word_lens) <= cfg.arabic_word_len[1]
    # planted fractions: p_b64 = p_arabic = 0.08 of segments give each about a tenth of the tokens
    for k in ("base64_span", "arabic_span"):
        frac = float(labels[k].float().mean())
        assert 0.06 < frac < 0.2, (k, frac)


def test_brackets_close_before_the_sentence_ends(corpus, sample):
    v = corpus.vocab
    open_, close, period = v.id("("), v.id(")"), v.id(".")
    inside = corpus.span_labels(sample)["paren_span"]
    depth = (sample == open_).long().cumsum(1) - (sample == close).long().cumsum(1)
    assert int(depth.min()) >= 0 and int(depth.max()) <= 1, "brackets never nest or close unopened"
    assert not bool((inside & (sample == period)).any()), "a '.' inside an open bracket"
    after_close = sample[:, 1:][sample[:, :-1] == close]
    assert bool((after_close == period).all())
    assert float((sample == open_).float().sum()) > 100


def test_repeated_names_copy_their_surname(corpus, sample):
    v = corpus.vocab
    first = v.category_mask("first_name")
    last = v.category_mask("last_name")
    labels = corpus.span_labels(sample)
    checked = 0
    for row in sample.tolist():
        prev_name = None
        for i, tok in enumerate(row[:-2]):
            if not first[tok]:
                continue
            j = i + 1 if last[row[i + 1]] else i + 2       # skip an initial
            if j >= len(row):
                break
            name = tuple(row[i:j + 1])
            if prev_name is not None and tok == prev_name[0]:
                assert name == prev_name, f"{v.decode(name)} recurs as {v.decode(prev_name)}"
                checked += 1
            prev_name = name
    assert checked > 300
    # the induction label marks copyable surnames/initials only
    ind = labels["induction"]
    assert bool((labels["cat:last_name"] | labels["cat:base64"])[ind].all())
    assert 0.01 < float(ind.float().mean()) < 0.1


def test_entropies_order(corpus):
    uni = corpus.unigram_entropy(n=500)
    bi = corpus.bigram_entropy(n=500)
    assert 0 < bi < uni < math.log(len(corpus.vocab))
