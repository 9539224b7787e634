"""The hooked toy transformer: contract hook names, hook semantics, cache values equal to an independent
recomputation, hand-set weights with known outputs, activations, shuffled copies, devices.
All on small randomly initialised models (no training)."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from claimgraph.experiments.context import resolve_device
from claimgraph.experiments.substrate import (
    HookPoint,
    ToyConfig,
    ToyTransformer,
    activations,
    shuffled_copy,
)
from claimgraph.graph.errors import InvalidInput

CFG = ToyConfig(n_layers=2, d_model=16, n_heads=2, d_mlp=32, n_ctx=12, d_vocab=23)


def contract_names(n_layers: int) -> list[str]:
    per_block = ["hook_resid_pre", "attn.hook_q", "attn.hook_k", "attn.hook_v", "attn.hook_pattern", "attn.hook_z",
                 "hook_attn_out", "hook_resid_mid", "mlp.hook_pre", "mlp.hook_post", "hook_mlp_out",
                 "hook_resid_post"]
    return (["hook_embed", "hook_pos_embed"] + [f"blocks.{i}.{h}" for i in range(n_layers) for h in per_block]
            + ["ln_final.hook_normalized"])


@pytest.fixture(scope="module")
def model() -> ToyTransformer:
    torch.manual_seed(0)
    m = ToyTransformer(CFG).eval()
    with torch.no_grad():  # non-zero biases and LayerNorm parameters so every term is exercised
        for _name, p in m.named_parameters():
            if p.ndim < 2:
                p.add_(0.1 * torch.randn_like(p))
    return m


@pytest.fixture(scope="module")
def tokens() -> torch.Tensor:
    return torch.randint(0, CFG.d_vocab, (5, 10), generator=torch.Generator().manual_seed(1))


def test_hook_names_are_exactly_the_contract(model):
    assert model.hook_names() == contract_names(2)
    for name, module in model.named_modules():
        if isinstance(module, HookPoint):
            assert module.name == name
    assert (model.n_layers, model.d_model, model.d_mlp, model.d_vocab, model.n_ctx, model.n_heads) == \
        (2, 16, 32, 23, 12, 2)
    assert model.W_U.shape == (16, 23) and model.W_out(1).shape == (32, 16)
    assert model.ln_final_weight().shape == (16,)


def test_identity_hooks_change_nothing_and_overwrites_do(model, tokens):
    base = model(tokens)
    same = model.run_with_hooks(tokens, [(n, lambda a, n: None) for n in model.hook_names()])
    assert torch.equal(base, same)
    same = model.run_with_hooks(tokens, [(n, lambda a, n: a.clone()) for n in model.hook_names()])
    assert torch.allclose(base, same, atol=1e-6)
    seen = []
    model.run_with_hooks(tokens, [(n, lambda a, n: seen.append(n)) for n in model.hook_names()])
    assert seen == model.hook_names()  # every hook fires once, in forward order, with its own name
    changed = model.run_with_hooks(tokens, [("blocks.0.mlp.hook_post", lambda a, n: torch.zeros_like(a))])
    assert not torch.allclose(base, changed)


def test_overwrite_matches_prediction(model, tokens):
    """Zeroing the last MLP's hook_post leaves mlp_out = b_out; the logits follow from the cache by hand."""
    _, cache = model.run_with_cache(tokens)
    got = model.run_with_hooks(tokens, [("blocks.1.mlp.hook_post", lambda a, n: torch.zeros_like(a))])
    resid = cache["blocks.1.hook_resid_mid"] + model.blocks[1].mlp.b_out
    ln = model.ln_final
    want = F.layer_norm(resid, (CFG.d_model,), ln.w, ln.b, CFG.ln_eps) @ model.W_U
    assert torch.allclose(got, want, atol=1e-5)


def test_hooks_removed_on_exit_even_after_an_error(model, tokens):
    def boom(a, n):
        raise RuntimeError("inside a hook")

    with pytest.raises(RuntimeError):
        with model.hooks([("blocks.0.hook_resid_pre", boom)]):
            model(tokens)
    with pytest.raises(KeyError):
        with model.hooks([("hook_embed", lambda a, n: None)]):
            raise KeyError("inside the block")
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    with pytest.raises(InvalidInput, match="unknown hook name"):
        model.run_with_hooks(tokens, [("blocks.9.hook_resid_pre", lambda a, n: None)])
    with pytest.raises(InvalidInput, match="shape"):
        model.run_with_hooks(tokens, [("hook_embed", lambda a, n: a[:, :1])])
    assert all(not m._forward_hooks for m in model.modules())


