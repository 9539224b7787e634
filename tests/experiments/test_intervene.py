"""The spliced-SAE clamp hook and the sampler, on a random-init toy transformer and a hand-built SAE: no clamp
reproduces the clean logits bit for bit, a clamp changes exactly the latent, positions and later logits it
should, and sampling is reproducible and draws from the model's distribution."""
from __future__ import annotations

import pytest
import torch

from claimgraph.experiments.features.intervene import clamp_hook, latent_acts_and_logits
from claimgraph.experiments.features.sampling import sample
from claimgraph.experiments.sae import SaeRecipe
from claimgraph.experiments.sae.relu import ReluSAE
from claimgraph.experiments.substrate.model import ToyConfig, ToyTransformer
from claimgraph.graph.errors import InvalidInput

HOOK = "blocks.0.mlp.hook_post"


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = ToyTransformer(ToyConfig(n_layers=2, d_model=16, n_heads=2, d_mlp=32, n_ctx=24, d_vocab=30))
    with torch.no_grad():
        m.W_E.mul_(30.0)  # activations and logits of a visible size
        m.W_U.mul_(30.0)
    return m.eval()


@pytest.fixture(scope="module")
def sae():
    """An SAE over the 32 MLP units whose latents fire on a fair share of tokens (a random encoder with a
    positive bias; no training needed for these identities)."""
    g = torch.Generator().manual_seed(1)
    s = ReluSAE(SaeRecipe(d_sae=48).config(32, 0), generator=g)
    with torch.no_grad():
        s.W_enc.copy_(torch.randn(32, 48, generator=g))
        s.b_enc.fill_(0.05)
        s.b_dec.copy_(0.01 * torch.randn(32, generator=g))
    return s.eval()


@pytest.fixture(scope="module")
def tokens():
    return torch.randint(0, 30, (4, 20), generator=torch.Generator().manual_seed(2))


def _capture_after(model, tokens, fn):
    """The activation at HOOK as the rest of the model sees it, after `fn` replaced it."""
    box = []
    with torch.no_grad(), model.hooks([(HOOK, fn), (HOOK, lambda a, n: box.append(a.clone()))]):
        logits = model(tokens)
    return logits, box[0]


def test_splice_without_clamp_reproduces_the_logits_exactly(model, sae, tokens):
    clean = model(tokens)
    none = torch.zeros(tokens.shape, dtype=torch.bool)
    spliced = model.run_with_hooks(tokens, [(HOOK, clamp_hook(sae, [3, 7], 0.0, positions=none))])
    assert torch.equal(spliced, clean)
    # clamping a latent where it is already 0 changes nothing either
    f = sae.encode(model.run_with_cache(tokens, [HOOK])[1][HOOK])                          # [B, T, d_sae]
    dead_where = f[..., 5] == 0
    assert bool(dead_where.any()) and bool((~dead_where).any())
    same = model.run_with_hooks(tokens, [(HOOK, clamp_hook(sae, [5], 0.0, positions=dead_where))])
    assert torch.equal(same, clean)


def test_clamp_is_decode_of_the_edited_latents_plus_the_error(model, sae, tokens):
    x = model.run_with_cache(tokens, [HOOK])[1][HOOK]                                      # [B, T, d_mlp]
    with torch.no_grad():
        f = sae.encode(x)
        f2 = f.clone()
        f2[..., [3, 7]] = torch.tensor([0.0, 2.5])
        want = sae.decode(f2) + (x - sae(x))
    _, got = _capture_after(model, tokens, clamp_hook(sae, [3, 7], [0.0, 2.5]))
    assert torch.allclose(got, want, atol=1e-5)
    # the spliced activation re-encodes to the clamped values on those latents (ReLU SAE, error term kept:
    # encode is not linear, so only check the latents we set where the change is large)
    assert bool((f[..., 3] > 0).any())


