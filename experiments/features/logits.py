"""Direct logit effects of directions in a model's activation space, and how a category ranks among them.

The direct effect of adding a direction `u` at a hook is the change it makes to the output logits through the
residual stream alone (no later layer recomputes anything), "path expansion" in the claim page's words:

    MLP hook (`blocks.{i}.mlp.hook_post`): r = u @ W_out(i)      [d_model]  (the MLP's output projection)
    residual-stream hook:                r = u                  [d_model]
    final LayerNorm, linearised:         r' = (r - mean(r)) * ln_final_weight() / scale
    logits:                              effect = r' @ W_U      [d_vocab]

The LayerNorm is read as what it does to a small change of its input: remove the mean over d_model, multiply
by its weight and divide by the norm of the residual it normalises (`scale`, the typical per-token
sqrt(var + eps) of the final residual, measured on data by `residual_scale`). That division is one positive
number for all tokens, so it changes magnitudes, never rankings; with `scale=None` it is left out and the
effects are in "logits per unit of normalised residual". The LayerNorm bias adds the same logits whatever the
direction, so it is not part of an effect.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from claimgraph.experiments.sae.base import SparseAutoencoder
from claimgraph.experiments.substrate.hooks import HookedModel
from claimgraph.graph.errors import InvalidInput

_MLP_POST = re.compile(r"blocks\.(\d+)\.mlp\.hook_post")
_RESIDUAL = re.compile(r"hook_embed|hook_pos_embed|blocks\.\d+\.(hook_resid_pre|hook_resid_mid|hook_resid_post|"
                       r"hook_attn_out|hook_mlp_out)")


def to_residual(model: HookedModel, directions: Tensor, hook: str) -> Tensor:
    """What directions [n, d_hook] added at `hook` add to the residual stream, [n, d_model] float32 on the
    model's device."""
    dev = model.device
    u = directions.detach().to(dev, torch.float32)
    if u.ndim == 1:
        u = u[None]
    m = _MLP_POST.fullmatch(hook)
    if m:
        layer = int(m.group(1))
        if layer >= model.n_layers:
            raise InvalidInput(f"hook {hook!r} names layer {layer} but the model has {model.n_layers} layers")
        W_out = model.W_out(layer).detach().float()                                # [d_mlp, d_model]
        assert u.shape[1] == W_out.shape[0], f"directions are {u.shape[1]}-wide, {hook} is {W_out.shape[0]}-wide"
        return u @ W_out                                                           # [n, d_model]
    if _RESIDUAL.fullmatch(hook):
        assert u.shape[1] == model.d_model, f"directions are {u.shape[1]}-wide, the residual is {model.d_model}"
        return u                                                                   # [n, d_model]
    raise InvalidInput(f"no direct path to the logits from hook {hook!r}: use an MLP output hook "
                       "(blocks.<i>.mlp.hook_post) or a residual-stream hook (hook_embed, blocks.<i>.hook_resid_pre"
                       "/mid/post, blocks.<i>.hook_attn_out, blocks.<i>.hook_mlp_out)")


@torch.no_grad()
def residual_scale(model: HookedModel, tokens: Tensor, *, batch_size: int = 64) -> float:
    """The typical factor the final LayerNorm divides by: mean over tokens [N, T] of sqrt(var + eps) of the
    final residual stream (the last block's `hook_resid_post`, the final LayerNorm's input)."""
    from claimgraph.experiments.substrate.load import activations

    resid = activations(model, tokens, f"blocks.{model.n_layers - 1}.hook_resid_post", batch_size=batch_size)
    eps = 1e-5
    return float((resid.var(dim=-1, unbiased=False) + eps).sqrt().mean())          # resid [N*T, d_model]


@torch.no_grad()
def direct_logit_effects(model: HookedModel, directions: Tensor, hook: str, *, scale: float | None = None) -> Tensor:
    """Direct effect on the output logits of adding each direction (rows of [n, d_hook]) at `hook`:
    [n, d_vocab] float32, on the directions' device. `scale`: the final residual's typical norm
    (`residual_scale`); None leaves that division out (rankings are the same). See the module docstring."""
    if scale is not None and not scale > 0:
        raise InvalidInput(f"scale must be a positive number (the residual stream's typical norm), got {scale}")
    r = to_residual(model, directions, hook)                                       # [n, d_model]
    r = r - r.mean(dim=-1, keepdim=True)                                           # [n, d_model] centred
    w = model.ln_final_weight()
    if w is not None:
        r = r * w.detach().float()                                                 # [n, d_model]
    if scale is not None:
        r = r / scale
    effects = r @ model.W_U.detach().float()                                       # [n, d_vocab]
    return effects.to(directions.device)


