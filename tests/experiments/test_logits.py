"""Direct logit effects against hand-set weights and against the model's own forward pass, enrichment against an
independent hypergeometric sum, and a planted category recovered where random directions find nothing."""
from __future__ import annotations

import math

import pytest
import torch

from claimgraph.experiments.features.logits import (
    direct_logit_effects,
    enrichment,
    enrichment_ratios,
    feature_logit_effects,
    residual_scale,
    top_tokens,
)
from claimgraph.experiments.substrate.corpus import get_corpus
from claimgraph.experiments.substrate.model import ToyConfig, ToyTransformer
from claimgraph.graph.errors import InvalidInput


def _hand_model() -> ToyTransformer:
    """d_model 4, d_mlp 3, 5 tokens, with W_out, the final LayerNorm weight and W_U set by hand."""
    torch.manual_seed(0)
    m = ToyTransformer(ToyConfig(n_layers=1, d_model=4, n_heads=1, d_mlp=3, n_ctx=8, d_vocab=5))
    with torch.no_grad():
        m.blocks[0].mlp.W_out.copy_(torch.tensor([[1.0, 2.0, 3.0, 6.0],
                                                  [1.0, 1.0, 1.0, 1.0],
                                                  [0.0, 0.0, 4.0, 0.0]]))
        m.ln_final.w.copy_(torch.tensor([1.0, 1.0, 2.0, 0.5]))
        W_U = torch.zeros(4, 5)
        W_U[:, :4] = torch.eye(4)
        W_U[:, 4] = 1.0
        m.W_U.copy_(W_U)
    return m.eval()


def test_hand_set_weights_give_known_effects():
    m = _hand_model()
    eff = direct_logit_effects(m, torch.eye(3), "blocks.0.mlp.hook_post")
    # row 0: W_out[0] = [1,2,3,6], mean 3 -> [-2,-1,0,3], times w -> [-2,-1,0,1.5]; token 4 sums them: -1.5
    assert torch.allclose(eff[0], torch.tensor([-2.0, -1.0, 0.0, 1.5, -1.5]))
    # row 1: a constant vector is removed entirely by the centring
    assert torch.allclose(eff[1], torch.zeros(5))
    # row 2: [0,0,4,0] -> [-1,-1,3,-1] -> [-1,-1,6,-0.5], sum 3.5
    assert torch.allclose(eff[2], torch.tensor([-1.0, -1.0, 6.0, -0.5, 3.5]))
    # the residual-stream path skips W_out; the scale divides everything
    resid = direct_logit_effects(m, torch.tensor([[1.0, 2.0, 3.0, 6.0]]), "blocks.0.hook_resid_post", scale=2.0)
    assert torch.allclose(resid[0], eff[0] / 2)
    with pytest.raises(InvalidInput, match="no direct path"):
        direct_logit_effects(m, torch.eye(3), "blocks.0.mlp.hook_pre")
    with pytest.raises(InvalidInput, match="positive"):
        direct_logit_effects(m, torch.eye(3), "blocks.0.mlp.hook_post", scale=0.0)


def _random_model(seed: int = 1) -> ToyTransformer:
    torch.manual_seed(seed)
    m = ToyTransformer(ToyConfig(n_layers=2, d_model=16, n_heads=2, d_mlp=24, n_ctx=8, d_vocab=40))
    with torch.no_grad():  # non-trivial LayerNorm weights and a residual of a realistic size
        m.ln_final.w.copy_(1.0 + 0.3 * torch.randn(16))
        m.ln_final.b.copy_(0.1 * torch.randn(16))
        m.W_E.mul_(20.0)
    return m.eval()


def _perturbed_logits(model, tokens, hook, pos, delta):
    """Logits with `delta` [d] added at `hook`, position `pos` of every row."""
    def add(act, _):
        act = act.clone()
        act[:, pos] += delta
        return act
    with torch.no_grad():
        return model.run_with_hooks(tokens, [(hook, add)])


