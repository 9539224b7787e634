"""How good an SAE is, all batched: reconstruction (L0, MSE, fraction of variance explained), latent usage
(dead and dense fractions), the single-token feature fraction, and cross-entropy loss recovered with the SAE
spliced into a model at its hook.

Definitions (fixed here, before any run):
- L0: mean over eval tokens of the number of non-zero latents.
- MSE: mean over tokens and dimensions of (x - x_hat)^2, in raw activation units.
- FVE: 1 - sum ||x - x_hat||^2 / sum ||x - mean(x)||^2 over the eval set.
- dead: a latent that never fires (activation > 0) on the eval set; dead_frac = dead / d_sae.
- dense: a latent that fires on more than DENSE_THRESHOLD = 10% of eval tokens; dense_frac = dense / d_sae.
- single-token: a live latent whose top TOP_K = 20 activations (largest over the eval set, positive only) fall
  on one token id more than SINGLE_TOKEN_SHARE = 50% of the time (strictly more than half). A latent with fewer
  than 20 positive activations on the eval set ("rare") is judged on all those it has (one activation: share 1);
  `rare_frac` reports how many live latents that applies to. Ties in activation value at the 20th place are
  broken in torch.topk's order; ties among the same token do not change the share, and exact float ties between
  different tokens do not arise in practice. single_token_frac = single-token latents / live latents.
- single-token, common latents (`single_token_frac_common`): the same rule counted only over latents with at
  least MIN_ACTIVATIONS = 20 positive activations on the eval set, so every judged latent is judged on a full
  top-20 (a latent seen firing once is "single-token" by construction, which says nothing about it); the
  denominator is those latents (`n_common`).
- token-explained variance (`token_r2`): for each common latent, how much of its activation's variance over
  all eval positions (zeros included) the current token id explains, cross-validated so that a latent whose
  activation has nothing to do with the token scores about 0 (below 0 where token ids recur only a few times)
  however many distinct tokens there are. The eval
  positions are cut in two halves (first and second half of the eval set, whole sequences); each half's
  activations are predicted by the mean activation of the same token id on the other half (the other half's
  overall mean for an id it never saw), R^2 = 1 - SSE / SS around the half's own mean, and the latent's score is
  the mean of the two halves' R^2 (it can be negative). `token_r2` is the mean over common latents;
  `token_r2_frac` the share of common latents scoring above TOKEN_R2_HIGH = 0.5.
- CE loss recovered: 1 - (CE_sae - CE_clean) / (CE_zero - CE_clean), next-token cross-entropy in nats per
  token over the eval sequences, with the hook's activation replaced by the SAE reconstruction (CE_sae) or by
  zeros (CE_zero). 1 means the SAE loses nothing; 0 means it is as bad as deleting the activation.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from claimgraph.experiments.substrate.hooks import HookedModel

from .base import SparseAutoencoder

TOP_K = 20  # top activations per latent examined for the single-token test
SINGLE_TOKEN_SHARE = 0.5  # a latent is single-token when strictly more than this share of them is one token id
DENSE_THRESHOLD = 0.1  # a latent is dense when it fires on more than this fraction of eval tokens
MIN_ACTIVATIONS = 20  # a latent is "common" (judged by single_token_frac_common, token_r2) from this many firings
TOKEN_R2_HIGH = 0.5  # token_r2_frac: common latents whose cross-validated token R^2 exceeds this


@dataclass
class FeatureReport:
    """Per-latent results of an evaluation; tensors on CPU, indexed by latent."""

    metrics: dict[str, float]
    freq: Tensor  # [d_sae] fraction of eval tokens on which the latent fires
    top_token: Tensor  # [d_sae] long: most frequent token id among its top activations (-1: dead or no tokens)
    top_token_share: Tensor  # [d_sae] share of its top activations on that token (nan: dead or no tokens)
    n_top: Tensor  # [d_sae] long: how many top activations were examined (min(TOP_K, times it fired))
    top_acts: Tensor  # [TOP_K, d_sae] largest activations, descending (0 where fewer)
    top_ids: Tensor  # [TOP_K, d_sae] long: token ids at those activations (-1 where fewer)


def _merge_topk(vals: Tensor, ids: Tensor, new_vals: Tensor, new_ids: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Running column-wise top-k: vals/ids [k, d] merged with a batch new_vals/new_ids [B, d]."""
    all_vals = torch.cat([vals, new_vals], dim=0)  # [k + B, d]
    all_ids = torch.cat([ids, new_ids], dim=0)  # [k + B, d]
    top, pos = all_vals.topk(k, dim=0)  # [k, d]
    return top, all_ids.gather(0, pos)


