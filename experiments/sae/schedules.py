"""Training schedules as small pure functions of the step (no torch, no state)."""
from __future__ import annotations


def lr_factor(step: int, *, total: int, warmup: int, decay_start: float | None) -> float:
    """Multiplier on the base learning rate: linear warm-up from 0 over `warmup` steps, constant, then a linear
    decay to 0 over the last `1 - decay_start` fraction of `total` steps (None: no decay)."""
    assert 0 <= step, f"step must be >= 0, got {step}"
    f = 1.0 if warmup <= 0 else min(1.0, (step + 1) / warmup)
    if decay_start is not None and decay_start < 1.0:
        start = int(decay_start * total)
        if step >= start:
            f = min(f, max(0.0, (total - step) / max(1, total - start)))
    return f


def l1_factor(step: int, *, warmup: int) -> float:
    """Multiplier on the L1 coefficient: linear warm-up from 0 over `warmup` steps, then 1."""
    assert 0 <= step, f"step must be >= 0, got {step}"
    return 1.0 if warmup <= 0 else min(1.0, (step + 1) / warmup)
