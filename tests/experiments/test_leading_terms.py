"""Gradient leading terms: corpus statistics against hand and loop computations, the derived coefficients against
autograd from zero initialisation, the cosine routine against numpy, and wrong bases scoring low."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from claimgraph.experiments.kinds.leading_terms.corpus import PRESETS, TopicBigramCorpus, load_sequences
from claimgraph.experiments.kinds.leading_terms.model import AttnOnlyOneHot, mean_loss, train_sgd
from claimgraph.experiments.kinds.leading_terms.terms import (
    basis_associations,
    coefficients,
    corpus_bases,
    norm_ratio,
    project_out,
    top_associations,
    trace_cosine,
)
from claimgraph.graph.errors import InvalidInput


def split(tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return tokens[:, :-1], tokens[:, 1:]


def reference_bases(inputs: np.ndarray, targets: np.ndarray, V: int) -> dict[str, np.ndarray]:
    """The module docstring's definitions, written out position by position (slow, independent)."""
    N, T = inputs.shape
    B, Phi, Q, q = (np.zeros((V, V)), np.zeros((V, V)), np.zeros((V, V)), np.zeros(T))
    for n in range(N):
        for t in range(T):
            r = -np.full(V, 1.0 / V)
            r[targets[n, t]] += 1.0
            B[inputs[n, t]] += r
            ax = np.zeros(V)
            for j in range(t + 1):
                ax[inputs[n, j]] += 1.0 / (t + 1)
            Phi += np.outer(r, ax)
    B /= N * T
    Phi /= N * T
    Sigma = B.T @ B
    M = Sigma @ Phi
    for n in range(N):
        for t in range(T):
            r = -np.full(V, 1.0 / V)
            r[targets[n, t]] += 1.0
            u = np.array([r @ M[:, inputs[n, j]] for j in range(t + 1)])     # U[t, j] = r_t M x_j^T
            d = (u - u.mean()) / (t + 1)                                     # A[t, j] (U - sum_j' A U)
            for j in range(t + 1):
                Q[inputs[n, t], inputs[n, j]] += d[j]
                q[t - j] += d[j]
    return {"B": B, "Phi": Phi, "Sigma": Sigma, "Q": Q / (N * T), "q": q / (N * T)}


# ------------------------------------------------------------------------------------------ corpus statistics

def test_bases_on_a_hand_made_cycle():
    """0 -> 1 -> 2 -> 0 ... : B = (1/3)(P - 1/3) with P the cyclic shift; Phi worked out by hand."""
    x, y = split(torch.tensor([[0, 1, 2, 0, 1, 2, 0]]))
    b = corpus_bases(x, y, 3)
    P = np.roll(np.eye(3), 1, axis=1)                                        # P[i, i+1] = 1
    np.testing.assert_allclose(b.bigram.numpy(), (P - 1 / 3) / 3, atol=1e-15)
    # prefix averages (A X)_t for t = 0..5 and the next token y_t, by hand:
    ax = np.array([[1, 0, 0], [1 / 2, 1 / 2, 0], [1 / 3, 1 / 3, 1 / 3],
                   [1 / 2, 1 / 4, 1 / 4], [2 / 5, 2 / 5, 1 / 5], [1 / 3, 1 / 3, 1 / 3]])
    C = np.stack([ax[2] + ax[5], ax[0] + ax[3], ax[1] + ax[4]])              # rows: next token 0, 1, 2
    np.testing.assert_allclose(b.context.numpy(), (C - C.sum(0) / 3) / 6, atol=1e-15)
    np.testing.assert_allclose(b.interchange.numpy(), ((P - 1 / 3) / 3).T @ ((P - 1 / 3) / 3), atol=1e-15)
    assert b.n_positions == 6 and b.token_counts.tolist() == [2, 2, 2]


