"""The real-model pre-caching result (`ablation` mode "precaching") on planted truth, with no training: a toy
transformer whose weights are set by hand so that one residual direction is read only by its own position's
unembedding (it matters for the next token only) and another only through attention by the positions after it
(it matters for later tokens), and a hand-set SAE whose latents decode to one or the other. The registered
criterion `code_minus_prose_log_excess > 0 band 0.1` must come out supported when the "code" latents are the
later-token ones, refuted when they are the next-token ones, and inconclusive when both groups are random
directions. The key-value-cache path of a Hugging Face Llama is checked against re-running the whole prefix."""
from __future__ import annotations

import pytest
import torch

from claimgraph.experiments.kinds.ablation import AblationParams
from claimgraph.experiments.kinds.ablation.precaching import group_latents, precaching_kl, precaching_metrics, scores
from claimgraph.experiments.sae import SaeRecipe
from claimgraph.experiments.sae.relu import ReluSAE
from claimgraph.experiments.spec import Criterion
from claimgraph.experiments.substrate.model import ToyConfig, ToyTransformer

HOOK = "blocks.0.hook_resid_pre"
D, V, N_GROUP = 32, 48, 6
NEXT_DIR, LATER_DIR, WRITE_DIR = 16, 17, 18  # residual dims: read by the unembedding / by attention / written by it
CRITERION = Criterion.parse("code_minus_prose_log_excess > 0 band=0.1")


def planted_model() -> ToyTransformer:
    """One block with uniform causal attention (W_Q = W_K = 0) whose value reads only dim LATER_DIR and writes dim
    WRITE_DIR; no MLP; token embeddings in dims 0..15; the unembedding reads the token dims, NEXT_DIR and WRITE_DIR
    but not LATER_DIR. So a perturbation along NEXT_DIR at t changes the prediction at t (token t+1) and, apart
    from LayerNorm's rescaling, nothing later; one along LATER_DIR reaches position t's own output only with
    attention weight 1/(t+1) and every later position q with 1/(q+1)."""
    g = torch.Generator().manual_seed(3)
    m = ToyTransformer(ToyConfig(n_layers=1, d_model=D, n_heads=1, d_mlp=8, n_ctx=64, d_vocab=V)).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.zero_()
        m.W_E[:, :16] = torch.randn(V, 16, generator=g)
        m.blocks[0].ln1.w.fill_(1.0)
        m.blocks[0].ln2.w.fill_(1.0)
        m.ln_final.w.fill_(1.0)
        m.blocks[0].attn.W_V[0, LATER_DIR, 0] = 1.0
        m.blocks[0].attn.W_O[0, 0, WRITE_DIR] = 4.0
        m.W_U[:16] = 0.5 * torch.randn(16, V, generator=g)
        m.W_U[NEXT_DIR] = 3.0 * torch.randn(V, generator=g)
        m.W_U[WRITE_DIR] = 3.0 * torch.randn(V, generator=g)
    return m


def planted_sae(code: str, prose: str, seed: int = 0) -> ReluSAE:
    """2 * N_GROUP latents that all fire (activation 1) everywhere; latents 0..N_GROUP-1 ("code") decode to the
    direction named by `code`, the rest ("prose") to `prose`: "later", "next" or "random" (a random unit vector
    per latent), each with a little noise, at norm 1."""
    g = torch.Generator().manual_seed(100 + seed)
    n = 2 * N_GROUP
    rows = 0.05 * torch.randn(n, D, generator=g)
    for sl, kind in ((slice(0, N_GROUP), code), (slice(N_GROUP, n), prose)):
        if kind == "later":
            rows[sl, LATER_DIR] += 1.0
        elif kind == "next":
            rows[sl, NEXT_DIR] += 1.0
        else:
            rows[sl] = torch.randn(N_GROUP, D, generator=g)
    rows = rows / rows.norm(dim=1, keepdim=True)
    sae = ReluSAE(SaeRecipe(d_sae=n).config(D, 0))
    with torch.no_grad():
        sae.W_enc.zero_()
        sae.b_enc.fill_(1.0)
        sae.b_dec.zero_()
        sae.W_dec.copy_(rows)
    return sae


def planted_metrics(code: str, prose: str, seed: int) -> dict[str, float]:
    m = planted_model()
    windows = torch.randint(0, V, (16, 40), generator=torch.Generator().manual_seed(7 + seed))
    groups = {"code": list(range(N_GROUP)), "prose": list(range(N_GROUP, 2 * N_GROUP))}
    res = precaching_kl(m, planted_sae(code, prose, seed), HOOK, groups["code"] + groups["prose"], windows,
                        pairs=6, horizon=8, t_min=8, seed=seed)
    assert (res["n_pairs"] == 6).all() and (res["kl"] >= 0).all()
    return precaching_metrics(res["kl"], groups, ["code", "prose"])