@pytest.mark.parametrize("hook", ["blocks.1.hook_resid_post", "blocks.1.mlp.hook_post"])
def test_direct_effect_matches_the_forward_pass_for_the_last_layer(hook):
    """For the last layer the direct path is the only path. With the final residual's own norm as scale and a
    direction orthogonal to it (the one term the linearisation drops), a small step changes the logits by
    exactly step * effect."""
    m = _random_model()
    tokens = torch.tensor([[3, 7, 1, 9, 2]])
    pos = 3
    _, cache = m.run_with_cache(tokens, ["blocks.1.hook_resid_post"])
    x = cache["blocks.1.hook_resid_post"][0, pos]                                    # [d_model]
    xc = x - x.mean()
    sigma = float((xc.pow(2).mean() + 1e-5).sqrt())
    g = torch.Generator().manual_seed(0)
    u = torch.randn(m.d_mlp if "mlp" in hook else m.d_model, generator=g)
    # the direction's residual image must be orthogonal to the centred residual xc (xc is centred, so
    # xc . centre(r) = xc . r): for the MLP hook that is u . (W_out @ xc) = 0
    a = m.W_out(1).detach() @ xc if "mlp" in hook else xc                           # [d_hook]
    u = u - (u @ a) / (a @ a) * a
    eff = direct_logit_effects(m, u[None], hook, scale=sigma)[0]
    step = 1e-3
    clean = _perturbed_logits(m, tokens, hook, pos, torch.zeros_like(u))[0, pos]
    moved = _perturbed_logits(m, tokens, hook, pos, step * u)[0, pos]
    assert torch.allclose((moved - clean) / step, eff, rtol=2e-2, atol=2e-3 * eff.abs().max())
    # without the scale, the same effects times sigma: rankings unchanged
    unscaled = direct_logit_effects(m, u[None], hook)[0]
    assert torch.allclose(unscaled, eff * sigma, rtol=1e-4, atol=1e-5)
    assert torch.equal(unscaled.argsort(), eff.argsort())


def test_residual_scale_is_the_layernorm_denominator():
    m = _random_model()
    tokens = torch.randint(0, 40, (3, 8), generator=torch.Generator().manual_seed(2))
    _, cache = m.run_with_cache(tokens, ["blocks.1.hook_resid_post"])
    x = cache["blocks.1.hook_resid_post"].reshape(-1, 16).double()
    want = ((x - x.mean(1, keepdim=True)).pow(2).mean(1) + 1e-5).sqrt().mean()
    assert residual_scale(m, tokens, batch_size=2) == pytest.approx(float(want), rel=1e-5)


def _hypergeom_sf(hits: int, V: int, n: int, k: int) -> float:
    return sum(math.comb(n, i) * math.comb(V - n, k - i) for i in range(hits, min(n, k) + 1)) / math.comb(V, k)


def test_enrichment_counts_and_p_value():
    V, k = 30, 6
    mask = torch.zeros(V, dtype=torch.bool)
    mask[[2, 5, 7, 11, 13, 17, 19, 23]] = True                      # 8 of 30 tokens
    effects = torch.linspace(0, 1, V)                                # tokens 24..29 are the top 6: 0 hits
    effects[[5, 7, 13]] = torch.tensor([10.0, 9.0, 8.0])             # 3 category tokens moved to the top
    e = enrichment(effects, mask, k)
    assert e["hits"] == 3 and e["share"] == 0.5 and e["base_rate"] == pytest.approx(8 / 30)
    assert e["ratio"] == pytest.approx(0.5 / (8 / 30))
    assert e["p_value"] == pytest.approx(_hypergeom_sf(3, V, 8, k), rel=1e-9)
    none = enrichment(torch.linspace(0, 1, V), mask, k)
    assert none["hits"] == 0 and none["ratio"] == 0.0 and none["p_value"] == pytest.approx(1.0)
    with pytest.raises(InvalidInput):
        enrichment(effects, mask, 0)
    with pytest.raises(InvalidInput):
        enrichment(effects, mask[:-1], k)
    rows = torch.stack([effects, torch.linspace(0, 1, V), -effects])                      # [3, V]
    batched = enrichment_ratios(rows, mask, k)
    assert batched.tolist() == pytest.approx([enrichment(r, mask, k)["ratio"] for r in rows])
    assert batched[0] == pytest.approx(0.5 / (8 / 30)) and batched[1] == 0.0