def test_cache_equals_manual_recomputation(model, tokens):
    logits, c = model.run_with_cache(tokens)
    B, T = tokens.shape
    H, dh = CFG.n_heads, CFG.d_head
    assert all(not v.requires_grad for v in c.values())
    assert torch.allclose(c["hook_embed"], model.W_E[tokens])
    assert torch.allclose(c["hook_pos_embed"][0], model.W_pos[:T])
    assert torch.allclose(c["blocks.0.hook_resid_pre"], c["hook_embed"] + c["hook_pos_embed"])
    for i, blk in enumerate(model.blocks):
        p = f"blocks.{i}."
        x = F.layer_norm(c[p + "hook_resid_pre"], (CFG.d_model,), blk.ln1.w, blk.ln1.b, CFG.ln_eps)
        a = blk.attn
        q = c[p + "attn.hook_q"]
        assert q.shape == (B, T, H, dh)
        for h in range(H):  # per head, plain matrix algebra
            qh = x @ a.W_Q[h] + a.b_Q[h]
            kh = x @ a.W_K[h] + a.b_K[h]
            vh = x @ a.W_V[h] + a.b_V[h]
            assert torch.allclose(q[:, :, h], qh, atol=1e-5)
            scores = qh @ kh.transpose(1, 2) / math.sqrt(dh)
            scores = scores + torch.full((T, T), float("-inf")).triu(1)
            pat = scores.softmax(-1)
            assert torch.allclose(c[p + "attn.hook_pattern"][:, h], pat, atol=1e-5)
            assert torch.allclose(c[p + "attn.hook_z"][:, :, h], pat @ vh, atol=1e-5)
        pattern = c[p + "attn.hook_pattern"]
        assert torch.allclose(pattern.sum(-1), torch.ones(B, H, T), atol=1e-5)
        assert float(pattern.triu(1).abs().max()) == 0.0, "attention looks ahead"
        attn_out = sum(c[p + "attn.hook_z"][:, :, h] @ a.W_O[h] for h in range(H)) + a.b_O
        assert torch.allclose(c[p + "hook_attn_out"], attn_out, atol=1e-5)
        assert torch.allclose(c[p + "hook_resid_mid"], c[p + "hook_resid_pre"] + c[p + "hook_attn_out"], atol=1e-6)
        x2 = F.layer_norm(c[p + "hook_resid_mid"], (CFG.d_model,), blk.ln2.w, blk.ln2.b, CFG.ln_eps)
        assert torch.allclose(c[p + "mlp.hook_pre"], x2 @ blk.mlp.W_in + blk.mlp.b_in, atol=1e-5)
        assert torch.allclose(c[p + "mlp.hook_post"], F.gelu(c[p + "mlp.hook_pre"]), atol=1e-6)
        mlp_out = c[p + "mlp.hook_post"] @ model.W_out(i) + model.b_out(i)
        assert torch.allclose(c[p + "hook_mlp_out"], mlp_out, atol=1e-5)
        assert torch.allclose(c[p + "hook_resid_post"], c[p + "hook_resid_mid"] + c[p + "hook_mlp_out"], atol=1e-6)
        if i + 1 < CFG.n_layers:
            assert torch.equal(c[f"blocks.{i + 1}.hook_resid_pre"], c[p + "hook_resid_post"])
    ln = model.ln_final
    normed = F.layer_norm(c["blocks.1.hook_resid_post"], (CFG.d_model,), ln.w, ln.b, CFG.ln_eps)
    assert torch.allclose(c["ln_final.hook_normalized"], normed, atol=1e-5)
    assert torch.allclose(normed @ model.W_U, logits, atol=1e-5)
    # a subset cache holds just those names
    _, sub = model.run_with_cache(tokens, ["blocks.0.mlp.hook_post"])
    assert list(sub) == ["blocks.0.mlp.hook_post"] and torch.equal(sub["blocks.0.mlp.hook_post"],
                                                                    c["blocks.0.mlp.hook_post"])


def test_hand_set_weights_copy_the_current_token():
    """Blocks silenced, one-hot embeddings and W_U = W_E^T: the argmax logit is the input token itself."""
    cfg = ToyConfig(n_layers=1, d_model=24, n_heads=2, d_mlp=8, n_ctx=8, d_vocab=20)
    m = ToyTransformer(cfg).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.zero_()
        m.W_E[:, :20] = torch.eye(20) * 5
        m.W_U.copy_(m.W_E.T)
        m.ln_final.w.fill_(1.0)
        for ln in (m.blocks[0].ln1, m.blocks[0].ln2):
            ln.w.fill_(1.0)
    toks = torch.randint(0, 20, (4, 8), generator=torch.Generator().manual_seed(0))
    logits = m(toks)
    assert torch.equal(logits.argmax(-1), toks)
    # LayerNorm of a scaled one-hot vector has a known value at the hot coordinate
    d = 24
    hot = (1 - 1 / d) / math.sqrt((1 / d) * (1 - 1 / d))
    assert torch.allclose(logits.max(-1).values, torch.full((4, 8), 5 * hot), atol=1e-3)