def test_bases_match_position_by_position_reference():
    seqs = load_sequences("builtin:tiny", 6, 8, seed=3)
    x, y = split(seqs.tokens)
    V = len(seqs.vocab)
    b = corpus_bases(x, y, V, chunk=4)                                       # chunking across a remainder
    ref = reference_bases(x.numpy(), y.numpy(), V)
    for got, key in ((b.bigram, "B"), (b.context, "Phi"), (b.interchange, "Sigma"), (b.attention, "Q"),
                     (b.position, "q")):
        np.testing.assert_allclose(got.numpy(), ref[key], rtol=1e-10, atol=1e-15, err_msg=key)
    assert float(b.attention.abs().sum()) > 0, "the attention term must not be trivially zero"
    # rows of B sum to zero (the uniform prediction is subtracted); so do the columns of Phi
    assert torch.allclose(b.bigram.sum(1), torch.zeros(V, dtype=torch.float64), atol=1e-15)
    assert torch.allclose(b.context.sum(0), torch.zeros(V, dtype=torch.float64), atol=1e-15)


# --------------------------------------------------------------------------------- coefficients vs autograd

def _trained(x, y, V, *, lr, steps, positional=True):
    model = AttnOnlyOneHot(V, x.shape[1], positional=positional, dtype=torch.float64)
    train_sgd(model, x, y, lr=lr, steps=steps, batch_size=None, seed=0)
    return model


def test_coefficients_match_autograd_from_zero_init():
    """Full-batch SGD from zero: learned / (c(s) * term) -> 1 and the relative error shrinks linearly in lr."""
    seqs = load_sequences("builtin:tiny", 32, 9, seed=1)
    x, y = split(seqs.tokens)
    V = len(seqs.vocab)
    terms = corpus_bases(x, y, V).terms()
    for s in (3, 5):
        errors = []
        for lr in (0.2, 0.1, 0.05):
            model = _trained(x, y, V, lr=lr, steps=s)
            c = coefficients(s, lr)
            err = {}
            for name, w in model.named_terms().items():
                pred = c[name] * terms[name]
                err[name] = float((w.detach() - pred).norm() / pred.norm())
                assert trace_cosine(w, terms[name]) > 0.999, (s, lr, name)
            errors.append(err)
        for name in errors[0]:
            e = [row[name] for row in errors]
            assert e[2] < 0.01, f"{name} at s={s}: relative error {e[2]:.3g} at lr=0.05"
            # first-order convergence: halving lr halves the error (a wrong constant would leave it flat)
            assert 0.4 < e[1] / e[0] < 0.6 and 0.4 < e[2] / e[1] < 0.6, f"{name} s={s}: errors {e}"


def test_first_moves_follow_the_powers_of_eta():
    """Update 1 moves only W_O (exactly lr*B); W_V first moves at update 2; W_QK and pos at update 3."""
    seqs = load_sequences("builtin:tiny", 16, 9, seed=2)
    x, y = split(seqs.tokens)
    V = len(seqs.vocab)
    B = corpus_bases(x, y, V).bigram
    m1 = _trained(x, y, V, lr=0.5, steps=1)
    torch.testing.assert_close(m1.W_O.detach(), 0.5 * B, rtol=0, atol=1e-14)
    assert m1.W_V.abs().max() == 0 and m1.W_QK.abs().max() == 0 and m1.pos.abs().max() == 0
    m2 = _trained(x, y, V, lr=0.5, steps=2)
    assert m2.W_V.abs().max() > 0 and m2.W_QK.abs().max() == 0 and m2.pos.abs().max() == 0
    m3 = _trained(x, y, V, lr=0.5, steps=3)
    assert m3.W_QK.abs().max() > 0 and m3.pos.abs().max() > 0
    assert coefficients(1, 0.5)["value"] == 0 and coefficients(2, 0.5)["attention"] == 0
    assert coefficients(3, 1.0)["attention"] == 2.0 and coefficients(4, 1.0)["attention"] == 11.0


# ----------------------------------------------------------------------------- cosine routine and wrong bases