def test_top_tokens_orders_both_ends():
    eff = torch.tensor([0.5, -2.0, 3.0, 0.0, -1.0])
    out = top_tokens(eff, lambda ids: [f"t{int(i)}" for i in ids], 2)
    assert out["top"] == [("t2", 3.0), ("t0", 0.5)]
    assert out["bottom"] == [("t1", -2.0), ("t4", -1.0)]


def _planted_unembedding():
    """A toy model over the synthetic vocabulary whose unembedding has a planted unit direction p raising the
    base64 tokens on top of random columns; returns (model, base64 mask, p, the generator, to draw on from)."""
    vocab = get_corpus("synthetic:default").vocab
    V = len(vocab)
    torch.manual_seed(3)
    m = ToyTransformer(ToyConfig(n_layers=1, d_model=32, n_heads=2, d_mlp=64, n_ctx=8, d_vocab=V), vocab).eval()
    mask = vocab.category_mask("base64")
    g = torch.Generator().manual_seed(4)
    p = torch.randn(32, generator=g)
    p = p - p.mean()
    p = p / p.norm()
    with torch.no_grad():
        m.W_U.copy_(torch.randn(32, V, generator=g) * 0.02 + 0.05 * p[:, None] * mask[None].float())
    return m, mask, p, g


def test_planted_category_is_enriched_and_random_directions_are_not():
    """A toy model over the synthetic vocabulary whose unembedding has a planted direction p that raises the
    base64 tokens (on top of random columns): p comes out enriched; random directions of the same norm do not."""
    m, mask, p, g = _planted_unembedding()
    top_k = 20
    planted = enrichment(direct_logit_effects(m, p[None], "hook_embed")[0], mask, top_k)
    assert planted["hits"] >= 18 and planted["ratio"] > 4 and planted["p_value"] < 1e-10
    rand = torch.randn(500, 32, generator=g)                                         # [500, d_model], norm 1
    rand = rand / rand.norm(dim=1, keepdim=True)
    effects = direct_logit_effects(m, rand, "hook_embed")                            # [500, V]
    ratios = torch.tensor([enrichment(e, mask, top_k)["ratio"] for e in effects])
    # a random direction favours whichever tokens its projection picks: on average chance level, and it
    # projects onto the planted direction by ~1/sqrt(32), so rarely reaches the planted ratio
    assert abs(float(ratios.mean()) - 1.0) < 0.25
    assert float((ratios >= planted["ratio"]).float().mean()) < 0.02


def test_feature_logit_effects_reads_decoder_rows():
    from claimgraph.experiments.sae import SaeRecipe
    from claimgraph.experiments.sae.relu import ReluSAE

    m = _hand_model()
    sae = ReluSAE(SaeRecipe(d_sae=4).config(3, 0))
    with torch.no_grad():
        sae.W_dec.copy_(torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.5, 0.0, 0.5]]))
    eff = feature_logit_effects(m, sae, "blocks.0.mlp.hook_post", [1, 3])
    direct = direct_logit_effects(m, torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.0, 0.5]]), "blocks.0.mlp.hook_post")
    assert torch.allclose(eff, direct)
    with pytest.raises(InvalidInput, match="out of range"):
        feature_logit_effects(m, sae, "blocks.0.mlp.hook_post", [4])


