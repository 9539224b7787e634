"""The real-model feature metrics on planted truth (toy models, no training): ablation against a null of
frequency-matched latents and pinned sampling's dose-response against control latents pinned at the same
multiples. Each metric passes where a latent's decoder direction is set by hand to raise the category's logits
and fails where the same latent's direction is random (the truth known by construction)."""
from __future__ import annotations

import pytest
import torch

from claimgraph.experiments.kinds.ablation.run import null_comparison, single_position_ablations
from claimgraph.experiments.sae import SaeRecipe
from claimgraph.experiments.sae.relu import ReluSAE
from claimgraph.experiments.substrate.corpus import get_corpus
from claimgraph.experiments.substrate.model import ToyConfig, ToyTransformer

HOOK = "blocks.0.hook_resid_post"
N_LAT = 24


def planted_setting(planted: bool, *, fire_every: int = 1):
    """A random one-layer toy model over the synthetic vocabulary, held-out windows, and a hand-set SAE at the
    residual stream: every latent fires (activation 1) at the positions t with t % fire_every == 0, so all are
    frequency-matched; decoder rows are random of one norm, except that with `planted` latent 0's is the
    direction that raises the base64 tokens' logits through the final LayerNorm and the unembedding."""
    corpus = get_corpus("synthetic:default")
    vocab = corpus.vocab
    torch.manual_seed(11)
    m = ToyTransformer(ToyConfig(n_layers=1, d_model=32, n_heads=2, d_mlp=64, n_ctx=64, d_vocab=len(vocab)),
                       vocab).eval()
    windows = corpus.sample(32, 5)[:, :40]                                             # [32, 40]
    mask = vocab.category_mask("base64")
    with torch.no_grad():
        resid = m.run_with_cache(windows, [HOOK])[1][HOOK]
    norm = float(resid.norm(dim=-1).mean())
    g = torch.Generator().manual_seed(12)
    rows = torch.randn(N_LAT, 32, generator=g)
    if planted:
        W_U = m.W_U.detach() * m.ln_final.w.detach()[:, None]
        u = W_U[:, mask].mean(1) - W_U[:, ~mask].mean(1)
        rows[0] = u - u.mean()
    rows = rows / rows.norm(dim=1, keepdim=True) * norm
    sae = ReluSAE(SaeRecipe(d_sae=N_LAT).config(32, 0))
    with torch.no_grad():
        sae.W_enc.zero_()
        sae.b_enc.fill_(1.0)
        sae.b_dec.zero_()
        sae.W_dec.copy_(rows)
    return m, sae, windows, mask


@pytest.mark.parametrize("planted", [True, False])
def test_ablation_against_a_null_planted(planted):
    m, sae, windows, mask = planted_setting(planted)
    res = single_position_ablations(m, sae, HOOK, list(range(N_LAT)), windows, mask, pairs=12, horizon=10, t_min=4,
                                    seed=0, batch_size=8)
    assert (res["n_pairs"] == 12).all()
    assert (res["kl"] >= 0).all() and res["kl"].shape == (N_LAT, 10)
    drop = null_comparison(float(res["cat_drop"][0]), res["cat_drop"][1:])
    if planted:  # ablating the planted direction takes the category's probability away
        assert drop["z"] > 4 and drop["at_least"] == 0.0 and float(res["cat_drop"][0]) > 0.02, drop
    else:  # random directions of one norm: each, against the others, is a typical member of the null
        zs, at = [], []
        for j in range(N_LAT):
            c = null_comparison(float(res["cat_drop"][j]), torch.cat([res["cat_drop"][:j], res["cat_drop"][j + 1:]]))
            zs.append(c["z"])
            at.append(c["at_least"])
        zs_t = torch.tensor(zs)
        assert int((zs_t > 3).sum()) <= 1 and float(zs_t.abs().median()) < 1.2, zs
        assert 0.35 < sum(at) / len(at) < 0.65


def test_ablation_pairs_only_where_the_latent_fires():
    m, sae, windows, mask = planted_setting(True, fire_every=1)
    with torch.no_grad():
        sae.b_enc[3] = -1.0  # latent 3 never fires
    res = single_position_ablations(m, sae, HOOK, [0, 3], windows, mask, pairs=5, horizon=10, t_min=4, seed=0)
    assert res["n_pairs"].tolist() == [5, 0] and torch.isnan(res["cat_drop"][1])
