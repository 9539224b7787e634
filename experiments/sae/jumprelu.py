"""JumpReLU SAE (Rajamanoharan et al. 2024; Gemma Scope), for inference: a latent is its ReLU'd pre-activation
where that exceeds the latent's own threshold, else 0. claimgraph loads these from SAELens folders (SAELens also
saves its BatchTopK SAEs in this form); it does not train them."""
from __future__ import annotations

import torch
from torch import Tensor

from .base import SparseAutoencoder
from .config import SaeConfig


class JumpReluSAE(SparseAutoencoder):
    architecture = "jumprelu"

    def __init__(self, cfg: SaeConfig, *, generator: torch.Generator | None = None):
        super().__init__(cfg, generator=generator)
        # per-latent threshold [d_sae]; a buffer: it moves and saves with the SAE but no trainer here updates it
        self.register_buffer("threshold", torch.zeros(cfg.d_sae))
        self.threshold: Tensor

    def activation(self, pre: Tensor) -> Tensor:
        return pre.relu() * (pre > self.threshold).to(pre.dtype)  # [..., d_sae]