def test_trace_cosine_matches_numpy_and_handles_zero():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(4, 4)), rng.normal(size=(4, 4))
    expected = np.trace(a.T @ b) / (np.linalg.norm(a) * np.linalg.norm(b))
    assert trace_cosine(torch.tensor(a), torch.tensor(b)) == pytest.approx(expected, abs=1e-12)
    assert trace_cosine(torch.tensor(a), torch.tensor(2.5 * a)) == pytest.approx(1.0)
    assert trace_cosine(torch.tensor(a), torch.tensor(-a)) == pytest.approx(-1.0)
    assert trace_cosine(torch.zeros(3, 3), torch.tensor(b[:3, :3])) is None
    assert norm_ratio(torch.tensor(3 * a), torch.tensor(a), 3.0) == pytest.approx(1.0)
    assert norm_ratio(torch.tensor(a), torch.tensor(a), 0.0) is None


def test_job_measure_matches_independent_numpy_on_a_four_token_corpus():
    """The job's checkpoint row (cosines, ratios) against numpy by hand, after a few SGD steps on 4 tokens."""
    from claimgraph.experiments.kinds.leading_terms.run import measure

    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(4, (5, 7), generator=gen)
    x, y = split(tokens)
    model = _trained(x, y, 4, lr=0.3, steps=4)
    terms = corpus_bases(x, y, 4).terms()
    row = measure(model, terms, coefficients(4, 0.3), 4, 1.0, 1.0)
    ref = reference_bases(x.numpy(), y.numpy(), 4)
    learned = {"output": model.W_O, "value": model.W_V, "attention": model.W_QK, "position": model.pos}
    hand = {"output": ref["B"], "value": ref["Phi"].T @ ref["B"].T, "attention": ref["Q"], "position": ref["q"]}
    c = {"output": 4 * 0.3, "value": 0.3 ** 2 * 4 * 3 / 2, "attention": 0.3 ** 4 * 11, "position": 0.3 ** 4 * 11}
    for name in hand:
        w = learned[name].detach().numpy()
        cos = float((w * hand[name]).sum() / (np.linalg.norm(w) * np.linalg.norm(hand[name])))
        assert row[f"cos_{name}"] == pytest.approx(cos, abs=1e-10), name
        assert row[f"ratio_{name}"] == pytest.approx(np.linalg.norm(w) / (c[name] * np.linalg.norm(hand[name])),
                                                     rel=1e-10), name
        assert cos > 0.99, f"{name}: the leading term should describe 4 small steps, cos {cos}"


def test_wrong_bases_score_low():
    seqs = load_sequences("builtin:default", 256, 17, seed=0)
    x, y = split(seqs.tokens)
    V = len(seqs.vocab)
    bases = corpus_bases(x, y, V)
    terms = bases.terms()
    model = AttnOnlyOneHot(V, x.shape[1])
    train_sgd(model, x, y, lr=1.0, steps=8, batch_size=None, seed=0)
    gen = torch.Generator().manual_seed(0)
    for name, w in (("output", model.W_O), ("value", model.W_V), ("attention", model.W_QK)):
        right = trace_cosine(w, terms[name])
        assert right > 0.99, f"{name}: right basis cos {right}"
        rand = trace_cosine(w, torch.randn(V, V, generator=gen, dtype=torch.float64))
        assert abs(rand) < 0.2, f"{name}: random basis cos {rand}"
        transposed = trace_cosine(w, terms[name].T)
        assert transposed < right - 0.3, f"{name}: transposed basis cos {transposed} vs {right}"
    # bases swapped between tensors are wrong too
    assert trace_cosine(model.W_O, terms["value"]) < 0.5
    assert trace_cosine(model.W_V, terms["output"]) < 0.5


def test_project_out_removes_exactly_one_direction():
    gen = torch.Generator().manual_seed(1)
    w, d = torch.randn(6, 6, generator=gen), torch.randn(6, 6, generator=gen, dtype=torch.float64)
    p = project_out(w, d)
    assert p.dtype == w.dtype
    assert abs(float((p.double() * d).sum())) < 1e-5
    torch.testing.assert_close(project_out(p, d), p, atol=1e-6, rtol=0)
    other = torch.randn(6, 6, generator=gen, dtype=torch.float64)
    other -= (other * d).sum() / (d * d).sum() * d                          # orthogonal to d
    torch.testing.assert_close(project_out(other.float(), d).double(), other, atol=1e-5, rtol=0)


# --------------------------------------------------------------------------- corpus, associations, training

