"""TopK SAE (Gao et al. 2024): keep the k largest pre-activations per token (then ReLU), unit-norm decoder rows,
and the AuxK loss that lets dead latents learn to reconstruct the residual error."""
from __future__ import annotations

import torch
from torch import Tensor

from .base import EPS, LossParts, SaeTrainer, SparseAutoencoder


def topk_activation(pre: Tensor, k: int) -> Tensor:
    """Zero all but the k largest entries of each row of `pre` [..., d]; the kept ones go through ReLU."""
    vals, idx = pre.topk(k, dim=-1, sorted=False)  # [..., k]
    return torch.zeros_like(pre).scatter(-1, idx, vals.relu())  # [..., d]


def normalized_mse(x_hat: Tensor, x: Tensor) -> Tensor:
    """sum ||x - x_hat||^2 / sum ||x - mean(x)||^2 over the batch: 1.0 means no better than the batch mean."""
    return (x - x_hat).pow(2).sum() / (x - x.mean(dim=0)).pow(2).sum().clamp_min(EPS)


class TopKSAE(SparseAutoencoder):
    architecture = "topk"

    def activation(self, pre: Tensor) -> Tensor:
        return topk_activation(pre, self.cfg.k)  # [..., d_sae], at most k non-zero per row


class TopKTrainer(SaeTrainer):
    """Objective: normalised MSE + aux_coefficient * AuxK, where AuxK is the normalised MSE of reconstructing the
    (detached) residual x - x_hat from the top k_aux pre-activations among dead latents (0 when none are dead)."""

    sae_class = TopKSAE

    def aux_loss(self, x: Tensor, x_hat: Tensor, pre: Tensor) -> Tensor:
        dead = self.dead_mask()  # [d_sae]
        n_dead = int(dead.sum())
        if n_dead == 0:
            return torch.zeros((), device=x.device)
        k_aux = min(self.cfg.k_aux_effective, n_dead)
        masked = pre.masked_fill(~dead, float("-inf"))  # [B, d_sae] only dead latents compete
        f_aux = topk_activation(masked, k_aux)  # [B, d_sae]
        residual = (x - x_hat).detach()  # [B, d_in]
        return normalized_mse(f_aux @ self.sae.W_dec, residual)

    def _losses(self, x: Tensor, step: int) -> LossParts:
        pre = self.sae.pre_acts(x)  # [B, d_sae]
        f = self.sae.activation(pre)  # [B, d_sae]
        x_hat = self.sae.decode(f)  # [B, d_in]
        recon = normalized_mse(x_hat, x)
        aux = self.aux_loss(x, x_hat, pre)
        loss = recon + self.cfg.aux_coefficient * aux
        return LossParts(loss=loss, x_hat=x_hat, f=f, terms={"recon": recon.detach(), "auxk": aux.detach()})
