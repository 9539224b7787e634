"""The pieces of the gradient-decomposition experiment: the majority task, the myopic and split-weight
transformer, the three gradient parts, Adam influence bookkeeping and the probes. Tiny float64 models so that
exact identities can be asserted to numerical precision."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from claimgraph.experiments.kinds.gradient_decomposition.decomposition import (  # noqa: E402
    decompose,
    decompose_literal,
    flatten,
    precache_through,
)
from claimgraph.experiments.kinds.gradient_decomposition.influence import (  # noqa: E402
    AdamInfluence,
    ProbeRisk,
    fit_ridge,
    flat_params,
    pearson,
    set_flat_grads,
)
from claimgraph.experiments.kinds.gradient_decomposition.majority import MajorityConfig, sample  # noqa: E402
from claimgraph.experiments.kinds.gradient_decomposition.transformer import (  # noqa: E402
    Transformer,
    TransformerConfig,
    token_losses,
)

TASK = MajorityConfig(n_vocab=3, n_in=6, n_out=4)
POSITIONS = TASK.useless_positions()


def tiny(split_at: int | None = None, seed: int = 0, n_layers: int = 2) -> Transformer:
    """A float64 model with a large init, so cross-position gradients are far from zero."""
    torch.manual_seed(seed)
    cfg = TransformerConfig(d_vocab=TASK.d_vocab, n_ctx=TASK.n_ctx, d_model=8, n_heads=2, d_mlp=16,
                            n_layers=n_layers, split_at=split_at, init_std=0.5)
    return Transformer(cfg).double()


@pytest.fixture(scope="module")
def batch():
    b = sample(TASK, 6, seed=3)
    return b.tokens[:, :-1], b.tokens[:, 1:]


# -- the task -------------------------------------------------------------------------------------------

def test_majority_sequences_follow_the_definition():
    b = sample(TASK, 200, seed=0)
    V, n_in = TASK.n_vocab, TASK.n_in
    assert b.tokens.shape == (200, TASK.n_ctx + 1)
    assert (b.tokens[:, 0] == TASK.bos).all() and (b.tokens[:, 1:] < V).all()
    for seq, feats, legal in zip(b.tokens.tolist(), b.features, b.legal):   # reference, one sequence at a time
        counts = [0] * V
        for p in range(TASK.n_ctx):
            if p > 0:
                counts[seq[p]] += 1
            best = max(counts)
            is_max = [float(c == best) for c in counts]
            assert feats[p].tolist() == is_max, f"feature at position {p} of {seq}"
            nxt = seq[p + 1]
            if p >= n_in:   # the next token is an output: a current majority token
                assert is_max[nxt] == 1.0, f"output {nxt} at position {p + 1} is not a majority in {seq}"
                assert legal[p].tolist() == [bool(x) for x in is_max]
            else:
                assert legal[p].all()


def test_majority_sampling_is_deterministic_and_breaks_ties_both_ways():
    a, b = sample(TASK, 500, seed=7), sample(TASK, 500, seed=7)
    assert torch.equal(a.tokens, b.tokens)
    assert not torch.equal(a.tokens, sample(TASK, 500, seed=8).tokens)
    # among sequences whose inputs tie between tokens 0 and 1 only, both win sometimes
    counts = torch.nn.functional.one_hot(a.tokens[:, 1: TASK.n_in + 1], 3).sum(1)
    tie01 = (counts[:, 0] == counts[:, 1]) & (counts[:, 0] > counts[:, 2])
    firsts = set(a.tokens[tie01, TASK.n_in + 1].tolist())
    assert tie01.sum() > 10 and firsts == {0, 1}


# -- the model ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("split_at", [None, TASK.split_at])
def test_myopic_and_detached_forward_values_equal_normal(batch, split_at):
    tok, _ = batch
    m = tiny(split_at)
    ref = m(tok)
    assert torch.equal(m(tok, "myopic"), ref)
    assert torch.equal(m(tok, detach=(1, POSITIONS)), ref)
    assert torch.equal(m.run_from(m.resid(tok, 1), 1), ref)


def _jacobian_norms(m: Transformer, tok, tgt, mode: str) -> torch.Tensor:
    """|d L_j / d h_0[:, i]| for every target position j and source position i: [T, T]."""
    h0 = m.embed(tok).detach().requires_grad_(True)
    losses = token_losses(m.run_from(h0, 0, mode), tgt).sum(0)                       # [T]
    rows = [torch.autograd.grad(losses[j], h0, retain_graph=True)[0] for j in range(tok.shape[1])]
    return torch.stack([r.abs().sum((0, 2)) for r in rows])                           # [T(j), T(i)]


@pytest.mark.parametrize("split_at", [None, TASK.split_at])
def test_myopic_blocks_exactly_the_cross_position_paths(batch, split_at):
    tok, tgt = batch
    m = tiny(split_at)
    J_my = _jacobian_norms(m, tok, tgt, "myopic")
    J = _jacobian_norms(m, tok, tgt, "normal")
    T = tok.shape[1]
    off = ~torch.eye(T, dtype=torch.bool)
    assert (J_my[off] == 0).all(), "a loss reaches another position's stream in myopic mode"
    assert (J_my.diagonal() > 0).all()
    lower = torch.ones(T, T).tril(-1).bool()                                          # i < j
    assert (J[lower] > 1e-6).all(), "the normal model should send gradient to earlier positions"
    assert (J[~torch.ones(T, T).tril().bool()] == 0).all(), "causal: no gradient to later positions"
    # the own-position paths are kept intact: myopic d L_i / d h_0,i equals the normal model's
    h0 = m.embed(tok).detach().requires_grad_(True)
    g_my = torch.autograd.grad(token_losses(m.run_from(h0, 0, "myopic"), tgt).sum(), h0)[0]
    for i in range(T):
        g_i = torch.autograd.grad(token_losses(m.run_from(h0, 0), tgt)[:, i].sum(), h0)[0]
        torch.testing.assert_close(g_my[:, i], g_i[:, i], rtol=1e-10, atol=1e-12)


def test_split_weights_separate_the_segments(batch):
    tok, _ = batch
    m = tiny()
    s = m.split_copy(TASK.split_at)
    torch.testing.assert_close(s(tok), m(tok), rtol=0, atol=1e-12)   # both weight sets start equal
    with torch.no_grad():
        for name, p in s.named_parameters():
            if name != "W_pos":
                p[1].add_(torch.randn_like(p[1]))                    # move only the output segment's weights
    out = s(tok)
    split = TASK.split_at
    torch.testing.assert_close(out[:, :split], m(tok)[:, :split], rtol=0, atol=1e-12)
    assert (out[:, split:] - m(tok)[:, split:]).abs().max() > 1e-3


# -- the decomposition ----------------------------------------------------------------------------------

@pytest.mark.parametrize("layer", [0, 1, 2])
def test_parts_match_the_definitions_and_sum_to_the_gradient(batch, layer):
    tok, tgt = batch
    m = tiny()
    groups = [[i] for i in POSITIONS]
    fast = decompose(m, tok, tgt, layer, groups)
    lit = decompose_literal(m, tok, tgt, layer, groups)
    plain = flatten(torch.autograd.grad(token_losses(m(tok), tgt).mean(), list(m.parameters())), m.parameters())
    torch.testing.assert_close(fast.full, plain, rtol=1e-12, atol=1e-14)
    for name in ("direct", "precache", "shared"):
        torch.testing.assert_close(getattr(fast, name), getattr(lit, name), rtol=1e-9, atol=1e-12)
    for j, i in enumerate(POSITIONS):
        independent = precache_through(m, tok, tgt, layer, i)           # other losses through (layer, i) only
        torch.testing.assert_close(lit.precache[j], independent, rtol=1e-9, atol=1e-12)
        total = lit.direct[j] + independent + lit.shared[j]
        torch.testing.assert_close(total, plain, rtol=1e-9, atol=1e-12)
    if layer == 2:   # nothing attends to the final stream: no pre-caching there
        assert fast.precache.abs().max() < 1e-15
    else:
        assert fast.precache.abs().max() > 1e-4 and fast.direct.abs().max() > 1e-4


def test_set_parts_are_per_position_sums_and_shared_is_the_joint_stop_gradient(batch):
    tok, tgt = batch
    m = tiny()
    per = decompose(m, tok, tgt, 1, [[i] for i in POSITIONS])
    joint = decompose(m, tok, tgt, 1, [POSITIONS])
    torch.testing.assert_close(joint.direct[0], per.direct.sum(0), rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(joint.precache[0], per.precache.sum(0), rtol=1e-9, atol=1e-12)
    params = list(m.parameters())
    sg_all = flatten(torch.autograd.grad(token_losses(m(tok, detach=(1, POSITIONS)), tgt).mean(), params), params)
    torch.testing.assert_close(joint.shared[0], sg_all, rtol=1e-9, atol=1e-12)
    # detaching the whole set at once is not the same as summing one-position stop-gradients
    assert (joint.shared[0] - per.shared.sum(0)).abs().max() > 1e-3


# -- Adam influence bookkeeping -------------------------------------------------------------------------

def test_part_updates_sum_to_the_real_adam_update():
    m = tiny()
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    groups = [[i] for i in POSITIONS[:3]]
    tracker = AdamInfluence(opt, len(groups))
    grad_R = torch.randn(len(groups), flat_params(m).numel(), dtype=torch.float64)
    for step in range(4):
        b = sample(TASK, 8, seed=100 + step)
        parts = decompose(m, b.tokens[:, :-1], b.tokens[:, 1:], 1, groups)
        before = flat_params(m)
        opt.zero_grad()
        set_flat_grads(m, parts.full)
        opt.step()
        delta = flat_params(m) - before
        out = tracker.after_step(parts, grad_R, delta)
        assert out.sum_error < 1e-10, f"step {step}: part updates miss Adam's update by {out.sum_error}"
        part_updates = tracker.prev[0]                                  # [3, n_groups, P] this step's updates
        for g in range(len(groups)):
            torch.testing.assert_close(part_updates[:, g].sum(0), delta, rtol=1e-9, atol=1e-13)
        torch.testing.assert_close(out.influence.sum(0), out.total, rtol=1e-8, atol=1e-12)
        m_opt = torch.cat([opt.state[p]["exp_avg"].reshape(-1) for p in m.parameters()])
        for g in range(len(groups)):
            torch.testing.assert_close(tracker.m[:, g].sum(0), m_opt, rtol=1e-10, atol=1e-14)
    assert (tracker.m.abs().amax(-1) > 0).all()


def test_influence_integrates_to_the_change_of_the_risk():
    """Summed over training, the parts' influences add up to R(start) - R(end) (trapezoid rule)."""
    final, m = tiny(seed=1), tiny(seed=0)
    probe_tokens = sample(TASK, 32, seed=5).tokens[:, :-1]
    W = torch.randn(len(POSITIONS), 8, TASK.n_vocab, dtype=torch.float64)
    risk = ProbeRisk(W, probe_tokens, final, 1, POSITIONS, [POSITIONS])
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    tracker = AdamInfluence(opt, 1)
    r0, total = float(risk.values(m)[0]), 0.0
    for step in range(40):
        b = sample(TASK, 8, seed=200 + step)
        _, grad_R = risk.gradients(m)
        parts = decompose(m, b.tokens[:, :-1], b.tokens[:, 1:], 1, [POSITIONS])
        before = flat_params(m)
        opt.zero_grad()
        set_flat_grads(m, parts.full)
        opt.step()
        total += float(tracker.after_step(parts, grad_R, flat_params(m) - before).influence.sum())
    total += float(tracker.finish(risk.gradients(m)[1]).influence.sum())
    change = r0 - float(risk.values(m)[0])
    assert abs(change) > 1e-3
    assert total == pytest.approx(change, rel=0.01)


