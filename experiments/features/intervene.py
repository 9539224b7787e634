"""Interventions on SAE latents inside a running model: the SAE spliced in at a hook with its error term kept,
and chosen latents clamped to a value (0 to ablate, a fixed value to pin), everywhere or at chosen positions.

With x the activation, f = sae.encode(x) and f' = f with the chosen latents clamped, the hook returns

    sae.decode(f') + (x - sae(x))  =  x + (f' - f)[..., latents] @ W_dec[latents]

computed in the second form: identical algebraically, and exactly x when nothing is clamped (no rounding
from decoding and re-adding the error term), so the spliced model's logits are the clean model's.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from claimgraph.experiments.sae.base import SparseAutoencoder
from claimgraph.experiments.substrate.hooks import HookedModel
from claimgraph.graph.errors import InvalidInput

HookFn = Callable[[Tensor, str], Tensor]


def clamp_hook(sae: SparseAutoencoder, latents: "Sequence[int] | Tensor", value: "float | Sequence[float] | Tensor" = 0.0, *,
               positions: Tensor | None = None) -> HookFn:
    """A hook function for `model.hooks([(hook, fn)])` that splices `sae` in and sets `latents` to `value`
    (a number, or one per latent). `positions`: where to clamp, BoolTensor [B, T_max] or [T_max] (the same for
    every row); None clamps everywhere. A pass over a shorter prefix (sampling) uses its first T columns."""
    idx = torch.as_tensor(latents, dtype=torch.long).reshape(-1)
    d_sae = sae.W_dec.shape[0]
    if len(idx) == 0:
        raise InvalidInput("clamp_hook needs at least one latent to clamp")
    if int(idx.min()) < 0 or int(idx.max()) >= d_sae:
        raise InvalidInput(f"latents out of range: the SAE has 0..{d_sae - 1}, got {idx.tolist()}")
    dev = sae.W_dec.device
    idx = idx.to(dev)
    val = torch.as_tensor(value, dtype=torch.float32, device=dev).reshape(-1)      # [1] or [k]
    if val.numel() not in (1, len(idx)):
        raise InvalidInput(f"give one value or one per latent ({len(idx)}), got {val.numel()}")
    W = sae.W_dec.detach()[idx]                                                    # [k, d_in]
    mask = None if positions is None else positions.to(dev).bool()                 # [B, T_max] or [T_max]
    if mask is not None and mask.ndim == 1:
        mask = mask[None]                                                          # [1, T_max]

    def fn(act: Tensor, name: str) -> Tensor:
        x = act.reshape(*act.shape[:2], -1)                                        # [B, T, d_in] (heads flattened)
        with torch.no_grad():
            f = sae.encode(x.to(W.dtype))[..., idx]                                # [B, T, k]
            new = val.expand_as(f)                                                 # [B, T, k]
            if mask is not None:
                B, T = x.shape[:2]
                assert mask.shape[0] in (1, B) and mask.shape[1] >= T, \
                    f"positions mask {tuple(mask.shape)} does not cover a [{B}, {T}] pass"
                new = torch.where(mask[:, :T, None], new, f)                       # [B, T, k]
            delta = (new - f) @ W                                                  # [B, T, d_in]
        return (x + delta.to(x.dtype)).reshape(act.shape)

    return fn


def latent_acts_and_logits(model: HookedModel, sae: SparseAutoencoder, tokens: Tensor, hook: str, latents: "Sequence[int] | Tensor",
                           fwd_hooks: Sequence[tuple[str, HookFn]] = ()) -> tuple[Tensor, Tensor]:
    """One forward pass of tokens [B, T] (with any extra hooks): logits [B, T, d_vocab] and the activations of
    `latents` at `hook` [B, T, k] as the model computed them (before any replacement at that hook)."""
    idx = torch.as_tensor(latents, dtype=torch.long).reshape(-1).to(sae.W_dec.device)
    box: list[Tensor] = []

    def read(act: Tensor, name: str) -> None:
        x = act.reshape(*act.shape[:2], -1)                                        # [B, T, d_in]
        box.append(sae.encode(x.to(sae.W_dec.dtype))[..., idx].detach())          # [B, T, k]

    with torch.no_grad():
        logits = model.run_with_hooks(tokens.to(model.device), [(hook, read), *fwd_hooks])  # [B, T, V]
    return logits, box[0]


class RowClamp:
    """A hook for a batch whose rows are different conditions: row r sets latent `latents[r]` to `values[r]`
    at absolute positions >= `start` (a row with value nan is left alone: its activation passes unchanged).
    The SAE is spliced in with its error term kept (x + (value - f) * W_dec[latent]). `offset` is the absolute
    position of the pass's first token: 0 for a pass over the whole prefix, the cache length for a cached one."""

    def __init__(self, sae: SparseAutoencoder, latents: Tensor, values: Tensor, start: int):
        self.sae, self.start, self.offset = sae, int(start), 0
        dev = sae.W_dec.device
        self.latents = latents.long().to(dev)                                       # [B]
        self.values = values.float().to(dev)                                        # [B]
        self.W = sae.W_dec.detach()[self.latents]                                   # [B, d_in]
        self.active = ~torch.isnan(self.values)                                     # [B]

    def __call__(self, act: Tensor, name: str) -> Tensor:
        x = act.reshape(*act.shape[:2], -1)                                        # [B, T, d_in]
        B, T = x.shape[:2]
        assert B == len(self.latents), f"RowClamp made for {len(self.latents)} rows, the pass has {B}"
        pos = torch.arange(self.offset, self.offset + T, device=x.device)           # [T]
        where = (pos >= self.start)[None, :] & self.active[:, None]                 # [B, T]
        if not bool(where.any()):
            return act
        with torch.no_grad():
            f = self.sae.encode(x.to(self.W.dtype))                                 # [B, T, d_sae]
            cur = f.gather(2, self.latents[:, None, None].expand(B, T, 1))[..., 0]  # [B, T]
            step = torch.where(where, self.values.nan_to_num()[:, None] - cur, torch.zeros_like(cur))  # [B, T]
            delta = step[..., None] * self.W[:, None, :]                             # [B, T, d_in]
        return (x + delta.to(x.dtype)).reshape(act.shape)
