"""The one SAE recipe: how every kind that trains an SAE trains it, with one set of defaults.

Pure pydantic (no torch). A kind nests a `SaeRecipe` in its Params (`sae`); `SaeRecipe.config` turns it into the
full `SaeConfig` of one training run for activations of a given width.
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from .config import SaeConfig


class SaeRecipe(BaseModel):
    """How the SAE that features are read from is trained (defaults: the `sae` job's, one seed in ~20 s)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    hook: str = "blocks.0.mlp.hook_post"  # activation site (TransformerLens name)
    architecture: Literal["relu", "topk"] = "relu"  # relu: Towards Monosemanticity L1; topk: Gao et al.
    expansion: int = Field(2, ge=1)  # d_sae = expansion * width of the hook (ignored when d_sae is set)
    d_sae: int | None = Field(None, ge=1)  # explicit dictionary size
    k: int = Field(16, ge=1)  # latents kept per token (topk)
    l1_coefficient: float = Field(1.0, ge=0.0)  # L1 weight (relu), on activations normalised to mean ||x||^2 = d
    steps: int = Field(1000, ge=1)  # optimiser steps
    batch_size: int = Field(256, ge=1)  # activation vectors per step
    lr: float = Field(1e-3, gt=0.0)  # Adam learning rate
    train_tokens: int = Field(65_536, ge=1)  # activation vectors collected for training (whole sequences)
    resample_fractions: tuple[float, ...] = (0.25, 0.5)  # relu: resample dead latents at these fractions of steps

    def config(self, d_in: int, seed: int, *, model_name: str | None, dataset_path: str | None,
               context_size: int | None) -> SaeConfig:
        """The SaeConfig this recipe trains for activations of width d_in."""
        return SaeConfig(
            architecture=self.architecture, d_in=d_in, d_sae=self.d_sae or self.expansion * d_in, k=self.k,
            l1_coefficient=self.l1_coefficient, l1_warmup_steps=self.steps // 10,
            resample_steps=(tuple(sorted({int(f * self.steps) for f in self.resample_fractions}))
                            if self.architecture == "relu" else ()),
            dead_window_tokens=max(1, self.batch_size * self.steps // 8),
            steps=self.steps, batch_size=self.batch_size, lr=self.lr, lr_warmup_steps=self.steps // 20, seed=seed,
            model_name=model_name, hook_name=self.hook, dataset_path=dataset_path, context_size=context_size)
