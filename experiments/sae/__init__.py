"""Sparse autoencoders: ReLU (Towards Monosemanticity) and TopK (Gao et al. 2024) trainers, metrics, and
save/load in the SAELens layout. Imports torch; job modules import this package inside `run` only."""
from .base import SaeTrainer, SparseAutoencoder
from .config import SaeConfig
from .init import activation_scale, geometric_median
from .io import load_sae, save_sae
from .metrics import FeatureReport, ce_loss_recovered, evaluate_sae
from .relu import ReluSAE, ReluTrainer
from .topk import TopKSAE, TopKTrainer
from .train import make_trainer, train_sae

__all__ = [
    "SaeConfig", "SparseAutoencoder", "SaeTrainer", "ReluSAE", "ReluTrainer", "TopKSAE", "TopKTrainer",
    "make_trainer", "train_sae", "evaluate_sae", "ce_loss_recovered", "FeatureReport", "save_sae", "load_sae",
    "activation_scale", "geometric_median",
]
