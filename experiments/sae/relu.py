"""ReLU SAE with an L1 penalty (Towards Monosemanticity): untied weights, unit-norm decoder rows, b_dec at the
geometric median, L1 warm-up, and resampling of dead latents at scheduled steps."""
from __future__ import annotations

from torch import Tensor

from .base import LossParts, SaeTrainer, SparseAutoencoder
from .schedules import l1_factor


class ReluSAE(SparseAutoencoder):
    architecture = "relu"

    def activation(self, pre: Tensor) -> Tensor:
        return pre.relu()  # [..., d_sae]


class ReluTrainer(SaeTrainer):
    """Objective: mean_b ||x - x_hat||^2 + l1 * warmup(step) * mean_b ||f||_1 (decoder rows have unit norm,
    so ||f||_1 is the L1 norm of the latent contributions)."""

    sae_class = ReluSAE

    def _losses(self, x: Tensor, step: int) -> LossParts:
        x_hat, f = self.sae(x, output_features=True)  # [B, d_in], [B, d_sae]
        recon = (x - x_hat).pow(2).sum(dim=-1).mean()
        l1 = f.sum(dim=-1).mean()  # f >= 0 after ReLU, so this is ||f||_1
        coeff = self.cfg.l1_coefficient * l1_factor(step, warmup=self.cfg.l1_warmup_steps)
        loss = recon + coeff * l1
        return LossParts(loss=loss, x_hat=x_hat, f=f, terms={"recon": recon.detach(), "l1": l1.detach()})
