"""Decomposition of the next-token gradient at residual stream (k, i) into direct learning, pre-caching and
circuit sharing (Rofin, Naghiyev and Hahn).

With L = mean over sequences and positions of the cross-entropy, L_i its share from position i (so that
L = sum_i L_i), and sg(k, i) the residual stream h_k at position i detached in the forward pass:

- shared_i   = grad L with sg(k, i)                      (paths that avoid (k, i): other positions, later layers)
- direct_i   = grad L_i - grad L_i with sg(k, i)          (L_i through (k, i))
- precache_i = grad L - shared_i - direct_i               (the other positions' losses through (k, i))

so the three parts sum to grad L for every i. `decompose_literal` computes them exactly so, one stop-gradient
forward pass per position. `decompose` gets the same numbers for all tracked positions in a bounded number of
passes, from two facts: every path from a parameter below layer k to the loss crosses h_k at exactly one
position, and every path from (k, i) to L_i stays at position i (attention is causal). Hence

  d L_i / d h_{k,i}            = the gradient at h_{k,i} of a forward pass from h_k in *myopic* mode,
  sum_{j != i} d L_j / d h_{k,i} = (full gradient at h_{k,i}) - (the above),

and direct_i / precache_i are the parameter VJPs of h_k with those cotangents placed at position i alone.

A feature probed at a *set* G of positions (the input segment) gets the summed parts direct_G = sum_i direct_i,
precache_G = sum_i precache_i; their complement is shared_G = grad L with all of G detached at once (paths
crossing h_k outside G, or avoiding h_k), because a path crosses h_k at exactly one position. Note that
sg(k, G) must not be used for direct_G: grad L_i - grad L_i with sg(k, G) would also count paths from earlier
positions of G into L_i, which are pre-caching.

Passes per call for n groups, beyond the plain forward and backward that give grad L and d L / d h_k: one
forward and backward of blocks k.. in myopic mode, and 2n backward passes of blocks ..k-1 (embeddings and the
blocks below k) with the graph retained, on the prefix of the sequence up to the last tracked position (one
extra forward of those blocks when that prefix is shorter than the sequence).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch

from .transformer import Transformer, token_losses


class GradientParts(NamedTuple):
    loss: float
    full: torch.Tensor      # [P] grad L, parameters flattened in model.parameters() order
    direct: torch.Tensor    # [n_pos, P]
    precache: torch.Tensor  # [n_pos, P]
    shared: torch.Tensor    # [n_pos, P]


def flatten(grads: Sequence[torch.Tensor | None], params: Sequence[torch.Tensor], batch: int | None = None
            ) -> torch.Tensor:
    """Concatenate per-parameter gradients ([P], or [batch, P] for batched ones); None counts as zero."""
    lead = () if batch is None else (batch,)
    return torch.cat([(g if g is not None else torch.zeros(*lead, *p.shape, dtype=p.dtype, device=p.device))
                      .reshape(*lead, -1) for g, p in zip(grads, params)], dim=-1)


def _loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return token_losses(logits, targets).mean()


def full_gradient(model: Transformer, tokens: torch.Tensor, targets: torch.Tensor, layer: int):
    """grad L computed through h_k as an explicit cut. Returns (loss, full [P], h_k with its graph, dL/dh_k).

    Training of the tracked model and of its untracked twin both use this, so their trajectories agree
    bit for bit."""
    params = list(model.parameters())
    h = model.resid(tokens, layer)                                                     # [B, T, d]
    h_in = h.detach().requires_grad_(True)
    loss = _loss(model.run_from(h_in, layer), targets)
    *g_up, u_full = torch.autograd.grad(loss, params + [h_in], allow_unused=True)
    g_low = torch.autograd.grad(h, params, u_full, retain_graph=True, allow_unused=True)
    full = flatten(g_up, params) + flatten(g_low, params)                              # [P]
    return float(loss.detach()), full, h, u_full


def decompose(model: Transformer, tokens: torch.Tensor, targets: torch.Tensor, layer: int,
              groups: Sequence[Sequence[int]]) -> GradientParts:
    """The three parts at (layer, G) for every group G of positions, in a bounded number of passes:
    direct_G = sum_{i in G} direct_i, precache_G = sum_{i in G} precache_i, shared_G = grad L with sg(layer, G)
    (all of G detached at once), which is grad L - direct_G - precache_G. A group of one position gives the
    per-position parts of the module docstring."""
    params = list(model.parameters())
    loss, full, h, u_full = full_gradient(model, tokens, targets, layer)
    h_my = h.detach().requires_grad_(True)
    u_own = torch.autograd.grad(_loss(model.run_from(h_my, layer, "myopic"), targets), h_my)[0]  # [B, T, d]
    u_other = u_full - u_own                                                           # [B, T, d]

    # h_k at positions <= i depends on tokens up to i only (causal), so the per-group passes run on the prefix
    # that covers every tracked position: same numbers, shorter tensors.
    t_max = max(max(g) for g in groups) + 1
    h_low = h if t_max == h.shape[1] else model.resid(tokens[:, :t_max], layer)       # [B, t_max, d]
    rows = []
    for u in (u_own[:, :t_max], u_other[:, :t_max]):
        for group in groups:
            mask = torch.zeros(t_max, 1, dtype=h.dtype, device=h.device)
            mask[list(group)] = 1.0
            g = torch.autograd.grad(h_low, params, u * mask, retain_graph=True, allow_unused=True)
            rows.append(flatten(g, params))
    n = len(groups)
    parts = torch.stack(rows)                                                          # [2n, P]
    direct, precache = parts[:n], parts[n:]
    shared = full[None] - direct - precache                                            # [n, P]
    return GradientParts(loss=loss, full=full, direct=direct, precache=precache, shared=shared)


def decompose_literal(model: Transformer, tokens: torch.Tensor, targets: torch.Tensor, layer: int,
                      groups: Sequence[Sequence[int]]) -> GradientParts:
    """The same parts straight from the definitions: direct_i = grad L_i - grad L_i with sg(layer, i) summed
    over the group, shared_G = grad L with sg(layer, G), precache_G = grad L - shared_G - direct_G
    (for checks: one stop-gradient forward pass per position and per group)."""
    params = list(model.parameters())
    T = tokens.shape[1]

    def grad(scalar: torch.Tensor) -> torch.Tensor:
        return flatten(torch.autograd.grad(scalar, params, retain_graph=True, allow_unused=True), params)

    losses = token_losses(model(tokens), targets)                                      # [B, T]
    loss = losses.mean()
    full = grad(loss)
    direct, precache, shared = [], [], []
    for group in groups:
        direct_G = torch.zeros_like(full)
        for i in group:
            losses_sg = token_losses(model(tokens, detach=(layer, [i])), targets)      # [B, T]
            direct_G += grad(losses[:, i].mean() / T) - grad(losses_sg[:, i].mean() / T)
        shared_G = grad(token_losses(model(tokens, detach=(layer, group)), targets).mean())
        direct.append(direct_G)
        shared.append(shared_G)
        precache.append(full - shared_G - direct_G)
    return GradientParts(loss=float(loss.detach()), full=full, direct=torch.stack(direct),
                         precache=torch.stack(precache), shared=torch.stack(shared))


def precache_through(model: Transformer, tokens: torch.Tensor, targets: torch.Tensor, layer: int,
                     i: int) -> torch.Tensor:
    """Pre-caching at (layer, i) computed independently: grad of the other positions' losses through (layer, i)
    only, i.e. grad sum_{j != i} L_j minus the same with sg(layer, i). [P]"""
    params = list(model.parameters())
    T = tokens.shape[1]
    keep = torch.ones(T, dtype=torch.bool, device=tokens.device)
    keep[i] = False

    def others(logits: torch.Tensor) -> torch.Tensor:
        return token_losses(logits, targets)[:, keep].sum(1).mean() / T

    g = torch.autograd.grad(others(model(tokens)), params, allow_unused=True)
    g_sg = torch.autograd.grad(others(model(tokens, detach=(layer, [i]))), params, allow_unused=True)
    return flatten(g, params) - flatten(g_sg, params)
