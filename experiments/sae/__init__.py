"""Sparse autoencoders: ReLU (Towards Monosemanticity) and TopK (Gao et al. 2024) trainers, metrics, save/load in
the SAELens layout both ways, and JumpReLU SAEs read from SAELens (inference only).
Imports torch; job modules import this package inside `run` only."""
from .base import SaeTrainer, SparseAutoencoder
from .config import SaeConfig
from .init import activation_scale, geometric_median
from .io import SaeSource, load_sae, sae_from_path, save_sae
from .jumprelu import JumpReluSAE
from .metrics import FeatureReport, ce_loss_recovered, evaluate_sae
from .relu import ReluSAE, ReluTrainer
from .topk import TopKSAE, TopKTrainer
from .train import make_trainer, train_sae

__all__ = [
    "SaeConfig", "SparseAutoencoder", "SaeTrainer", "ReluSAE", "ReluTrainer", "TopKSAE", "TopKTrainer",
    "make_trainer", "train_sae", "evaluate_sae", "ce_loss_recovered", "FeatureReport", "save_sae", "load_sae",
    "sae_from_path", "SaeSource", "JumpReluSAE",
    "activation_scale", "geometric_median",
]
