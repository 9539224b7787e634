"""Save and load SAEs in the SAELens layout: a folder with `cfg.json` and `sae_weights.safetensors`
(W_enc [d_in, d_sae], b_enc [d_sae], W_dec [d_sae, d_in], b_dec [d_in], and threshold [d_sae] for JumpReLU).

Export: `save_sae` writes the cfg.json of SAELens 6 (`architecture`, `d_in`, `d_sae`, `dtype`, `device`,
`apply_b_dec_to_input`, `normalize_activations`, `reshape_activations`, `k` / `rescale_acts_by_decoder_norm` for
TopK, and `metadata` with model, hook and data provenance), so `sae_lens.SAE.load_from_disk` reads it, and repeats
the provenance at top level in the pre-6 layout (`hook_name`, `activation_fn_str`, ...) for older readers. Saved
SAEs act on raw activations: the training normalisation is folded into the weights, so `normalize_activations` is
"none" (SAELens does the same after folding); the factor itself is kept under our key `claimgraph` with the full
SaeConfig, stored as-is.

Import: `load_sae` also reads folders SAELens wrote (6.x and pre-6 cfg.json) of the `standard` (ReLU), `topk` and
`jumprelu` architectures, into ReluSAE / TopKSAE / JumpReluSAE whose encode and decode equal SAELens's on the same
inputs: where SAELens computes differently from our classes, the difference is folded into the weights exactly
(`apply_b_dec_to_input: false` moves b_dec @ W_enc into b_enc; a TopK SAE with `rescale_acts_by_decoder_norm`
gets its decoder norms folded into the encoder, as SAELens's own fold does). `sae_from_path` does the same and
returns the SAE's provenance (folder, sha256 of both files) for a run record.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from claimgraph.graph.errors import InvalidDocument, InvalidInput

from .base import SparseAutoencoder
from .config import SaeConfig
from .folder import CFG_FILE, WEIGHTS_FILE, _bad, read_cfg, sae_files, saelens_fields
from .recipe import SaeRecipe

FORMAT_VERSION = 2  # 2: SAELens 6 cfg.json fields (1: pre-6 fields only); the `claimgraph` key is unchanged
SAELENS_LAYOUT_VERSION = "6.54.12"  # the SAELens release whose cfg.json layout save_sae writes (metadata field
#                                     sae_lens_version: SAELens picks its cfg parser by it); tests load with it
SAELENS_ARCH = {"relu": "standard", "topk": "topk", "jumprelu": "jumprelu"}  # ours -> SAELens `architecture`
WEIGHT_NAMES = ("W_enc", "b_enc", "W_dec", "b_dec")
EXTRA_WEIGHTS = {"jumprelu": ("threshold",)}  # tensors beyond WEIGHT_NAMES, per architecture
DTYPES = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16,
          "bfloat16": torch.bfloat16}


def hook_layer(hook_name: str | None) -> int:
    """The block index in a TransformerLens hook name (`blocks.3.mlp.hook_post` -> 3); 0 for embeddings."""
    m = re.match(r"blocks\.(\d+)\.", hook_name or "")
    return int(m.group(1)) if m else 0


def weight_names(architecture: str) -> tuple[str, ...]:
    return WEIGHT_NAMES + EXTRA_WEIGHTS.get(architecture, ())


# ---------------------------------------------------------------------------------------------- export

def saelens_cfg(sae: SparseAutoencoder) -> dict[str, Any]:
    """The cfg.json contents for `sae`: SAELens 6 fields, the pre-6 provenance fields, and our config under
    `claimgraph`."""
    cfg = sae.cfg
    topk = cfg.architecture == "topk"
    provenance: dict[str, Any] = {
        "model_name": cfg.model_name,
        "hook_name": cfg.hook_name,
        "hook_head_index": None,
        "context_size": cfg.context_size,
        "dataset_path": cfg.dataset_path,
        "prepend_bos": False,
        "seqpos_slice": [None],
        "model_from_pretrained_kwargs": {},
        "neuronpedia_id": None,
        "sae_lens_training_version": None,  # trained by claimgraph, not SAELens
    }
    out: dict[str, Any] = {
        "architecture": SAELENS_ARCH[cfg.architecture],
        "d_in": cfg.d_in,
        "d_sae": cfg.d_sae,
        "dtype": str(sae.W_enc.dtype).removeprefix("torch."),
        "device": str(sae.W_enc.device),
        "apply_b_dec_to_input": True,
        "normalize_activations": "none",
        # per-head hooks: SAELens flattens [..., n_heads, d_head] as claimgraph's activations() does
        "reshape_activations": "hook_z" if (cfg.hook_name or "").endswith("hook_z") else "none",
        **({"k": cfg.k, "rescale_acts_by_decoder_norm": False} if topk else {}),
        "metadata": {**provenance, "sae_lens_version": SAELENS_LAYOUT_VERSION},
        # pre-6 layout (SAELens < 6 and tools that read top-level fields)
        **provenance,
        "hook_layer": hook_layer(cfg.hook_name),
        "activation_fn_str": cfg.architecture if cfg.architecture != "jumprelu" else "relu",
        "activation_fn_kwargs": {"k": cfg.k} if topk else {},
        "finetuning_scaling_factor": False,
        "dataset_trust_remote_code": False,
        "claimgraph": {
            "format_version": FORMAT_VERSION,
            "config": cfg.model_dump(mode="json"),
            "activation_scale": sae.activation_scale,
            "scale_folded": True,
        },
    }
    return out


def save_sae(sae: SparseAutoencoder, folder: str | Path) -> Path:
    """Write `sae` (acting on raw activations) to `folder` in the SAELens layout; returns the folder."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    names = weight_names(sae.cfg.architecture)
    tensors = {name: getattr(sae, name).detach().contiguous().cpu() for name in names}
    save_file(tensors, str(folder / WEIGHTS_FILE))
    (folder / CFG_FILE).write_text(json.dumps(saelens_cfg(sae), indent=2))
    return folder


