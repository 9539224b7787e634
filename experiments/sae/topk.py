"""TopK SAE (Gao et al. 2024): keep the k largest pre-activations per token (then ReLU), unit-norm decoder rows,
and the AuxK loss that lets dead latents learn to reconstruct the residual error.

Training decodes sparsely: only the k kept latents' decoder rows are gathered and summed (embedding_bag), so
the decoder costs B * k * d_in instead of the dense B * d_sae * d_in."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import EPS, LossParts, SaeTrainer, SparseAutoencoder


def topk_parts(pre: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The k largest entries of each row of `pre` [..., d], after ReLU, and their indices: ([..., k], [..., k])."""
    vals, idx = pre.topk(k, dim=-1, sorted=False)  # [..., k]
    return vals.relu(), idx


def topk_activation(pre: Tensor, k: int) -> Tensor:
    """Zero all but the k largest entries of each row of `pre` [..., d]; the kept ones go through ReLU."""
    vals, idx = topk_parts(pre, k)  # [..., k]
    return torch.zeros_like(pre).scatter(-1, idx, vals)  # [..., d]


def sparse_decode(vals: Tensor, idx: Tensor, W_dec: Tensor) -> Tensor:
    """sum_j vals[b, j] * W_dec[idx[b, j]]: vals/idx [B, k], W_dec [d_sae, d_in] -> [B, d_in] (no bias)."""
    return F.embedding_bag(idx, W_dec, per_sample_weights=vals.to(W_dec.dtype), mode="sum")  # [B, d_in]


def normalized_mse(x_hat: Tensor, x: Tensor) -> Tensor:
    """sum ||x - x_hat||^2 / sum ||x - mean(x)||^2 over the batch: 1.0 means no better than the batch mean."""
    return (x - x_hat).pow(2).sum() / (x - x.mean(dim=0)).pow(2).sum().clamp_min(EPS)


class TopKSAE(SparseAutoencoder):
    architecture = "topk"

    def activation(self, pre: Tensor) -> Tensor:
        return topk_activation(pre, self.cfg.k)  # [..., d_sae], at most k non-zero per row

    def sparse_forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(pre-activations [N, d_sae], kept values [N, k], their latents [N, k], reconstruction [N, d_in]) of
        x [N, d_in], decoding only the kept latents' rows."""
        pre = self.pre_acts(x)  # [N, d_sae]
        vals, idx = topk_parts(pre, self.cfg.k)  # [N, k]
        return pre, vals, idx, sparse_decode(vals, idx, self.W_dec) + self.b_dec

    def forward(self, x: Tensor, output_features: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        lead = x.shape[:-1]
        pre, vals, idx, x_hat = self.sparse_forward(x.reshape(-1, self.d_in))  # [N, ...]
        x_hat = x_hat.reshape(*lead, self.d_in)  # [..., d_in]
        if not output_features:
            return x_hat
        f = torch.zeros_like(pre).scatter(-1, idx, vals).reshape(*lead, self.d_sae)  # [..., d_sae]
        return x_hat, f


class TopKTrainer(SaeTrainer):
    """Objective: normalised MSE + aux_coefficient * AuxK, where AuxK is the normalised MSE of reconstructing the
    (detached) residual x - x_hat from the top k_aux pre-activations among dead latents (0 when none are dead)."""

    sae_class = TopKSAE
    sae: TopKSAE

    def aux_loss(self, x: Tensor, x_hat: Tensor, pre: Tensor) -> Tensor:
        dead = self.dead_mask()  # [d_sae]
        n_dead = int(dead.sum())
        if n_dead == 0:
            return torch.zeros((), device=x.device)
        k_aux = min(self.cfg.k_aux_effective, n_dead)
        masked = pre.masked_fill(~dead, float("-inf"))  # [B, d_sae] only dead latents compete
        vals, idx = topk_parts(masked, k_aux)  # [B, k_aux]
        residual = (x - x_hat).detach()  # [B, d_in]
        return normalized_mse(sparse_decode(vals, idx, self.sae.W_dec), residual)

    def _losses(self, x: Tensor, step: int) -> LossParts:
        pre, vals, idx, x_hat = self.sae.sparse_forward(x)  # [B, d_sae], [B, k], [B, k], [B, d_in]
        nonzero = vals.detach() != 0  # [B, k] (a kept pre-activation <= 0 is 0 after the ReLU)
        fired = torch.zeros(self.cfg.d_sae, dtype=torch.bool, device=x.device)
        fired[idx[nonzero]] = True  # [d_sae]
        recon = normalized_mse(x_hat, x)
        aux = self.aux_loss(x, x_hat, pre)
        loss = recon + self.cfg.aux_coefficient * aux
        return LossParts(loss=loss, x_hat=x_hat, fired=fired, l0=nonzero.sum(dim=-1).float().mean(),
                         terms={"recon": recon.detach(), "auxk": aux.detach()})