def test_activations_batched_equal_the_cache(model, tokens):
    _, c = model.run_with_cache(tokens)
    for name, width in [("blocks.1.mlp.hook_post", CFG.d_mlp), ("blocks.0.hook_resid_post", CFG.d_model),
                        ("blocks.0.attn.hook_z", CFG.d_model)]:
        for bs in (1, 2, 64):
            acts = activations(model, tokens, name, batch_size=bs)
            assert acts.shape == (tokens.numel(), width) and acts.dtype == torch.float32
            assert torch.allclose(acts, c[name].reshape(tokens.numel(), -1), atol=1e-6)
            assert not acts.requires_grad
    with pytest.raises(InvalidInput):
        activations(model, tokens, "blocks.0.attn.hook_pattern", batch_size=4)
    with pytest.raises(InvalidInput):
        activations(model, tokens, "nope", batch_size=4)
    assert activations(model, tokens[:0], "hook_embed", batch_size=4).shape == (0, CFG.d_model)


def test_shuffled_copy_permutes_matrices_and_keeps_the_rest(model, tokens):
    s = shuffled_copy(model, seed=3)
    orig = dict(model.named_parameters())
    n_matrices = 0
    for name, p in s.named_parameters():
        o = orig[name]
        if o.ndim >= 2 and not name.rsplit(".", 1)[-1].startswith("b_"):
            n_matrices += 1
            assert torch.equal(p.reshape(-1).sort().values, o.reshape(-1).sort().values), name
            assert not torch.equal(p, o), name
        else:
            assert torch.equal(p, o), name
    assert n_matrices == 2 + 1 + CFG.n_layers * (4 + 2)  # W_E, W_pos, W_U; per block Q K V O, in, out
    assert torch.equal(shuffled_copy(model, seed=3).W_E, s.W_E)
    assert not torch.equal(shuffled_copy(model, seed=4).W_E, s.W_E)
    assert s.hook_names() == model.hook_names()
    assert not torch.allclose(s(tokens), model(tokens))
    _, c = s.run_with_cache(tokens, ["hook_embed"])  # hooks of the copy point at the copy's modules
    assert torch.allclose(c["hook_embed"], s.W_E[tokens])


def test_resolve_device():
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(InvalidInput, match="CUDA"):
            resolve_device("cuda")
    with pytest.raises(InvalidInput):
        resolve_device("tpu")


def test_cpu_build_is_told_without_importing_torch():
    """`torch_is_cpu_build` agrees with the imported torch, and a fresh interpreter resolving 'auto' on a CPU-only
    build does not import torch (a run served from the cache needs none)."""
    import subprocess
    import sys

    from claimgraph.experiments.context import torch_is_cpu_build

    assert torch_is_cpu_build() == (torch.version.cuda is None and not torch.version.hip)
    code = ("import sys; from claimgraph.experiments.context import resolve_device, torch_is_cpu_build; "
            "cpu = torch_is_cpu_build(); d = resolve_device('auto'); print(cpu, d, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[0] == str(torch_is_cpu_build())
    assert out[1] == ("cuda" if torch.cuda.is_available() else "cpu")
    if out[0] == "True":
        assert out[2] == "False"


def test_decode_without_vocab(model):
    assert model.decode(torch.tensor([3, 4])) == ["<3>", "<4>"]


def test_check_fit_refuses_what_the_model_cannot_read(model):
    from claimgraph.experiments.substrate.load import check_fit, corpus_for

    corpus, ref = corpus_for("toy:tiny", None)
    assert ref == "synthetic:tiny" and corpus.seq_len == 32
    with pytest.raises(InvalidInput, match=r"synthetic:tiny uses 311 token ids but m embeds only 23"):
        check_fit(model, "m", corpus, ref)
    wide = ToyTransformer(CFG.model_copy(update={"d_vocab": 311})).eval()  # n_ctx 12 < 32
    with pytest.raises(InvalidInput, match=r"sequences of 32 tokens but m takes at most 12"):
        check_fit(wide, "m", corpus, ref)
    fits = ToyTransformer(CFG.model_copy(update={"d_vocab": 311, "n_ctx": 32})).eval()
    check_fit(fits, "m", corpus, ref, hook="blocks.1.mlp.hook_post")
    with pytest.raises(InvalidInput, match=r"no hook 'blocks.2.mlp.hook_post' \(named by the SAE at x\); it offers: "
                                           r"hook_embed"):
        check_fit(fits, "m", corpus, ref, hook="blocks.2.mlp.hook_post", hook_from="the SAE at x")
    assert corpus_for("hf:/some/dir", "synthetic:tiny")[1] == "synthetic:tiny"
    with pytest.raises(InvalidInput, match="no data reference for hf:/some/dir"):
        corpus_for("hf:/some/dir", None)