def decoder_directions(sae: SparseAutoencoder, features: "Sequence[int] | Tensor") -> Tensor:
    """The SAE decoder rows of `features`, [n, d_in]: what one unit of each latent adds at the hook."""
    idx = torch.as_tensor(features, dtype=torch.long).reshape(-1)
    d_sae = sae.W_dec.shape[0]
    if len(idx) and (int(idx.min()) < 0 or int(idx.max()) >= d_sae):
        raise InvalidInput(f"feature index out of range: the SAE has latents 0..{d_sae - 1}, got {idx.tolist()}")
    return sae.W_dec.detach()[idx.to(sae.W_dec.device)]                            # [n, d_in]


def feature_logit_effects(model: HookedModel, sae: SparseAutoencoder, hook: str, features: "Sequence[int] | Tensor", *,
                          scale: float | None = None) -> Tensor:
    """Direct logit effects [n, d_vocab] of SAE latents: their decoder rows added at `hook` (per unit of
    activation), on CPU."""
    return direct_logit_effects(model, decoder_directions(sae, features), hook, scale=scale).cpu()


def enrichment(effects: Tensor, category_mask: Tensor, top_k: int) -> dict[str, float]:
    """How over-represented a category is among the `top_k` tokens with the largest effects.

    Returns the count and share of category tokens among the top_k, the category's base rate over the
    vocabulary, their ratio (1 = as often as chance), and the hypergeometric p-value of seeing at least that
    many (drawing top_k of d_vocab tokens without replacement)."""
    from scipy.stats import hypergeom

    effects = effects.detach().reshape(-1).float().cpu()
    mask = category_mask.detach().reshape(-1).bool().cpu()
    V = effects.shape[0]
    if mask.shape[0] != V:
        raise InvalidInput(f"category mask has {mask.shape[0]} entries but effects cover {V} tokens")
    if not 1 <= top_k <= V:
        raise InvalidInput(f"top_k must lie in 1..{V} (the vocabulary), got {top_k}")
    n_cat = int(mask.sum())
    hits = int(category_hits(effects, mask, top_k))
    share = hits / top_k
    base = n_cat / V
    return {"top_k": top_k, "hits": hits, "share": share, "n_category": n_cat, "d_vocab": V,
            "base_rate": base, "ratio": share / base if base > 0 else float("nan"),
            "p_value": float(hypergeom.sf(hits - 1, V, n_cat, top_k))}


def category_hits(effects: Tensor, category_mask: Tensor, top_k: int) -> Tensor:
    """How many of the `top_k` largest effects in each row of effects [..., V] are category tokens: [...]."""
    mask = category_mask.detach().reshape(-1).bool().cpu()                       # [V]
    return mask[effects.detach().float().cpu().topk(top_k, dim=-1).indices].sum(-1)  # [...]


def enrichment_ratios(effects: Tensor, category_mask: Tensor, top_k: int) -> Tensor:
    """`enrichment`'s ratio for every row of effects [R, V] at once (no p-values): [R] float32."""
    base = int(category_mask.sum()) / category_mask.numel()
    return (category_hits(effects, category_mask, top_k).double() / top_k / base).float()  # [R]


@torch.no_grad()
def latent_category_scores(model: HookedModel, sae: SparseAutoencoder, hook: str, category_mask: Tensor, top_k: int,
                           *, scale: float | None = None, chunk: int = 256) -> tuple[Tensor, Tensor]:
    """For every latent of `sae`: (mean direct effect on the category's tokens - mean on the others, enrichment
    ratio of the category among its top_k effects), each [d_sae] on CPU, over the first len(category_mask)
    token ids. The effects are computed `chunk` latents at a time, so memory stays [chunk, d_vocab]."""
    mask = category_mask.detach().reshape(-1).bool().cpu()
    V = mask.shape[0]
    cmo, ratio = [], []
    for start in range(0, sae.W_dec.shape[0], chunk):
        idx = torch.arange(start, min(start + chunk, sae.W_dec.shape[0]))
        eff = feature_logit_effects(model, sae, hook, idx, scale=scale)[:, :V]        # [c, V]
        cmo.append(eff[:, mask].mean(-1) - eff[:, ~mask].mean(-1))                     # [c]
        ratio.append(enrichment_ratios(eff, mask, top_k))                              # [c]
    return torch.cat(cmo), torch.cat(ratio)


def rank_among(value: float, others: Tensor) -> float:
    """Share of `others` below `value`, ties counted half: 1 = above all of them, 0.5 = a typical one."""
    o = others.detach().reshape(-1).double()
    if len(o) == 0:
        return float("nan")
    return float(((o < value).double().sum() + 0.5 * (o == value).double().sum()) / len(o))


def top_tokens(effects: Tensor, decode: Callable[[Any], list[str]], k: int) -> dict[str, list[tuple[str, float]]]:
    """The k tokens with the largest effects (descending) and the k with the smallest (ascending), as
    (token string, value) pairs."""
    effects = effects.detach().reshape(-1).float().cpu()
    k = min(k, effects.shape[0])
    hi = effects.topk(k)
    lo = effects.topk(k, largest=False)
    return {"top": list(zip(decode(hi.indices), [float(v) for v in hi.values])),
            "bottom": list(zip(decode(lo.indices), [float(v) for v in lo.values]))}