# -- probes and risk ------------------------------------------------------------------------------------

def test_ridge_recovers_a_planted_linear_map_and_pearson_matches_numpy():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(2, 2000, 5, generator=g, dtype=torch.float64)
    W = torch.randn(2, 5, 3, generator=g, dtype=torch.float64)
    Y = X @ W + 0.7 + 0.01 * torch.randn(2, 2000, 3, generator=g, dtype=torch.float64)
    probe = fit_ridge(X, Y, alpha=1e-3)
    torch.testing.assert_close(probe.W, W, atol=2e-3, rtol=0)
    torch.testing.assert_close(probe.b, torch.full((2, 3), 0.7, dtype=torch.float64), atol=2e-3, rtol=0)
    import numpy as np

    r = pearson(probe(X), Y)
    ref = np.corrcoef(probe(X)[1, :, 2].numpy(), Y[1, :, 2].numpy())[0, 1]
    assert float(r[1, 2]) == pytest.approx(ref, abs=1e-12)
    assert torch.isnan(pearson(X[..., :1], torch.ones(2, 2000, 1, dtype=torch.float64))).all()


def test_risk_gradient_matches_plain_autograd():
    final, m = tiny(seed=1), tiny(seed=0)
    tokens = sample(TASK, 16, seed=9).tokens[:, :-1]
    W = torch.randn(len(POSITIONS), 8, TASK.n_vocab, dtype=torch.float64)
    groups = [[1, 2], [POSITIONS[-1]]]
    risk = ProbeRisk(W, tokens, final, 1, POSITIONS, groups)
    values, grads = risk.gradients(m)
    h_final = final.resid_streams(tokens)[1]
    params = list(m.parameters())
    def centred(z):
        return z - z.mean(0, keepdim=True)   # the risk reads the probe output centred over the batch

    for g, group in enumerate(groups):
        h = m.resid(tokens, 1)
        R = torch.stack([(centred(h[:, i] @ W[POSITIONS.index(i)])
                          - centred(h_final[:, i] @ W[POSITIONS.index(i)])).square().mean()
                         for i in group]).mean()
        assert float(values[g]) == pytest.approx(float(R.detach()), rel=1e-12)
        ref = flatten(torch.autograd.grad(R, params, allow_unused=True), params)
        torch.testing.assert_close(grads[g], ref, rtol=1e-10, atol=1e-14)
    assert grads.abs().max() > 0
    # risk is zero for the final model itself
    assert risk.values(final).abs().max() < 1e-20
    # and blind to an offset of the stream that is the same for every sequence (the position embedding)
    with torch.no_grad():
        shifted = tiny(seed=1)
        shifted.W_pos.add_(torch.randn_like(shifted.W_pos))
    risk0 = ProbeRisk(W, tokens, final, 0, POSITIONS, groups)   # at the embeddings an offset is exactly that
    assert risk0.values(shifted).abs().max() < 1e-20
