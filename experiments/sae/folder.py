"""An SAE folder in the SAELens layout read without torch: what its `cfg.json` says (architecture, widths, hook,
model) and digests of its two files.

`experiment add` reads a user's SAE through this module (`read_sae_folder`) to refuse a folder claimgraph cannot
load, or one made for another hook or width, in milliseconds and without torch; `io.py` builds the SAE from the
same fields (`saelens_fields`) once the weights are read. cfg.json is either claimgraph's own (`save_sae`: the
full SaeConfig under the key `claimgraph`) or one SAELens wrote (6.x: fields plus `metadata`; pre-6: all at top
level).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from claimgraph.experiments.records import sha256_file
from claimgraph.graph.errors import InvalidDocument, NotFound

CFG_FILE = "cfg.json"
WEIGHTS_FILE = "sae_weights.safetensors"
DTYPE_NAMES = ("float32", "float64", "float16", "bfloat16")


def _bad(msg: str, path: Path, field: str | None = None) -> InvalidDocument:
    return InvalidDocument(msg, path=str(path), field=field)


@dataclass(frozen=True)
class SaelensFields:
    """What a SAELens cfg.json says about the SAE, in claimgraph's terms."""

    architecture: str  # claimgraph's class: relu / topk / jumprelu
    k: int | None  # topk
    d_in: int
    d_sae: int
    dtype: str
    hook_name: str | None
    model_name: str | None
    dataset_path: str | None
    context_size: int | None


def saelens_fields(raw: dict[str, Any], path: Path) -> SaelensFields:
    """The fields of a SAELens cfg.json, refusing (InvalidDocument naming `path` and the field) what claimgraph's
    classes cannot compute exactly: other architectures, input normalisation not folded into the weights, one
    attention head, an unknown dtype."""
    meta: dict[str, Any] = raw["metadata"] if isinstance(raw.get("metadata"), dict) else {}

    def get(*names: str) -> Any:  # metadata first (6.x), then top level (pre-6), under any of its names
        for n in names:
            for src in (meta, raw):
                if src.get(n) is not None:
                    return src[n]
        return None

    arch = raw.get("architecture") or "standard"
    fn = raw.get("activation_fn") or raw.get("activation_fn_str") or "relu"
    fn_kwargs = raw.get("activation_fn_kwargs") or {}
    k = None
    if arch == "topk" or fn == "topk":
        k = raw.get("k", fn_kwargs.get("k"))
        if k is None:
            raise _bad("topk SAE without k (cfg field k or activation_fn_kwargs.k)", path, "k")
        architecture = "topk"
    elif arch == "standard" and fn == "relu":
        architecture = "relu"
    elif arch == "jumprelu":
        architecture = "jumprelu"
    else:
        raise _bad(f"architecture {arch!r} with activation {fn!r} is not supported; claimgraph loads standard (ReLU), "
                   "topk and jumprelu SAEs (SAELens saves BatchTopK SAEs as jumprelu with save_inference_model)",
                   path, "architecture")
    norm = raw.get("normalize_activations", "none")
    if norm not in ("none", None, False):
        raise _bad(f"normalize_activations={norm!r}: this SAE expects inputs SAELens normalises first; fold the "
                   "normalisation into the weights (SAELens fold_activation_norm_scaling_factor, or the folding "
                   "SAETrainer.fit does at the end) and save again", path, "normalize_activations")
    if raw.get("finetuning_scaling_factor"):
        raise _bad("finetuning_scaling_factor is set; fold the scaling factor into the weights first", path,
                   "finetuning_scaling_factor")
    if get("hook_head_index") is not None:
        raise _bad("the SAE reads one attention head (hook_head_index); claimgraph feeds all heads flattened",
                   path, "hook_head_index")
    dtype = str(raw.get("dtype") or "float32").removeprefix("torch.")
    if dtype not in DTYPE_NAMES:
        raise _bad(f"dtype {raw.get('dtype')!r} is not one of {', '.join(DTYPE_NAMES)}", path, "dtype")
    try:
        d_in, d_sae = int(raw["d_in"]), int(raw["d_sae"])
        return SaelensFields(architecture=architecture, k=None if k is None else int(k), d_in=d_in, d_sae=d_sae,
                             dtype=dtype, hook_name=get("hook_name", "hook_point"), model_name=get("model_name"),
                             dataset_path=get("dataset_path"), context_size=get("context_size"))
    except KeyError as e:
        raise _bad(f"missing SAELens field {e.args[0]!r}", path, e.args[0]) from e
    except (TypeError, ValueError) as e:
        raise _bad(f"invalid SAELens config: {e}", path) from e


def read_cfg(cfg_bytes: bytes, cfg_path: Path) -> dict[str, Any]:
    """cfg.json's object, or InvalidDocument naming the file (and the line of a JSON error)."""
    try:
        raw = json.loads(cfg_bytes)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InvalidDocument(f"not valid JSON: {e}", path=str(cfg_path), line=getattr(e, "lineno", None)) from e
    if not isinstance(raw, dict):
        raise InvalidDocument("cfg.json must hold a JSON object", path=str(cfg_path))
    return raw


def sae_files(path: str | Path) -> tuple[Path, Path, Path]:
    """(absolute folder, its cfg.json, its weights file), or NotFound saying what an SAE folder holds."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise NotFound(f"SAE folder {folder} does not exist; give a folder with {CFG_FILE} and {WEIGHTS_FILE}")
    folder = folder.resolve()
    cfg_path, weights_path = folder / CFG_FILE, folder / WEIGHTS_FILE
    for p in (cfg_path, weights_path):
        if not p.is_file():
            raise NotFound(f"{p} does not exist; an SAE folder holds {CFG_FILE} and {WEIGHTS_FILE}")
    return folder, cfg_path, weights_path


@dataclass(frozen=True)
class SaeFolder:
    """An SAE folder as cfg.json describes it (no weights read), with digests of both files."""

    path: str  # absolute folder
    origin: str  # "claimgraph" (written by save_sae) or "saelens" (any other SAELens-layout folder)
    architecture: str  # claimgraph's class: relu / topk / jumprelu
    d_in: int
    d_sae: int
    hook_name: str | None
    model_name: str | None
    cfg_sha256: str
    weights_sha256: str

    def record(self) -> dict[str, Any]:
        return asdict(self)


def read_sae_folder(path: str | Path) -> SaeFolder:
    """What the SAE folder at `path` holds, from cfg.json and the files' digests, without torch."""
    folder, cfg_path, weights_path = sae_files(path)
    raw = read_cfg(cfg_path.read_bytes(), cfg_path)
    ours = raw.get("claimgraph")
    if ours:
        conf = ours.get("config") if isinstance(ours, dict) else None
        if not isinstance(conf, dict):
            raise _bad("claimgraph.config is missing", cfg_path, "claimgraph.config")
        try:
            arch, d_in, d_sae = str(conf["architecture"]), int(conf["d_in"]), int(conf["d_sae"])
        except (KeyError, TypeError, ValueError) as e:
            raise _bad(f"invalid SAE config: {e!r}", cfg_path, "claimgraph.config") from e
        hook, model = conf.get("hook_name"), conf.get("model_name")
    else:
        f = saelens_fields(raw, cfg_path)
        arch, d_in, d_sae, hook, model = f.architecture, f.d_in, f.d_sae, f.hook_name, f.model_name
    return SaeFolder(path=str(folder), origin="claimgraph" if ours else "saelens", architecture=arch, d_in=d_in,
                     d_sae=d_sae, hook_name=hook, model_name=model, cfg_sha256=sha256_file(cfg_path),
                     weights_sha256=sha256_file(weights_path))
