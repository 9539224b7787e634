"""Activations by name: HookPoint identity modules, and the shared hooked-model interface.

A model exposes *hook sites*: a name in the TransformerLens convention (`blocks.0.mlp.hook_post`) mapped to a
module whose output (or input) is the activation. For the toy transformer every site is a HookPoint whose name
comes from `named_modules()`; a Hugging Face model maps the same names onto its own modules (see hf.py).

A hook function gets `(activation, hook_name)` and returns None (read only) or a tensor of the same shape that
replaces the activation for the rest of the forward pass.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from claimgraph.graph.errors import InvalidInput

HookFn = Callable[[Tensor, str], Tensor | None]


class HookPoint(nn.Module):
    """Identity module marking an activation; its `name` is set once from the parent's named_modules()."""

    def __init__(self) -> None:
        super().__init__()
        self.name: str | None = None

    def forward(self, x: Tensor) -> Tensor:
        return x

    def extra_repr(self) -> str:
        return f"name={self.name!r}"


@dataclass(frozen=True)
class HookSite:
    """Where an activation lives: the output (or first input) of `module`, optionally seen through a reshape
    (`to_view` gives the contract's shape, `from_view` maps a replacement back)."""

    module: nn.Module
    where: Literal["output", "input"] = "output"
    to_view: Callable[[Tensor], Tensor] | None = None
    from_view: Callable[[Tensor], Tensor] | None = None


class _StopForward(Exception):
    """Raised by a hook to end a forward pass early once the wanted activation is captured."""


def is_weight_matrix(name: str, param: Tensor) -> bool:
    """A weight matrix (ndim >= 2, embeddings and unembedding included) rather than a bias or LayerNorm
    parameter; the toy's per-head biases b_Q/b_K/b_V are [H, d_head] but still biases."""
    leaf = name.rsplit(".", 1)[-1]
    return param.ndim >= 2 and not (leaf.startswith("b_") or leaf == "bias")


def name_hook_points(model: nn.Module) -> dict[str, HookPoint]:
    """Give every HookPoint in `model` its attribute path as name; returns them in module order."""
    points = {}
    for name, module in model.named_modules():
        if isinstance(module, HookPoint):
            module.name = name
            points[name] = module
    return points


class HookedModel(nn.Module):
    """The interface every substrate model offers (toy or Hugging Face).

    Subclasses set n_layers, d_model, d_mlp, d_vocab, n_ctx, n_heads, vocab, and implement `forward`,
    `hook_sites`, `W_U`, `W_out(layer)`, `ln_final_weight()` and `decode`.
    """

    n_layers: int
    d_model: int
    d_mlp: int
    d_vocab: int
    n_ctx: int
    n_heads: int
    vocab: Any = None
    ref: str | None = None  # the model reference it was loaded from
    step: int | None = None  # a toy model's training step (its checkpoint)
    cache_path: Path | None = None  # a toy model's training cache folder
    model_seed: int = 0  # which replicate of a toy preset's family (substrate.load.seeded_preset)
    shuffled_seed: int | None = None  # set on a weight-shuffled copy (substrate.load.shuffled_copy)
    provenance: dict[str, Any] | None = None  # where the weights came from (lm: manifest, hf: folder)
    W_U: Tensor  # unembedding [d_model, d_vocab] (a parameter or a property)

    def hook_sites(self) -> dict[str, HookSite]:
        raise NotImplementedError

    def W_out(self, layer: int) -> Tensor:
        """MLP output projection of `layer`, [d_mlp, d_model]."""
        raise NotImplementedError

    def ln_final_weight(self) -> Tensor | None:
        """The final LayerNorm's weight [d_model] (None when it has none)."""
        raise NotImplementedError

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def hook_names(self) -> list[str]:
        """Every hook name this model offers, in forward order."""
        return list(self.hook_sites())

    def _site(self, name: str) -> HookSite:
        sites = self.hook_sites()
        if name not in sites:
            raise InvalidInput(f"unknown hook name {name!r}; this model offers: {', '.join(sites)}")
        return sites[name]

    @contextmanager
    def hooks(self, fwd_hooks: list[tuple[str, HookFn]]) -> Iterator["HookedModel"]:
        """Attach forward hooks by name for the duration of the block; they are removed on exit, also on error."""
        handles = []
        try:
            for name, fn in fwd_hooks:
                handles.append(_attach(self._site(name), name, fn))
            yield self
        finally:
            for h in handles:
                h.remove()

    def run_with_hooks(self, tokens: Tensor, fwd_hooks: list[tuple[str, HookFn]]) -> Tensor:
        """Logits [B, T, d_vocab] with the hooks attached for this one pass."""
        with self.hooks(fwd_hooks):
            return self(tokens)

    def run_with_cache(self, tokens: Tensor, names: list[str] | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        """Logits and detached copies of the named activations (all hook names when `names` is None)."""
        names = self.hook_names() if names is None else list(names)
        cache: dict[str, Tensor] = {}

        def save(act: Tensor, name: str) -> None:
            cache[name] = act.detach().clone()

        logits = self.run_with_hooks(tokens, [(n, save) for n in names])
        return logits, cache

    def capture(self, tokens: Tensor, name: str) -> Tensor:
        """One activation for `tokens`, stopping the forward pass as soon as it is computed (no grad)."""
        return self.capture_many(tokens, [name])[name]

    def capture_many(self, tokens: Tensor, names: list[str]) -> dict[str, Tensor]:
        """Several activations for `tokens` from one forward pass, stopped as soon as the last of them is
        computed (no grad): {name: activation}."""
        wanted = set(names)
        box: dict[str, Tensor] = {}

        def grab(act: Tensor, name: str) -> None:
            box[name] = act.detach()
            if len(box) == len(wanted):
                raise _StopForward

        with torch.no_grad(), self.hooks([(n, grab) for n in wanted]):
            try:
                self(tokens)
            except _StopForward:
                pass
        missing = wanted - set(box)
        assert not missing, f"hooks {sorted(missing)} did not fire during the forward pass"
        return box

    def decode(self, ids: Any) -> list[str]:
        raise NotImplementedError


def _attach(site: HookSite, name: str, fn: HookFn) -> torch.utils.hooks.RemovableHandle:
    """Register `fn` on a hook site, translating between the module's tensors and the contract's view."""

    def call(act: Tensor) -> Tensor | None:
        view = site.to_view(act) if site.to_view else act
        new = fn(view, name)
        if new is None:
            return None
        if new.shape != view.shape:
            raise InvalidInput(f"hook on {name} returned shape {tuple(new.shape)}, expected {tuple(view.shape)}")
        return site.from_view(new) if site.from_view else new

    if site.where == "output":
        def out_hook(module: nn.Module, args: Any, output: Any) -> Any:
            if isinstance(output, tuple):  # HF attention modules return (output, weights, ...)
                new = call(output[0])
                return None if new is None else (new, *output[1:])
            return call(output)

        return site.module.register_forward_hook(out_hook)

    def in_hook(module: nn.Module, args: tuple, kwargs: dict) -> Any:
        if args:
            new = call(args[0])
            return None if new is None else ((new, *args[1:]), kwargs)
        new = call(kwargs["hidden_states"])
        return None if new is None else (args, {**kwargs, "hidden_states": new})

    return site.module.register_forward_pre_hook(in_hook, with_kwargs=True)
