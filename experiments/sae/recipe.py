"""The one SAE recipe: how every kind that trains an SAE trains it, with one set of defaults.

Pure pydantic (no torch). A kind nests a `SaeRecipe` in its Params as `sae` (set in part from the command line:
`--param sae.steps=500`); a kind whose SAEs differ from these defaults says so in its field's default (the
emergence sweep's TopK SAEs), never with settings of its own. `SaeRecipe.config` turns a recipe into the
complete `SaeConfig` of one training run for activations of a given width: the schedules (L1 and learning-rate
warm-up, dead-latent resampling, the dead-latent window) follow from the number of steps.
"""
from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .config import SaeConfig

EVAL_SEED_OFFSET = 1_000_003  # eval sequences are sampled with seed + this, apart from the training sequences
_HOOK = re.compile(r"(hook_embed|hook_pos_embed|ln_final\.hook_normalized|blocks\.\d+\.("
                   r"hook_resid_pre|hook_resid_mid|hook_resid_post|hook_attn_out|hook_mlp_out|"
                   r"mlp\.hook_pre|mlp\.hook_post|attn\.hook_[qkvz]))")


class SaeRecipe(BaseModel):
    """How an SAE is trained on a model's activations at one hook (defaults: one seed in ~20 s on toy:default)."""

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

    @field_validator("hook")
    @classmethod
    def _hook_name(cls, v: str) -> str:
        if not _HOOK.fullmatch(v):
            raise ValueError(f"hook {v!r} is not a per-position hook name such as 'blocks.0.mlp.hook_post', "
                             "'blocks.1.hook_resid_post' or 'hook_embed'")
        return v

    @field_validator("resample_fractions")
    @classmethod
    def _fractions(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        if any(not 0.0 < f < 1.0 for f in v):
            raise ValueError(f"resample_fractions {v} must lie strictly between 0 and 1")
        return v

    @model_validator(mode="after")
    def _sizes(self) -> SaeRecipe:
        if self.train_tokens < self.batch_size:
            raise ValueError(f"train_tokens={self.train_tokens} is smaller than batch_size={self.batch_size}")
        if self.architecture == "topk" and self.d_sae is not None and self.k > self.d_sae:
            raise ValueError(f"k={self.k} exceeds d_sae={self.d_sae}")
        return self

    def config(self, d_in: int, seed: int, *, model_name: str | None = None, dataset_path: str | None = None,
               context_size: int | None = None) -> SaeConfig:
        """The SaeConfig this recipe trains for activations of width d_in."""
        return SaeConfig(
            architecture=self.architecture, d_in=d_in, d_sae=self.d_sae or self.expansion * d_in, k=self.k,
            l1_coefficient=self.l1_coefficient, l1_warmup_steps=self.steps // 10,
            resample_steps=(tuple(sorted({int(f * self.steps) for f in self.resample_fractions}))
                            if self.architecture == "relu" else ()),
            dead_window_tokens=max(1, self.batch_size * self.steps // 8),
            steps=self.steps, batch_size=self.batch_size, lr=self.lr, lr_warmup_steps=self.steps // 20, seed=seed,
            model_name=model_name, hook_name=self.hook, dataset_path=dataset_path, context_size=context_size)
