"""Train an SAE on a tensor of activations: the loop around a trainer's `update`."""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import torch
from torch import Tensor

from claimgraph.graph.errors import InvalidInput

from .base import SaeTrainer, SparseAutoencoder
from .config import SaeConfig
from .jumprelu import JumpReluSAE
from .relu import ReluSAE, ReluTrainer
from .topk import TopKSAE, TopKTrainer

TRAINERS: dict[str, type[SaeTrainer]] = {"relu": ReluTrainer, "topk": TopKTrainer}
SAES: dict[str, type[SparseAutoencoder]] = {"relu": ReluSAE, "topk": TopKSAE, "jumprelu": JumpReluSAE}


def make_trainer(cfg: SaeConfig, init_acts: Tensor, *, device: str = "cpu") -> SaeTrainer:
    """The trainer for cfg.architecture, set up from a sample of raw activations [n, d_in]."""
    if cfg.architecture not in TRAINERS:
        raise InvalidInput(f"claimgraph trains {' and '.join(TRAINERS)} SAEs, not {cfg.architecture!r}; "
                           f"{cfg.architecture} SAEs are loaded from SAELens folders (load_sae / sae_from_path)")
    return TRAINERS[cfg.architecture](cfg, init_acts, device=device)


def batch_indices(n: int, batch_size: int, steps: int, generator: torch.Generator) -> Iterator[Tensor]:
    """`steps` batches of row indices into n rows: a fresh random permutation per epoch, each batch full-size."""
    assert n >= batch_size, f"need at least batch_size={batch_size} activation vectors, got {n}"
    per_epoch = n // batch_size
    perm = torch.randperm(n, generator=generator)
    for step in range(steps):
        j = step % per_epoch
        if j == 0 and step > 0:
            perm = torch.randperm(n, generator=generator)
        yield perm[j * batch_size:(j + 1) * batch_size]  # [batch_size]


def train_sae(cfg: SaeConfig, acts: Tensor, *, device: str = "cpu", log_every: int = 0,
              on_log: Callable[[int, dict[str, float]], None] | None = None,
              progress: Callable[[Iterable[int]], Iterable[int]] | None = None) -> tuple[SparseAutoencoder, list[dict]]:
    """Train an SAE on raw activations [N, d_in] for cfg.steps steps of cfg.batch_size; returns the SAE (acting
    on raw activations, normalisation folded in) and the logged training curve (every `log_every` steps and
    the last step; none when log_every is 0)."""
    assert acts.ndim == 2 and acts.shape[1] == cfg.d_in, f"acts must be [N, {cfg.d_in}], got {tuple(acts.shape)}"
    gen = torch.Generator().manual_seed(cfg.seed + 1)  # batch order; independent of the initialisation stream
    init = acts[torch.randperm(acts.shape[0], generator=gen)[: cfg.init_sample_size]]  # [n_init, d_in]
    trainer = make_trainer(cfg, init, device=device)
    acts = acts.to(device)
    history: list[dict] = []
    steps: Iterable[int] = range(cfg.steps)
    if progress is not None:
        steps = progress(steps)
    batches = batch_indices(acts.shape[0], cfg.batch_size, cfg.steps, gen)
    for step, idx in zip(steps, batches):
        log = log_every > 0 and (step % log_every == 0 or step == cfg.steps - 1)
        row = trainer.update(step, acts[idx.to(acts.device)], logging=log)
        if row is not None:
            row = {"step": step, **row}
            history.append(row)
            if on_log is not None:
                on_log(step, row)
    return trainer.finalize(), history