def token_shares(top_acts: Tensor, top_ids: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """For each latent (column), the modal token id among its positive top activations, that token's share,
    and the number of positive top activations. Inputs [k, d]; outputs [d] (token -1 and share nan if none)."""
    valid = (top_acts > 0).t()  # [d, k]
    ids = top_ids.t()  # [d, k]
    same = (ids[:, :, None] == ids[:, None, :]) & valid[:, None, :]  # [d, k, k] slot j matches slot i
    counts = same.sum(dim=-1).masked_fill(~valid, 0)  # [d, k] occurrences of slot i's token
    best, where = counts.max(dim=-1)  # [d]
    n = valid.sum(dim=-1)  # [d]
    token = ids.gather(1, where[:, None]).squeeze(1).masked_fill(n == 0, -1)  # [d]
    share = (best.float() / n.clamp_min(1).float()).masked_fill(n == 0, float("nan"))  # [d]
    return token, share, n


@torch.no_grad()
def evaluate_sae(sae: SparseAutoencoder, acts: Tensor, token_ids: Tensor | None = None, *,
                 batch_size: int = 4096, top_k: int = TOP_K) -> FeatureReport:
    """Reconstruction, usage and (with the token id at each activation's position) single-token metrics of
    `sae` on raw activations acts [N, d_in]."""
    N, d = acts.shape
    assert d == sae.d_in, f"acts have width {d}, the SAE expects {sae.d_in}"
    assert token_ids is None or token_ids.shape == (N,), f"token_ids must be [{N}], got {tuple(token_ids.shape)}"
    dev = sae.W_enc.device
    k = min(top_k, N)
    sse = torch.zeros((), dtype=torch.float64, device=dev)
    sum_x = torch.zeros(d, dtype=torch.float64, device=dev)  # [d]
    sum_x2 = torch.zeros((), dtype=torch.float64, device=dev)
    l0_sum = torch.zeros((), dtype=torch.float64, device=dev)
    fires = torch.zeros(sae.d_sae, dtype=torch.float64, device=dev)  # [d_sae]
    top_acts = torch.zeros(k, sae.d_sae, device=dev)  # [k, d_sae]
    top_ids = torch.full((k, sae.d_sae), -1, dtype=torch.long, device=dev)  # [k, d_sae]
    for start in range(0, N, batch_size):
        x = acts[start:start + batch_size].to(device=dev, dtype=sae.W_enc.dtype)  # [B, d]
        x_hat, f = sae(x, output_features=True)  # [B, d], [B, d_sae]
        x64 = x.double()
        sse += (x64 - x_hat.double()).pow(2).sum()
        sum_x += x64.sum(dim=0)
        sum_x2 += x64.pow(2).sum()
        active = f > 0  # [B, d_sae]
        l0_sum += (f != 0).sum()
        fires += active.sum(dim=0)
        if token_ids is not None:
            ids = token_ids[start:start + batch_size].to(dev)[:, None].expand(-1, sae.d_sae)  # [B, d_sae]
            top_acts, top_ids = _merge_topk(top_acts, top_ids, f.clamp_min(0), ids, k)
    sst = sum_x2 - sum_x.pow(2).sum() / N
    freq = (fires / N).float()  # [d_sae]
    live = freq > 0
    metrics: dict[str, float] = {
        "l0": float(l0_sum / N),
        "mse": float(sse / (N * d)),
        "fve": float(1.0 - sse / sst.clamp_min(1e-30)),
        "dead_frac": float((~live).float().mean()),
        "dense_frac": float((freq > DENSE_THRESHOLD).float().mean()),
        "n_live": float(live.sum()),
    }
    token = torch.full((sae.d_sae,), -1, dtype=torch.long)
    share = torch.full((sae.d_sae,), float("nan"))
    n_top = torch.zeros(sae.d_sae, dtype=torch.long)
    if token_ids is not None:
        token, share, n_top = (t.cpu() for t in token_shares(top_acts, top_ids))
        n_live = int(live.sum())
        single = (share > SINGLE_TOKEN_SHARE) & live.cpu()  # nan compares False
        metrics["single_token_frac"] = float(single.sum()) / n_live if n_live else float("nan")
        metrics["rare_frac"] = float(((n_top < k) & live.cpu()).sum()) / n_live if n_live else float("nan")
        metrics["mean_top_token_share"] = float(share[live.cpu()].mean()) if n_live else float("nan")
        common = (fires.cpu() >= MIN_ACTIVATIONS)
        n_common = int(common.sum())
        metrics["n_common"] = float(n_common)
        metrics["single_token_frac_common"] = (float((single & common).sum()) / n_common if n_common
                                               else float("nan"))
        r2 = token_r2(sae, acts, token_ids, batch_size=batch_size)                 # [d_sae]
        metrics["token_r2"] = float(r2[common].mean()) if n_common else float("nan")
        metrics["token_r2_frac"] = float((r2[common] > TOKEN_R2_HIGH).float().mean()) if n_common else float("nan")
    return FeatureReport(metrics=metrics, freq=freq.cpu(), top_token=token, top_token_share=share, n_top=n_top,
                         top_acts=top_acts.cpu(), top_ids=top_ids.cpu())


@torch.no_grad()
def token_r2(sae: SparseAutoencoder, acts: Tensor, token_ids: Tensor, *, batch_size: int = 4096) -> Tensor:
    """Cross-validated share of each latent's activation variance that the current token id explains, [d_sae]
    float32 on CPU (definition in the module docstring; nan where a half has no variance)."""
    N = acts.shape[0]
    dev = sae.W_enc.device
    uniq, inv = torch.unique(token_ids.cpu(), return_inverse=True)                  # [U], [N]
    U, D = len(uniq), sae.d_sae
    half = torch.arange(N) >= N // 2                                                 # [N] False: first half
    S = torch.zeros(2, U, D, dtype=torch.float64)                                    # per half, id: sum of f
    Q = torch.zeros(2, U, D, dtype=torch.float64)                                    # per half, id: sum of f^2
    C = torch.zeros(2, U, dtype=torch.float64)                                       # per half, id: count
    for start in range(0, N, batch_size):
        x = acts[start:start + batch_size].to(device=dev, dtype=sae.W_enc.dtype)      # [B, d]
        f = sae.encode(x).double().cpu()                                             # [B, d_sae]
        h = half[start:start + batch_size].long()                                    # [B]
        idx = h * U + inv[start:start + batch_size]                                  # [B] row in the [2U] view
        S.view(2 * U, D).index_add_(0, idx, f)
        Q.view(2 * U, D).index_add_(0, idx, f * f)
        C.view(2 * U).index_add_(0, idx, torch.ones(len(idx), dtype=torch.float64))
    r2 = []
    for a, b in ((0, 1), (1, 0)):  # predict half b from half a's per-token means
        n_b = C[b].sum()
        mean_a = S[a].sum(0) / C[a].sum().clamp_min(1)                               # [D]
        seen = (C[a] > 0)[:, None]                                                   # [U, 1]
        pred = torch.where(seen, S[a] / C[a].clamp_min(1)[:, None], mean_a[None])    # [U, D]
        sse = (Q[b] - 2 * pred * S[b] + C[b][:, None] * pred * pred).sum(0)          # [D]
        mu_b = S[b].sum(0) / n_b.clamp_min(1)                                         # [D]
        sst = Q[b].sum(0) - n_b * mu_b * mu_b                                         # [D]
        r2.append(torch.where(sst > 1e-12, 1 - sse / sst.clamp_min(1e-300), torch.full_like(sst, float("nan"))))
    return ((r2[0] + r2[1]) / 2).float()


def _next_token_ce_sum(logits: Tensor, tokens: Tensor) -> Tensor:
    """Sum over positions of next-token cross-entropy: logits [B, T, V] predict tokens [B, T] shifted by one."""
    V = logits.shape[-1]
    return F.cross_entropy(logits[:, :-1].reshape(-1, V).float(), tokens[:, 1:].reshape(-1), reduction="sum")


@torch.no_grad()
def ce_loss_recovered(model: HookedModel, sae: SparseAutoencoder, tokens: Tensor, hook_name: str, *,
                      batch_size: int = 32) -> dict[str, float]:
    """Next-token CE of `model` on tokens [n, T] clean, with the activation at `hook_name` replaced by the SAE
    reconstruction, and zero-ablated; and the fraction of the zero-ablation loss the SAE recovers."""
    dev = model.device

    def splice(act: Tensor, name: str) -> Tensor:
        flat = act.reshape(*act.shape[:2], -1)  # [B, T, d_in] (per-head hooks: heads flattened)
        return sae(flat.to(sae.W_enc.dtype)).to(act.dtype).reshape(act.shape)

    def zero(act: Tensor, name: str) -> Tensor:
        return torch.zeros_like(act)

    totals = torch.zeros(3, dtype=torch.float64)  # clean, sae, zero
    count = 0
    for batch in tokens.split(batch_size):
        batch = batch.to(dev)  # [B, T]
        totals[0] += float(_next_token_ce_sum(model(batch), batch))
        totals[1] += float(_next_token_ce_sum(model.run_with_hooks(batch, [(hook_name, splice)]), batch))
        totals[2] += float(_next_token_ce_sum(model.run_with_hooks(batch, [(hook_name, zero)]), batch))
        count += batch.shape[0] * (batch.shape[1] - 1)
    clean, with_sae, zeroed = (totals / count).tolist()
    denom = zeroed - clean
    recovered = 1.0 - (with_sae - clean) / denom if abs(denom) > 1e-9 else float("nan")
    return {"ce_clean": clean, "ce_sae": with_sae, "ce_zero": zeroed, "ce_recovered": recovered}