def test_clamp_changes_only_the_chosen_positions_and_what_follows(model, sae, tokens):
    x = model.run_with_cache(tokens, [HOOK])[1][HOOK]
    f = sae.encode(x)
    t = 9
    j = int(f[:, t].min(0).values.argmax())  # a latent firing at t in every row
    at = torch.zeros(tokens.shape, dtype=torch.bool)
    at[:, t] = True
    assert bool((f[:, t, j] > 0).all()), "no latent fires at t in every row; change the SAE's seed"
    clean = model(tokens)
    logits, got = _capture_after(model, tokens, clamp_hook(sae, [j], 0.0, positions=at))
    expect = x.clone()
    expect[:, t] -= f[:, t, j, None].detach() * sae.W_dec[j].detach()
    assert torch.allclose(got, expect, atol=1e-6)
    assert torch.equal(got[:, :t], x[:, :t]) and torch.equal(got[:, t + 1:], x[:, t + 1:])
    assert torch.equal(logits[:, :t], clean[:, :t])                                     # causal: nothing before t
    assert (logits[:, t] - clean[:, t]).abs().max() > 1e-4                             # the ablated position
    assert (logits[:, t + 1:] - clean[:, t + 1:]).abs().max() > 1e-6                    # later ones, via attention


def test_latent_acts_are_read_before_the_replacement(model, sae, tokens):
    x = model.run_with_cache(tokens, [HOOK])[1][HOOK]
    want = sae.encode(x)[..., [2, 4]]
    logits, acts = latent_acts_and_logits(model, sae, tokens, HOOK, [2, 4],
                                          fwd_hooks=[(HOOK, clamp_hook(sae, [2, 4], 9.0))])
    assert torch.allclose(acts, want, atol=1e-6) and not torch.equal(logits, model(tokens))


def test_clamp_hook_refuses_bad_latents(sae):
    with pytest.raises(InvalidInput, match="out of range"):
        clamp_hook(sae, [48])
    with pytest.raises(InvalidInput, match="one value or one per latent"):
        clamp_hook(sae, [1, 2, 3], [1.0, 2.0])


def test_sampling_is_reproducible_and_hooks_are_removed(model, sae):
    prompts = torch.randint(0, 30, (5, 6), generator=torch.Generator().manual_seed(3))
    a = sample(model, prompts, 8, seed=11, batch_size=2)
    b = sample(model, prompts, 8, seed=11, batch_size=2)
    c = sample(model, prompts, 8, seed=12, batch_size=2)
    assert a.shape == (5, 14) and torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(a[:, :6], prompts)
    where = torch.zeros(14, dtype=torch.bool)
    where[5:] = True
    pinned = sample(model, prompts, 8, seed=11, batch_size=2,
                    fwd_hooks=[(HOOK, clamp_hook(sae, [0], 25.0, positions=where))])
    assert torch.equal(pinned, sample(model, prompts, 8, seed=11, batch_size=5,
                                      fwd_hooks=[(HOOK, clamp_hook(sae, [0], 25.0, positions=where))]))
    assert not torch.equal(pinned, a)
    assert torch.equal(sample(model, prompts, 8, seed=11, batch_size=2), a)  # no hook left behind


def test_sampling_draws_from_the_model_distribution(model):
    """4000 one-token continuations of one prompt: empirical frequencies match softmax(logits) (and
    softmax(logits / 0.5) at temperature 0.5) within 5 binomial SDs; vocab_limit keeps ids below it."""
    prompt = torch.tensor([[1, 2, 3, 4]])
    logits = model(prompt)[0, -1]
    for temp in (1.0, 0.5):
        p = torch.softmax(logits / temp, -1)
        draws = sample(model, prompt.expand(4000, -1), 1, seed=5, temperature=temp, batch_size=4000)[:, -1]
        freq = torch.bincount(draws, minlength=30).float() / 4000
        sd = (p * (1 - p) / 4000).sqrt()
        assert bool(((freq - p).abs() <= 5 * sd + 1e-3).all()), (freq, p)
    limited = sample(model, prompt.expand(200, -1), 3, seed=5, vocab_limit=7, batch_size=200)[:, 4:]
    assert int(limited.max()) < 7
    with pytest.raises(InvalidInput, match="context"):
        sample(model, prompt, 30, seed=0)
