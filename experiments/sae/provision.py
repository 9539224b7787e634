"""SAEs that feature analyses read, trained once per (model, data, hook, recipe, seed) and cached.

logit_weights, ablation, pinned_sampling and feature pages must look at the same latents, so they share
one SAE: `provision_sae` trains it on first use and later calls load it from
`cache_dir()/saes/<key>/` (SAELens layout, plus provenance.json). The key covers the model reference and
checkpoint, the data reference, the recipe, the seed, and the source of the SAE code, so a change to any of
them trains a new SAE rather than reusing a stale one.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from claimgraph.experiments.context import cache_dir, write_json_atomic

from .recipe import SaeRecipe

if TYPE_CHECKING:
    from claimgraph.experiments.substrate.corpus import SyntheticCorpus
    from claimgraph.experiments.substrate.hooks import HookedModel
    from claimgraph.experiments.substrate.text import TextCorpus

SAE_SOURCE = Path(__file__).resolve().parent


def _sae_code_version() -> str:
    h = hashlib.sha256()
    for p in sorted(SAE_SOURCE.glob("*.py")):
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:12]


def _model_identity(model: HookedModel, model_ref: str) -> dict[str, Any]:
    cache = getattr(model, "cache_path", None)  # a toy model's training cache key: retrained model, new SAE
    ident: dict[str, Any] = {"ref": model_ref, "step": getattr(model, "step", None),
                             "trained": Path(cache).name if cache else None}
    path = Path(model_ref.partition(":")[2].split("@")[0])
    if model_ref.startswith("hf:") and path.is_dir():
        ident["files"] = sorted((p.name, p.stat().st_size, int(p.stat().st_mtime)) for p in path.iterdir() if p.is_file())
    return ident


def sae_key(model: HookedModel, model_ref: str, data_ref: str, recipe: SaeRecipe, seed: int,
            sample: Any = None) -> str:
    payload = {"model": _model_identity(model, model_ref), "data": data_ref, "recipe": recipe.model_dump(mode="json"),
               "seed": seed, "sae_code": _sae_code_version()}
    if sample is not None:  # the caller's own training sample (provision_sae's train_acts)
        payload["sample"] = sample
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:20]


def training_activations(model: HookedModel, corpus: Any, recipe: SaeRecipe, seed: int, *,
                         batch_size: int = 64) -> Any:
    """The activations an SAE of `recipe` trains on, [n * T, d_in] float32 on CPU: `corpus.sample(n, seed)` of
    a synthetic corpus; for a real-text corpus the train windows [0, n) through the activation cache (one
    forward pass per model, hook and slice, whatever the seed: the SAE seed varies its init and batch order),
    document separators left out (their residual stream is an outlier many times the others' norm)."""
    from claimgraph.experiments.substrate.load import activations

    n_seqs = math.ceil(recipe.train_tokens / corpus.seq_len)
    from claimgraph.experiments.substrate.text import is_text

    if is_text(corpus):
        from claimgraph.experiments.substrate.acts_cache import cached_activations

        return cached_activations(model, corpus, recipe.hook, split="train", start=0, stop=n_seqs,
                                  batch_size=min(batch_size, 16)).tensor(skip_separators=True)
    tokens = corpus.sample(n_seqs, seed)                                                    # [n, T]
    return activations(model, tokens, recipe.hook, batch_size=batch_size, out_device="cpu")  # [n * T, d_in]


def provision_sae(model: HookedModel, model_ref: str, corpus: SyntheticCorpus | TextCorpus, data_ref: str, recipe: SaeRecipe, seed: int, *,
                  log: Callable[[str], None] | None = None,
                  progress: Callable[[Any], Any] | None = None, batch_size: int = 64,
                  train_acts: Callable[[], Any] | None = None, sample: Any = None) -> tuple[Any, Path]:
    """The SAE for these inputs, trained now or loaded from the cache; returns (sae on the model's device,
    its SAELens folder). Training tokens: `training_activations`, as in the `sae` job; or, with `train_acts`,
    the activations [n, d_in] it returns (called only when the SAE is trained), which `sample` (JSON-able,
    required with it) describes in the cache key."""
    import torch

    from claimgraph.experiments.sae import load_sae, save_sae, train_sae

    assert (train_acts is None) == (sample is None), "train_acts needs a `sample` describing it for the cache key"
    device = str(getattr(model, "device", "cpu"))
    key = sae_key(model, model_ref, data_ref, recipe, seed, sample)
    root = cache_dir() / "saes"
    folder = root / key
    if (folder / "provenance.json").is_file():
        if log:
            log(f"SAE {key} loaded from cache ({folder})")
        return load_sae(folder, device=device), folder
    acts = (train_acts() if train_acts is not None
            else training_activations(model, corpus, recipe, seed, batch_size=batch_size))  # [n, d_in]
    cfg = recipe.config(acts.shape[1], seed, model_name=model_ref, dataset_path=data_ref,
                        context_size=corpus.seq_len)
    if log:
        log(f"training SAE {key}: {cfg.architecture}, {cfg.d_sae} latents at {recipe.hook} on {acts.shape[0]} tokens")
    with torch.random.fork_rng(devices=[]):
        sae, history = train_sae(cfg, acts, device=device, log_every=max(1, recipe.steps // 10), progress=progress)
    tmp = root / f".tmp-{key}-{uuid.uuid4().hex[:8]}"
    save_sae(sae, tmp)
    write_json_atomic(tmp / "history.json", history)
    write_json_atomic(tmp / "provenance.json", {"key": key, "model": _model_identity(model, model_ref),
                                                "data": data_ref, "recipe": recipe.model_dump(mode="json"),
                                                "seed": seed, "sample": sample, "pid": os.getpid()})
    try:
        os.rename(tmp, folder)  # atomic; if another process won the race, use its SAE
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not (folder / "provenance.json").is_file():
            raise
        return load_sae(folder, device=device), folder
    return sae, folder