@pytest.mark.parametrize(("code", "prose", "verdict"), [("later", "next", "supported"), ("next", "later", "refuted"),
                                                        ("random", "random", "inconclusive")])
def test_criterion_planted_three_ways(code, prose, verdict):
    per_seed = [planted_metrics(code, prose, s) for s in range(3)]
    d = CRITERION.decide([m["code_minus_prose_log_excess"] for m in per_seed])
    assert d.verdict == verdict, (d.reason, per_seed)
    if verdict == "supported":  # the later-token latents score above a same-norm random direction, the others below
        assert all(m["code_log_excess"] > 0.3 and m["prose_log_excess"] < -0.3 for m in per_seed), per_seed
        assert all(m["code_above_null_share"] == 1.0 for m in per_seed), per_seed


def test_next_token_direction_scores_near_zero_and_later_one_high():
    m = planted_model()
    windows = torch.randint(0, V, (8, 40), generator=torch.Generator().manual_seed(1))
    res = precaching_kl(m, planted_sae("later", "next"), HOOK, [0, N_GROUP], windows, pairs=8, horizon=8, t_min=8,
                        seed=0)
    s = scores(res["kl"].double())                                                     # [2 latents, latent/null]
    assert float(s[0, 0]) > 2.0 and float(s[1, 0]) < 0.1, s


def test_group_latents_by_lift_frequency_and_f1():
    M = 1000
    code = torch.zeros(M, dtype=torch.bool)
    code[:400] = True                      # base rate 0.4 (lift 2 needs precision 0.8); prose 0.6 (lift 1.5: 0.9)
    prose = ~code
    acts = torch.zeros(M, 6)
    acts[:300, 0] = 1.0                    # code only, higher F1
    acts[:50, 1] = 1.0                     # code only, lower F1
    acts[:100, 2] = 1.0
    acts[500:600, 2] = 1.0                 # half code, half prose: detects neither
    acts[600:900, 3] = 1.0                 # prose only
    acts[0, 4] = 1.0                       # code, but too rare
    acts[:85, 5] = 1.0
    acts[900:915, 5] = 1.0                 # precision 0.85 for code: lift 2.1
    groups, table = group_latents(acts, {"code": code, "prose": prose}, ["code", "prose"], size=12, min_lift=1.5,
                                  min_freq=0.01)
    assert groups == {"code": [0, 5, 1], "prose": [3]}
    assert table["code"]["qualifying"] == 3 and table["code"]["latents"][0]["precision"] == 1.0
    groups, _ = group_latents(acts, {"code": code, "prose": prose}, ["code", "prose"], size=2, min_lift=2.2,
                              min_freq=0.01)
    assert groups == {"code": [0, 1], "prose": []}


def test_params_refuse_a_null_of_latents_and_too_short_windows():
    with pytest.raises(ValueError, match="n_null"):
        AblationParams(mode="precaching", n_null=20)
    with pytest.raises(ValueError, match="null_len"):
        AblationParams(mode="precaching", null_len=12, null_t_min=8, horizon=8)


def test_key_value_cache_path_equals_the_whole_prefix_on_a_hugging_face_llama(tiny_llama):
    """The cached path (positions t..t+H-1 on the clean pass's cache of positions < t, rows of different t
    left-padded into one pass) gives the KL that re-running the whole prefix gives, for latents zeroed and
    random directions at several positions."""
    m, sae = tiny_llama
    with torch.no_grad():
        sae.W_dec.copy_(torch.randn(8, 32))
        sae.b_enc.fill_(0.5)
    windows = torch.randint(0, 97, (6, 24), generator=torch.Generator().manual_seed(2))
    hook = "blocks.0.hook_resid_post"
    kw = dict(pairs=4, horizon=6, t_min=3, seed=0, batch_size=4)
    cached = precaching_kl(m, sae, hook, [0, 3, 5], windows, **kw)
    whole = precaching_kl(m, sae, hook, [0, 3, 5], windows, use_cache=False, **kw)
    assert (cached["n_pairs"] == 4).all() and bool((cached["kl"] > 0).all())
    torch.testing.assert_close(cached["kl"], whole["kl"], rtol=1e-3, atol=1e-7)
