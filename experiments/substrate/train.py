"""Training a toy transformer on its synthetic corpus: AdamW, linear warm-up then cosine decay, checkpoints at
log-spaced steps (safetensors), the loss curve as JSON and a PNG.

Each training sequence is fresh (generated once, seen once), so the loss is an estimate of the corpus loss;
a fixed held-out set (the same for every model of a corpus) is scored at every checkpoint.
"""
from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

from .corpus import SyntheticCorpus
from .hooks import is_weight_matrix
from .model import ToyTransformer

EVAL_SEED = 999_983  # held-out sequences, shared by every model of a corpus


class TrainConfig(BaseModel):
    """How a toy model is trained."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    steps: int = Field(1000, ge=1, description="optimiser updates")
    batch_size: int = Field(32, ge=1, description="sequences per update")
    lr: float = Field(3e-3, gt=0, description="peak learning rate (small models take a large one)")
    warmup_steps: int = Field(50, ge=0, description="linear warm-up from 0 to lr")
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="cosine decays to lr * min_lr_ratio at the end")
    weight_decay: float = Field(0.01, ge=0, description="AdamW decay on weight matrices only")
    beta1: float = Field(0.9, ge=0, lt=1, description="AdamW first-moment decay")
    beta2: float = Field(0.98, ge=0, lt=1, description="AdamW second-moment decay")
    grad_clip: float = Field(1.0, gt=0, description="max global gradient norm")
    n_checkpoints: int = Field(10, ge=6, description="log-spaced checkpoints, step 0 and the last included")
    n_eval: int = Field(256, ge=1, description="held-out sequences scored at each checkpoint")


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate for update `step` (0-based): linear warm-up, then cosine to lr * min_lr_ratio."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    span = max(1, cfg.steps - cfg.warmup_steps)
    frac = min(1.0, (step - cfg.warmup_steps) / span)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * frac)))


def checkpoint_steps(total: int, n: int) -> list[int]:
    """Log-spaced steps in [0, total]: 0, then about n-1 points from 1 to total on a log scale."""
    steps = {0, total}
    if total >= 1:
        for i in range(n - 1):
            steps.add(int(round(total ** (i / max(1, n - 2)))))
    return sorted(s for s in steps if 0 <= s <= total)


def lm_loss(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy (nats) of logits [B, T, V] on tokens [B, T]."""
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1))


@torch.no_grad()
def evaluate(model: ToyTransformer, tokens: torch.Tensor, batch_size: int = 128) -> float:
    """Mean next-token loss on tokens [N, T]."""
    total, count = 0.0, 0
    for i in range(0, len(tokens), batch_size):
        batch = tokens[i:i + batch_size].to(model.device)                          # [b, T]
        total += float(lm_loss(model(batch), batch)) * len(batch)
        count += len(batch)
    return total / count


def train(model: ToyTransformer, corpus: SyntheticCorpus, cfg: TrainConfig, *, seed: int, out_dir: Path,
          progress: bool = True) -> dict:
    """Train `model` in place, writing ckpt-<step>.safetensors, curve.json and curve.png to out_dir.
    Returns the summary stored in config.json (final losses, reference entropies, seconds)."""
    from safetensors.torch import save_file
    from tqdm.auto import tqdm

    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    data = corpus.sample(cfg.steps * cfg.batch_size, seed=seed)                   # [steps * B, T]
    held_out = corpus.sample(cfg.n_eval, seed=EVAL_SEED)                           # [n_eval, T]
    decay = [p for n, p in model.named_parameters() if is_weight_matrix(n, p)]
    no_decay = [p for n, p in model.named_parameters() if not is_weight_matrix(n, p)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))
    save_at = set(checkpoint_steps(cfg.steps, cfg.n_checkpoints))
    curve: dict[str, list[float]] = {"step": [], "loss": [], "lr": [], "eval_step": [], "eval_loss": []}

    def checkpoint(step: int) -> None:
        model.eval()
        curve["eval_step"].append(step)
        curve["eval_loss"].append(evaluate(model, held_out))
        model.train()
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(out_dir / f"ckpt-{step}.safetensors"), metadata={"step": str(step)})

    model.train()
    checkpoint(0)
    bar = tqdm(range(cfg.steps), desc=f"training toy model ({cfg.steps} steps)", file=sys.stderr,
               disable=not progress, mininterval=1.0, leave=False)
    for step in bar:
        lr = lr_at(step, cfg)
        for group in opt.param_groups:
            group["lr"] = lr
        batch = data[step * cfg.batch_size:(step + 1) * cfg.batch_size].to(model.device)   # [B, T]
        loss = lm_loss(model(batch), batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        curve["step"].append(step + 1)
        curve["loss"].append(loss.item())
        curve["lr"].append(lr)
        if step % 20 == 0:
            bar.set_postfix(loss=f"{curve['loss'][-1]:.3f}")
        if step + 1 in save_at:
            checkpoint(step + 1)
    bar.close()
    model.eval()
    seconds = time.perf_counter() - t0
    summary = {
        "train_seconds": round(seconds, 2),
        "final_train_loss": sum(curve["loss"][-20:]) / len(curve["loss"][-20:]),
        "final_eval_loss": curve["eval_loss"][-1],
        "unigram_entropy": corpus.unigram_entropy(),
        "bigram_entropy": corpus.bigram_entropy(),
        "checkpoints": sorted(save_at),
    }
    (out_dir / "curve.json").write_text(json.dumps({**curve, **summary}))
    plot_curve(curve, summary, out_dir / "curve.png")
    return summary


def plot_curve(curve: dict, summary: dict, path: Path) -> None:
    """Training loss (smoothed), held-out loss at checkpoints, and the corpus's reference entropies."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    loss = torch.tensor(curve["loss"])
    k = max(1, len(loss) // 50)
    smooth = loss.unfold(0, k, 1).mean(1) if len(loss) >= k else loss              # [steps - k + 1]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(curve["step"][k - 1:], smooth.tolist(), label="train (smoothed)")
    ax.plot(curve["eval_step"], curve["eval_loss"], "o-", label="held-out")
    ax.axhline(summary["unigram_entropy"], ls="--", c="gray", label="unigram entropy")
    ax.axhline(summary["bigram_entropy"], ls=":", c="gray", label="bigram entropy")
    ax.set_xscale("symlog", linthresh=10)
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