# ---------------------------------------------------------------------------------------------- import

def _from_saelens(raw: dict[str, Any], tensors: dict[str, Tensor], path: Path) -> tuple[SaeConfig, dict[str, Tensor]]:
    """A SaeConfig and our weights for a cfg.json SAELens wrote (6.x: fields plus `metadata`; pre-6: all top
    level), with SAELens's computation folded into the weights where it differs from ours."""
    f = saelens_fields(raw, path)
    architecture, dtype = f.architecture, DTYPES[f.dtype]
    w = dict(tensors)
    if architecture == "jumprelu" and "threshold" not in w and "log_threshold" in w:
        w["threshold"] = torch.exp(w.pop("log_threshold"))  # older SAELens JumpReLU checkpoints
    missing = [n for n in weight_names(architecture) if n not in w]
    if missing:
        raise _bad(f"missing tensors {missing} for a {raw.get('architecture') or 'standard'} SAE",
                   path.parent / WEIGHTS_FILE)
    w = {n: w[n].to(dtype) for n in weight_names(architecture)}  # SAELens casts to the cfg dtype on load too
    _check_shapes(w, architecture, f.d_in, f.d_sae, path)
    with torch.no_grad():
        if architecture == "topk" and raw.get("rescale_acts_by_decoder_norm"):
            # SAELens ranks and decodes pre * |W_dec row|; folding the norms makes that our plain TopK exactly
            norms = w["W_dec"].norm(dim=1).clamp_min(1e-8)  # [d_sae] (SAELens clamps at 1e-8 too)
            w["W_enc"], w["b_enc"], w["W_dec"] = w["W_enc"] * norms, w["b_enc"] * norms, w["W_dec"] / norms[:, None]
        if raw.get("apply_b_dec_to_input") is False:
            # SAELens: x @ W_enc + b_enc; ours subtracts b_dec first, so compensate in b_enc
            w["b_enc"] = w["b_enc"] + w["b_dec"] @ w["W_enc"]
    try:  # what trained it is unknown: the training fields are the recipe's defaults, never used to load
        recipe = SaeRecipe(architecture="topk" if architecture == "topk" else "relu", d_sae=f.d_sae,
                           **({"k": f.k} if f.k is not None else {}))
        made = recipe.config(f.d_in, 0, model_name=f.model_name, dataset_path=f.dataset_path,
                             context_size=f.context_size)
        cfg = SaeConfig.model_validate({**made.model_dump(), "architecture": architecture, "hook_name": f.hook_name})
    except ValueError as e:  # pydantic's ValidationError is a ValueError
        raise _bad(f"invalid SAELens config: {e}", path) from e
    return cfg, w


def _check_shapes(w: dict[str, Tensor], architecture: str, d_in: int, d_sae: int, path: Path) -> None:
    expected = {"W_enc": (d_in, d_sae), "b_enc": (d_sae,), "W_dec": (d_sae, d_in), "b_dec": (d_in,),
                "threshold": (d_sae,)}
    for name in weight_names(architecture):
        if tuple(w[name].shape) != expected[name]:
            raise _bad(f"{name} has shape {tuple(w[name].shape)}, cfg.json implies {expected[name]}",
                       path.parent / WEIGHTS_FILE, name)


