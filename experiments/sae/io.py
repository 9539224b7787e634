"""Save and load SAEs in the SAELens layout: a folder with `cfg.json` and `sae_weights.safetensors`
(W_enc [d_in, d_sae], b_enc, W_dec [d_sae, d_in], b_dec).

Saved SAEs act on raw activations: the training normalisation factor is folded into the weights, so the SAELens
field `normalize_activations` is "none" (SAELens does the same after folding); the factor itself is kept under
our key `claimgraph` with the full SaeConfig, stored as-is. `load_sae` also reads plain SAELens folders of the
`standard` (ReLU) and `topk` architectures that have no `claimgraph` key.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch

from claimgraph.graph.errors import InvalidDocument, NotFound

from .base import SparseAutoencoder
from .config import SaeConfig
from .recipe import SaeRecipe

CFG_FILE = "cfg.json"
WEIGHTS_FILE = "sae_weights.safetensors"
FORMAT_VERSION = 1
SAELENS_ARCH = {"relu": "standard", "topk": "topk"}  # our architecture -> SAELens `architecture`
WEIGHT_NAMES = ("W_enc", "b_enc", "W_dec", "b_dec")


def hook_layer(hook_name: str | None) -> int:
    """The block index in a TransformerLens hook name (`blocks.3.mlp.hook_post` -> 3); 0 for embeddings."""
    m = re.match(r"blocks\.(\d+)\.", hook_name or "")
    return int(m.group(1)) if m else 0


def saelens_cfg(sae: SparseAutoencoder) -> dict[str, Any]:
    """The cfg.json contents for `sae`: SAELens fields plus our config under `claimgraph`."""
    cfg = sae.cfg
    return {
        "architecture": SAELENS_ARCH[cfg.architecture],
        "d_in": cfg.d_in,
        "d_sae": cfg.d_sae,
        "dtype": str(sae.W_enc.dtype).removeprefix("torch."),
        "device": str(sae.W_enc.device),
        "model_name": cfg.model_name,
        "hook_name": cfg.hook_name,
        "hook_layer": hook_layer(cfg.hook_name),
        "hook_head_index": None,
        "activation_fn_str": "topk" if cfg.architecture == "topk" else "relu",
        "activation_fn_kwargs": {"k": cfg.k} if cfg.architecture == "topk" else {},
        "apply_b_dec_to_input": True,
        "finetuning_scaling_factor": False,
        "normalize_activations": "none",
        "context_size": cfg.context_size,
        "dataset_path": cfg.dataset_path,
        "dataset_trust_remote_code": False,
        "prepend_bos": False,
        "seqpos_slice": [None],
        "model_from_pretrained_kwargs": {},
        "sae_lens_training_version": None,
        "neuronpedia_id": None,
        "claimgraph": {
            "format_version": FORMAT_VERSION,
            "config": cfg.model_dump(mode="json"),
            "activation_scale": sae.activation_scale,
            "scale_folded": True,
        },
    }


def save_sae(sae: SparseAutoencoder, folder: str | Path) -> Path:
    """Write `sae` (acting on raw activations) to `folder` in the SAELens layout; returns the folder."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {name: getattr(sae, name).detach().contiguous().cpu() for name in WEIGHT_NAMES}
    save_file(tensors, str(folder / WEIGHTS_FILE))
    (folder / CFG_FILE).write_text(json.dumps(saelens_cfg(sae), indent=2))
    return folder


def _config_from_saelens(raw: dict[str, Any], path: Path) -> SaeConfig:
    """A SaeConfig for a plain SAELens cfg.json (no `claimgraph` key)."""
    arch = raw.get("architecture", "standard")
    fn = raw.get("activation_fn_str", "relu")
    if arch == "topk" or fn == "topk":
        kwargs = raw.get("activation_fn_kwargs") or {}
        k = kwargs.get("k", raw.get("k"))
        if k is None:
            raise InvalidDocument("topk SAE without k in activation_fn_kwargs", path=str(path), field="k")
        architecture, extra = "topk", {"k": int(k)}
    elif arch == "standard" and fn == "relu":
        architecture, extra = "relu", {}
    else:
        raise InvalidDocument(f"architecture {arch!r} with activation {fn!r} is not supported; "
                              "load standard (ReLU) or topk SAEs", path=str(path), field="architecture")
    if raw.get("normalize_activations", "none") not in ("none", None):
        raise InvalidDocument(f"normalize_activations={raw['normalize_activations']!r}: fold the scaling factor "
                              "into the weights first (SAELens fold_activation_norm_scaling_factor)",
                              path=str(path), field="normalize_activations")
    try:  # what trained it is unknown: the training fields are the recipe's defaults, never used to load
        recipe = SaeRecipe(architecture=architecture, d_sae=int(raw["d_sae"]), **extra)
        cfg = recipe.config(int(raw["d_in"]), 0, model_name=raw.get("model_name"),
                            dataset_path=raw.get("dataset_path"), context_size=raw.get("context_size"))
        return cfg.model_copy(update={"hook_name": raw.get("hook_name")})
    except KeyError as e:
        raise InvalidDocument(f"missing SAELens field {e.args[0]!r}", path=str(path), field=e.args[0]) from e


def load_sae(folder: str | Path, *, device: str = "cpu") -> SparseAutoencoder:
    """Read an SAE saved by `save_sae` (or a standard/topk SAELens folder); it acts on raw activations."""
    from pydantic import ValidationError
    from safetensors.torch import load_file

    from .train import SAES

    folder = Path(folder)
    cfg_path, weights_path = folder / CFG_FILE, folder / WEIGHTS_FILE
    for p in (cfg_path, weights_path):
        if not p.is_file():
            raise NotFound(f"{p} does not exist; an SAE folder holds {CFG_FILE} and {WEIGHTS_FILE}")
    try:
        raw = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as e:
        raise InvalidDocument(f"not valid JSON: {e.msg}", path=str(cfg_path), line=e.lineno) from e
    ours = raw.get("claimgraph")
    try:
        cfg = SaeConfig.model_validate(ours["config"]) if ours else _config_from_saelens(raw, cfg_path)
    except ValidationError as e:
        raise InvalidDocument(f"invalid SAE config: {e}", path=str(cfg_path), field="claimgraph.config") from e
    tensors = load_file(str(weights_path))
    missing = [n for n in WEIGHT_NAMES if n not in tensors]
    if missing:
        raise InvalidDocument(f"missing tensors {missing}", path=str(weights_path))
    sae = SAES[cfg.architecture](cfg)
    expected = {"W_enc": (cfg.d_in, cfg.d_sae), "b_enc": (cfg.d_sae,), "W_dec": (cfg.d_sae, cfg.d_in),
                "b_dec": (cfg.d_in,)}
    with torch.no_grad():
        for name in WEIGHT_NAMES:
            t = tensors[name]
            if tuple(t.shape) != expected[name]:
                raise InvalidDocument(f"{name} has shape {tuple(t.shape)}, cfg.json implies {expected[name]}",
                                      path=str(weights_path), field=name)
            param = getattr(sae, name)
            param.data = t.clone()  # own, aligned, contiguous memory: same kernels as when trained
    sae.activation_scale = float(ours.get("activation_scale", 1.0)) if ours else 1.0
    return sae.to(device).eval()
