"""The configuration of one SAE training run: architecture, sizes, optimisation and provenance.

Pure pydantic (no torch). The same object is stored as-is in the saved SAE's `cfg.json` (under the key
`claimgraph`) and in the run record, so a saved SAE says exactly how it was made. What the SAE recipe decides
(architecture, k, L1, steps, batch, learning rate and the schedules that follow from them) has no default here:
a config is made from a recipe (`SaeRecipe.config`, the one set of defaults) or names every one of those fields.
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Architecture = Literal["relu", "topk", "jumprelu"]


class SaeConfig(BaseModel):
    """Everything that determines an SAE and its training, given the activations it is trained on."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    architecture: Architecture  # relu: Towards Monosemanticity L1 recipe; topk: Gao et al. 2024;
    #                             jumprelu: inference only (per-latent thresholds, read from SAELens)
    d_in: int = Field(gt=0)  # width of the activation vectors
    d_sae: int = Field(gt=0)  # number of latents (dictionary size)

    # ReLU recipe
    l1_coefficient: float = Field(ge=0.0)  # weight of mean ||f||_1 against mean ||x - x_hat||^2 (normalised acts)
    l1_warmup_steps: int = Field(ge=0)  # L1 weight ramps linearly from 0 over these steps
    resample_steps: tuple[int, ...]  # steps after which dead latents are re-initialised (ReLU only)
    resample_encoder_scale: float = Field(0.2, gt=0.0)  # resampled encoder rows: this times the mean live norm

    # TopK recipe
    k: int = Field(gt=0)  # latents kept per token
    k_aux: int | None = Field(None, gt=0)  # dead latents used by the AuxK loss; None -> d_in // 2
    aux_coefficient: float = Field(1 / 32, ge=0.0)  # weight of the AuxK loss (Gao et al.: 1/32)

    # Dead latents (both): a latent is dead once it has not fired on this many consecutive training tokens
    dead_window_tokens: int = Field(gt=0)

    # Optimisation
    steps: int = Field(gt=0)  # optimiser steps
    batch_size: int = Field(gt=0)  # activation vectors per step
    lr: float = Field(gt=0.0)  # Adam learning rate after warm-up
    adam_betas: tuple[float, float] = (0.9, 0.999)  # Adam betas
    lr_warmup_steps: int = Field(ge=0)  # learning rate ramps linearly from 0 over these steps
    lr_decay_start: float | None = Field(0.8, gt=0.0, le=1.0)  # fraction of steps after which lr decays linearly to 0

    # Initialisation and normalisation
    normalize_activations: bool = True  # train on x * s with mean ||s x||^2 = d_in; s folded into saved weights
    b_dec_init: Literal["geometric_median", "mean", "zeros"] = "geometric_median"  # pre-encoder bias start point
    init_sample_size: int = Field(4096, gt=0)  # activation vectors used for the scale and the b_dec start point
    seed: int = 0  # initialisation and batch order

    # Provenance (written to the SAELens cfg.json; not used in training)
    model_name: str | None = None  # e.g. "toy:default"
    hook_name: str | None = None  # e.g. "blocks.0.mlp.hook_post"
    dataset_path: str | None = None  # e.g. "synthetic:default"
    context_size: int | None = None  # tokens per sequence the activations came from

    @model_validator(mode="after")
    def _check(self) -> SaeConfig:
        if self.architecture == "topk" and self.k > self.d_sae:
            raise ValueError(f"k={self.k} exceeds d_sae={self.d_sae}; choose k <= d_sae")
        if any(s < 0 or s >= self.steps for s in self.resample_steps):
            raise ValueError(f"resample_steps {self.resample_steps} must lie in [0, steps={self.steps})")
        return self

    @property
    def k_aux_effective(self) -> int:
        """The AuxK width actually used: k_aux, or d_in // 2 (at least 1), never more than d_sae."""
        return min(self.d_sae, self.k_aux if self.k_aux is not None else max(1, self.d_in // 2))