def _read(folder: Path) -> tuple[SparseAutoencoder, bytes, bytes, dict[str, Any]]:
    """The SAE in `folder`, the exact bytes of cfg.json and the weights it was built from, and the raw cfg."""
    from pydantic import ValidationError
    from safetensors.torch import load as load_bytes

    from .train import SAES

    _, cfg_path, weights_path = sae_files(folder)
    cfg_bytes, weight_bytes = cfg_path.read_bytes(), weights_path.read_bytes()
    raw = read_cfg(cfg_bytes, cfg_path)
    try:
        tensors = load_bytes(weight_bytes)
    except Exception as e:  # safetensors raises its own error types for a truncated or foreign file
        raise InvalidDocument(f"not a safetensors file: {e}", path=str(weights_path)) from e
    ours = raw.get("claimgraph")
    if ours:
        try:
            cfg = SaeConfig.model_validate(ours["config"])
        except (ValidationError, KeyError, TypeError) as e:
            raise InvalidDocument(f"invalid SAE config: {e}", path=str(cfg_path), field="claimgraph.config") from e
        missing = [n for n in weight_names(cfg.architecture) if n not in tensors]
        if missing:
            raise InvalidDocument(f"missing tensors {missing}", path=str(weights_path))
        weights = {n: tensors[n] for n in weight_names(cfg.architecture)}
        _check_shapes(weights, cfg.architecture, cfg.d_in, cfg.d_sae, cfg_path)
    else:
        cfg, weights = _from_saelens(raw, tensors, cfg_path)
    sae = SAES[cfg.architecture](cfg)
    with torch.no_grad():
        for name, t in weights.items():
            getattr(sae, name).data = t.clone()  # own, aligned, contiguous memory: same kernels as when trained
    sae.activation_scale = float(ours.get("activation_scale", 1.0)) if ours else 1.0
    return sae, cfg_bytes, weight_bytes, raw


def load_sae(folder: str | Path, *, device: str = "cpu") -> SparseAutoencoder:
    """Read an SAE saved by `save_sae`, or a standard / topk / jumprelu SAELens folder; it acts on raw
    activations."""
    sae, _, _, _ = _read(Path(folder))
    return sae.to(device).eval()


@dataclass(frozen=True)
class SaeSource:
    """Which SAE a run used: where it was, and digests of the exact bytes loaded (so a changed file shows)."""

    path: str  # absolute folder
    cfg_sha256: str  # of cfg.json
    weights_sha256: str  # of sae_weights.safetensors
    origin: str  # "claimgraph" (written by save_sae) or "saelens" (any other SAELens-layout folder)
    architecture: str  # claimgraph's class: relu / topk / jumprelu
    saelens_architecture: str  # as cfg.json names it
    d_in: int
    d_sae: int
    dtype: str
    model_name: str | None
    hook_name: str | None

    def record(self) -> dict[str, Any]:
        """A JSON-ready dict for the run's details."""
        return asdict(self)


def sae_from_path(path: str | Path, *, device: str = "cpu", d_in: int | None = None,
                  hook_name: str | None = None) -> tuple[SparseAutoencoder, SaeSource]:
    """The SAE in folder `path` (saved by claimgraph or by SAELens) on `device`, and its provenance.

    With `d_in`, refuse an SAE of another input width; with `hook_name`, refuse one whose cfg.json names another
    hook (one that names none is accepted: it is the caller's hook). Errors name the folder and the field."""
    folder, _, _ = sae_files(path)
    sae, cfg_bytes, weight_bytes, raw = _read(folder)
    where = str(folder / CFG_FILE)
    if d_in is not None and sae.d_in != d_in:
        raise InvalidInput(f"the SAE at {folder} reads {sae.d_in}-wide activations (cfg.json d_in), but the hook "
                           f"gives {d_in}; {where}: d_in")
    if hook_name is not None and sae.cfg.hook_name not in (None, hook_name):
        raise InvalidInput(f"the SAE at {folder} was trained at hook {sae.cfg.hook_name!r} (cfg.json hook_name), "
                           f"not {hook_name!r}; give --param sae.hook={sae.cfg.hook_name} or another SAE")
    source = SaeSource(
        path=str(folder), cfg_sha256=hashlib.sha256(cfg_bytes).hexdigest(),
        weights_sha256=hashlib.sha256(weight_bytes).hexdigest(),
        origin="claimgraph" if raw.get("claimgraph") else "saelens", architecture=sae.cfg.architecture,
        saelens_architecture=str(raw.get("architecture") or "standard"), d_in=sae.d_in, d_sae=sae.d_sae,
        dtype=str(sae.W_enc.dtype).removeprefix("torch."), model_name=sae.cfg.model_name,
        hook_name=sae.cfg.hook_name)
    return sae.to(device).eval(), source
