"""Sparse autoencoders: the one SAE recipe (`recipe.SaeRecipe`, nested in every kind's params that trains an
SAE), ReLU (Towards Monosemanticity) and TopK (Gao et al. 2024) trainers, metrics, save/load in the SAELens
layout both ways (JumpReLU SAEs read from SAELens, inference only), and the shared cache of SAEs that feature analyses read (`provision`).

Importing this package does not import torch: `SaeRecipe` and `SaeConfig` are plain pydantic, and the torch
parts below load on first use of their name (`from claimgraph.experiments.sae import train_sae`).
"""
from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from .config import SaeConfig
from .recipe import SaeRecipe

if TYPE_CHECKING:
    from .base import SaeTrainer, SparseAutoencoder
    from .init import activation_scale, geometric_median
    from .io import SaeSource, load_sae, sae_from_path, save_sae
    from .jumprelu import JumpReluSAE
    from .metrics import FeatureReport, ce_loss_recovered, evaluate_sae
    from .relu import ReluSAE, ReluTrainer
    from .topk import TopKSAE, TopKTrainer
    from .train import make_trainer, train_sae

_LAZY = {
    "SaeTrainer": "base", "SparseAutoencoder": "base", "activation_scale": "init", "geometric_median": "init",
    "load_sae": "io", "save_sae": "io", "sae_from_path": "io", "SaeSource": "io", "JumpReluSAE": "jumprelu", "FeatureReport": "metrics", "ce_loss_recovered": "metrics",
    "evaluate_sae": "metrics", "ReluSAE": "relu", "ReluTrainer": "relu", "TopKSAE": "topk", "TopKTrainer": "topk",
    "make_trainer": "train", "train_sae": "train",
}

__all__ = [
    "SaeConfig", "SaeRecipe", "SparseAutoencoder", "SaeTrainer", "ReluSAE", "ReluTrainer", "TopKSAE", "TopKTrainer",
    "make_trainer", "train_sae", "evaluate_sae", "ce_loss_recovered", "FeatureReport", "save_sae", "load_sae",
    "sae_from_path", "SaeSource", "JumpReluSAE",
    "activation_scale", "geometric_median",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