def test_direct_effect_matches_a_hugging_face_gpt_neox(tmp_path):
    """The same check through a tiny random GPT-NeoX saved to a temp dir (its final LayerNorm, W_U and MLP
    output projection read through the hooked interface)."""
    transformers = pytest.importorskip("transformers")
    from claimgraph.experiments.substrate.load import load_model

    torch.manual_seed(0)
    cfg = transformers.GPTNeoXConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=24, max_position_embeddings=16)
    hf = transformers.GPTNeoXForCausalLM(cfg)
    with torch.no_grad():
        hf.gpt_neox.final_layer_norm.weight.add_(0.3 * torch.randn(16))
    hf.save_pretrained(tmp_path / "neox")
    m = load_model(f"hf:{tmp_path / 'neox'}", progress=False)
    tokens = torch.tensor([[3, 7, 1, 9, 2]])
    pos = 2
    _, cache = m.run_with_cache(tokens, ["blocks.1.hook_resid_post"])
    xc = cache["blocks.1.hook_resid_post"][0, pos]
    xc = xc - xc.mean()
    eps = m.hf.gpt_neox.final_layer_norm.eps
    sigma = float((xc.pow(2).mean() + eps).sqrt())
    u = torch.randn(24, generator=torch.Generator().manual_seed(1))
    a = m.W_out(1).detach() @ xc
    u = u - (u @ a) / (a @ a) * a
    eff = direct_logit_effects(m, u[None], "blocks.1.mlp.hook_post", scale=sigma)[0]
    step = 1e-3
    clean = _perturbed_logits(m, tokens, "blocks.1.mlp.hook_post", pos, torch.zeros_like(u))[0, pos]
    moved = _perturbed_logits(m, tokens, "blocks.1.mlp.hook_post", pos, step * u)[0, pos]
    assert torch.allclose((moved - clean) / step, eff, rtol=2e-2, atol=2e-3 * eff.abs().max())


def _planted_model_and_sae(all_planted: bool):
    """The planted-unembedding toy model above and an SAE at hook_embed with 64 random decoder rows; latent 0's
    row is the planted direction p. With `all_planted`, every row carries p as strongly (p plus a random part)."""
    from claimgraph.experiments.sae import SaeRecipe
    from claimgraph.experiments.sae.relu import ReluSAE

    m, mask, p, g = _planted_unembedding()
    sae = ReluSAE(SaeRecipe(d_sae=64).config(32, 0))
    rows = torch.randn(64, 32, generator=g)
    rows = rows / rows.norm(dim=1, keepdim=True)
    rows[0] = p
    if all_planted:
        rows = p + 0.7 * rows
        rows[0] = p
    with torch.no_grad():
        sae.W_dec.copy_(rows)
    return m, sae, mask


@pytest.mark.parametrize("all_planted", [False, True])
def test_rank_among_live_latents_planted(all_planted):
    """Positive: a latent whose decoder row is the planted direction ranks above every other latent of its SAE
    and above random directions. Negative: when every latent of the SAE raises the category as much, the same
    latent still beats random directions (z would pass) but ranks like a typical latent among its own."""
    from claimgraph.experiments.features.logits import latent_category_scores, rank_among

    m, sae, mask = _planted_model_and_sae(all_planted)
    cmo, ratio = latent_category_scores(m, sae, "hook_embed", mask, 20, chunk=16)
    eff = feature_logit_effects(m, sae, "hook_embed", list(range(64)))
    assert torch.allclose(cmo, eff[:, mask].mean(1) - eff[:, ~mask].mean(1), atol=1e-6)
    assert torch.allclose(ratio, enrichment_ratios(eff, mask, 20))
    rand = torch.randn(200, 32, generator=torch.Generator().manual_seed(9))
    rand = rand / rand.norm(dim=1, keepdim=True)
    r_eff = direct_logit_effects(m, rand, "hook_embed")
    r_cmo = r_eff[:, mask].mean(1) - r_eff[:, ~mask].mean(1)
    z = float((cmo[0] - r_cmo.mean()) / r_cmo.std())
    assert z > 4 and rank_among(float(cmo[0]), r_cmo) == 1.0
    pct = rank_among(float(cmo[0]), cmo[1:])
    if not all_planted:
        assert pct == 1.0 and rank_among(float(ratio[0]), ratio[1:]) > 0.95
    else:
        assert pct < 0.9
    # each random-row latent ranked among the others: about uniform, so few reach the top 5%
    ranks = torch.tensor([rank_among(float(cmo[j]), torch.cat([cmo[1:j], cmo[j + 1:]])) for j in range(1, 64)])
    assert float((ranks > 0.95).float().mean()) < 0.1 and 0.35 < float(ranks.mean()) < 0.65
