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
    direction p that the unembedding reads the base64 tokens from (set in W_U by hand)."""
    corpus = get_corpus("synthetic:default")
    vocab = corpus.vocab
    torch.manual_seed(11)
    m = ToyTransformer(ToyConfig(n_layers=1, d_model=32, n_heads=2, d_mlp=64, n_ctx=64, d_vocab=len(vocab)),
                       vocab).eval()
    windows = corpus.sample(32, 5)[:, :40]                                             # [32, 40]
    mask = vocab.category_mask("base64")
    g = torch.Generator().manual_seed(12)
    p = torch.randn(32, generator=g)
    p = p - p.mean()
    p = p / p.norm()
    with torch.no_grad():  # an unembedding in which direction p reads out the category (as a trained model's might)
        m.W_U.add_(0.3 * p[:, None] * mask[None].float())
        resid = m.run_with_cache(windows, [HOOK])[1][HOOK]
    norm = float(resid.norm(dim=-1).mean())
    rows = torch.randn(N_LAT, 32, generator=g)
    if planted:
        rows[0] = p
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


def _pinned_shares(planted: bool, multiples=(1.0, 2.0, 4.0)):
    """Category share of sampled tokens per (latent, multiple) with every latent of the planted setting pinned
    at multiples of its maximum activation (1: every latent fires at 1 everywhere), plus the baseline."""
    from claimgraph.experiments.features.intervene import RowClamp
    from claimgraph.experiments.features.sampling import sample_rows

    m, sae, windows, mask = planted_setting(planted)
    prompts = windows[:16, :12]                                                        # [16, 12]
    n, P = prompts.shape
    conds = [(0, float("nan"))] + [(j, mult) for j in range(8) for mult in multiples]
    lat = torch.tensor([c[0] for c in conds]).repeat_interleave(n)
    val = torch.tensor([c[1] for c in conds]).repeat_interleave(n)
    u = torch.rand(n, 12, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    seqs = sample_rows(m, prompts.repeat(len(conds), 1), u.repeat(len(conds), 1), clamp=RowClamp(sae, lat, val, P - 1),
                       hook=HOOK, vocab_limit=len(mask))
    share = mask[seqs[:, P:]].float().mean(1).reshape(len(conds), n).mean(1)
    base = float(share[0])
    table = share[1:].reshape(8, len(multiples))                                       # [latent, multiple]
    return base, table


@pytest.mark.parametrize("planted", [True, False])
def test_pinned_dose_response_against_controls_planted(planted):
    """Positive: pinning the latent whose direction raises the category makes the model write it, more so at
    larger multiples, far beyond control latents pushed as hard. Negative: a random direction of the same norm
    pinned the same way is no different from the controls (its share over them is near 0 at every multiple)."""
    base, table = _pinned_shares(planted)
    over = table[0] - table[1:].mean(0)                                                # [multiples]
    if planted:
        assert float(over[1]) > 0.15 and float(table[0, 2]) >= float(table[0, 0]), (base, table)
    else:
        assert float(over.abs().max()) < 0.1, (base, table)


def test_cached_sampling_equals_the_whole_prefix_on_a_hugging_face_llama(tiny_llama):
    """The key-value-cache path (one position per pass, RowClamp offset moved along) samples the same tokens as
    re-running the whole prefix, with a latent pinned in some rows and not in others."""
    from claimgraph.experiments.features.intervene import RowClamp
    from claimgraph.experiments.features.sampling import sample_rows

    m, sae = tiny_llama
    with torch.no_grad():
        sae.W_dec.copy_(torch.randn(8, 32) * 3)
    prompts = torch.randint(0, 97, (6, 5), generator=torch.Generator().manual_seed(2))
    u = torch.rand(6, 7, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    lat, val = torch.tensor([0, 0, 3, 3, 5, 5]), torch.tensor([float("nan"), 4.0, 2.0, 8.0, float("nan"), 1.0])
    hook = "blocks.0.hook_resid_post"
    cached = sample_rows(m, prompts, u, clamp=RowClamp(sae, lat, val, 4), hook=hook)
    whole = sample_rows(m, prompts, u, clamp=RowClamp(sae, lat, val, 4), hook=hook, use_cache=False)
    plain = sample_rows(m, prompts, u)
    assert torch.equal(cached, whole)
    assert torch.equal(cached[[0, 4]], plain[[0, 4]])  # rows without a pin are not touched
    assert not torch.equal(cached[[1, 3]], plain[[1, 3]])


def test_single_position_ablations_equal_a_plain_reference_on_a_hugging_face_llama(tiny_llama):
    """The cached path (each ablated row over positions t..t+H-1 on the clean pass's key-value cache) and the
    whole-prefix path give what a plain loop computes: every firing position ablated in a forward pass of its
    own, the latent zeroed there (x_t - f_j W_dec[j]), KL and the category's log-mass drop read off full logits."""
    import torch.nn.functional as F

    m, sae = tiny_llama
    with torch.no_grad():
        sae.W_dec.copy_(torch.randn(8, 32, generator=torch.Generator().manual_seed(4)))
        sae.b_enc.fill_(0.2)
    windows = torch.randint(0, 97, (3, 14), generator=torch.Generator().manual_seed(5))
    mask = torch.zeros(97, dtype=torch.bool)
    mask[::7] = True
    hook, H, t_min, latents = "blocks.0.hook_resid_post", 4, 2, [0, 3, 5]
    kw = dict(pairs=1000, horizon=H, t_min=t_min, seed=0, batch_size=2)  # every firing position is a pair
    cached = single_position_ablations(m, sae, hook, latents, windows, mask, **kw)
    whole = single_position_ablations(m, sae, hook, latents, windows, mask, use_cache=False, **kw)

    acts = m.capture(windows, hook)                                                    # [n, L, d]
    with torch.no_grad():
        clean = F.log_softmax(m(windows), -1)                                          # [n, L, V]
        f = sae.encode(acts)                                                           # [n, L, d_sae]
    want_drop, want_kl, want_n = [], [], []
    for j in latents:
        drops, kls = [], []
        for w, t in (f[:, :, j] > 0).nonzero().tolist():
            if not t_min <= t <= windows.shape[1] - H:
                continue

            def zero(act, name, w=w, t=t, j=j):
                out = act.clone()
                out[0, t] = act[0, t] - f[w, t, j] * sae.W_dec[j]
                return out
            with torch.no_grad():
                abl = F.log_softmax(m.run_with_hooks(windows[w:w + 1], [(hook, zero)])[0], -1)  # [L, V]
            lc, la = clean[w, t:t + H], abl[t:t + H]                                   # [H, V]
            kls.append((lc.exp() * (lc - la)).sum(-1))
            drops.append(lc[0, mask].logsumexp(-1) - la[0, mask].logsumexp(-1))
        want_n.append(len(kls))
        want_kl.append(torch.stack(kls).mean(0))
        want_drop.append(torch.stack(drops).mean())
    assert cached["n_pairs"].tolist() == want_n and min(want_n) >= 5
    for got in (cached, whole):
        torch.testing.assert_close(got["kl"], torch.stack(want_kl), rtol=1e-3, atol=1e-6)
        torch.testing.assert_close(got["cat_drop"], torch.stack(want_drop), rtol=1e-3, atol=1e-6)