def test_builtin_corpus_has_its_planted_bigrams_and_is_deterministic():
    corpus = TopicBigramCorpus(PRESETS["default"])
    a = corpus.sample(400, 20, seed=5)
    assert torch.equal(a, corpus.sample(400, 20, seed=5)) and not torch.equal(a, corpus.sample(400, 20, seed=6))
    V = len(corpus.vocab)
    x, y = split(a)
    pair = torch.bincount((x * V + y).reshape(-1), minlength=V * V).view(V, V).double()
    cat = corpus.category
    for i in range(V):
        for j in range(V):
            if pair[i, j] > 0:
                assert corpus.transition[:, i, j].max() > 0, f"{corpus.vocab[i]} -> {corpus.vocab[j]} impossible"
    adj = [i for i in range(V) if cat[i] == "adj"]
    assert all(cat[j] == "noun" for i in adj for j in range(V) if pair[i, j] > 0), "adj -> noun always"


def test_associations_read_the_planted_structure():
    seqs = load_sequences("builtin:default", 512, 17, seed=0)
    x, y = split(seqs.tokens)
    bases = corpus_bases(x, y, len(seqs.vocab))
    assoc = basis_associations(bases, seqs.vocab, n_frequent=10, k=5)
    assert len(assoc["tokens"]) == 10
    assert set(assoc) == {"tokens", "bigram", "interchangeability", "context", "context_lift"}
    # '.' is always followed by a determiner; a noun is followed by '.' or a verb of its own topic
    # (positive entries: the next token is more likely than uniform)
    assert all(t.startswith("det_") for t, v in assoc["bigram"]["."] if v > 0)
    assert sum(v > 0 for _, v in assoc["bigram"]["."]) == 3
    for tok in assoc["tokens"]:
        if tok.startswith("noun"):
            topic = tok[4]
            assert all(t == "." or (t.startswith("verb") and t[4] == topic)
                       for t, v in assoc["bigram"][tok][:3])
            # interchangeable with nouns (they follow the same tokens), never with itself
            assert all(t.startswith("noun") and t != tok for t, _ in assoc["interchangeability"][tok])
            # in context, a noun raises later content words of its own topic only (beyond their base rates)
            content = [t for t, _ in assoc["context_lift"][tok] if t[:3] in ("adj", "nou", "ver")]
            assert len(content) >= 3 and all(t[-3] == topic for t in content), assoc["context_lift"][tok]
    top = top_associations(torch.tensor([[0.0, 2.0, 1.0], [5.0, 0.0, 1.0], [0.0, 0.0, 0.0]]), ["a", "b", "c"],
                           [0, 1], 2, exclude_self=True)
    assert top == {"a": [["b", 2.0], ["c", 1.0]], "b": [["a", 5.0], ["c", 1.0]]}


def test_sgd_lowers_the_loss_and_minibatches_are_seeded():
    seqs = load_sequences("builtin:tiny", 128, 9, seed=0)
    x, y = split(seqs.tokens)
    V = len(seqs.vocab)
    models = []
    for _ in range(2):
        m = AttnOnlyOneHot(V, 8)
        assert mean_loss(m, x, y) == pytest.approx(math.log(V), abs=1e-5)
        train_sgd(m, x, y, lr=2.0, steps=50, batch_size=16, seed=7)
        models.append(m)
    assert mean_loss(models[0], x, y) < math.log(V) - 0.5
    torch.testing.assert_close(models[0].W_QK, models[1].W_QK, rtol=0, atol=0)


def test_data_references():
    with pytest.raises(InvalidInput, match="builtin:default"):
        load_sequences("builtin:nope", 2, 5, 0)
    with pytest.raises(InvalidInput, match="not understood"):
        load_sequences("text:/tmp/x", 2, 5, 0)
    pytest.importorskip("claimgraph.experiments.substrate.corpus")
    s = load_sequences("synthetic:tiny", 4, 10, 0)
    assert s.tokens.shape == (4, 10) and int(s.tokens.max()) < len(s.vocab)
    with pytest.raises(InvalidInput, match="seq_len"):
        load_sequences("synthetic:tiny", 2, 10_000, 0)
