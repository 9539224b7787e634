"""Which model families the hooked adapter serves and which hook names each offers, read without loading weights.

Torch-free on purpose: `experiment add` calls `check_model_ref` to refuse a model it cannot serve (an unknown
family, a hook the model does not have, a layer beyond its depth) from `config.json` or the gguf file's
metadata alone, in milliseconds, before anything runs. The adapter (hf.py) builds its hook sites from the
same `hook_names`, and a test checks that a loaded model offers exactly the names listed here.

Hook names follow TransformerLens (`blocks.N.hook_resid_pre`, ...; table in hf.py). Per family:
- `llama` (SmolLM2, Llama, Mistral-style gated MLPs): `mlp.hook_pre` is the gate's pre-activation,
  `mlp.hook_pre_linear` the up projection, `mlp.hook_post` = act(gate) * up (the down projection's input);
- `gpt_neox` (Pythia): `hook_resid_mid` only with a sequential residual (Pythia's is parallel: none);
- `gpt2`: learned positions, so also `hook_pos_embed`.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from claimgraph.experiments.job import Job, JobParams
from claimgraph.experiments.spec import JobSpec
from claimgraph.graph.errors import InvalidInput, NotFound

FAMILIES = ("llama", "gpt_neox", "gpt2")


def hook_names(family: str, n_layers: int, *, parallel_residual: bool = False) -> list[str]:
    """Every hook name a model of `family` with `n_layers` blocks offers, in forward order."""
    if family not in FAMILIES:
        raise InvalidInput(f"model family {family!r} is not supported; supported: {', '.join(FAMILIES)}")
    names = ["hook_embed"] + (["hook_pos_embed"] if family == "gpt2" else [])
    for i in range(n_layers):
        b = f"blocks.{i}."
        names += [b + "hook_resid_pre", b + "ln1.hook_normalized", b + "attn.hook_z", b + "hook_attn_out"]
        if not (family == "gpt_neox" and parallel_residual):
            names.append(b + "hook_resid_mid")
        names += [b + "ln2.hook_normalized", b + "mlp.hook_pre"]
        if family == "llama":
            names.append(b + "mlp.hook_pre_linear")
        names += [b + "mlp.hook_post", b + "hook_mlp_out", b + "hook_resid_post"]
    return names + ["ln_final.hook_normalized"]


@dataclass(frozen=True)
class ModelInfo:
    """What a model reference will be, read from its config (no weights): family, sizes and hook names."""

    ref: str
    family: str
    n_layers: int
    d_model: int
    d_vocab: int
    n_ctx: int
    parallel_residual: bool = False
    source: dict[str, Any] = field(default_factory=dict)  # where the config was read

    @property
    def hooks(self) -> list[str]:
        return hook_names(self.family, self.n_layers, parallel_residual=self.parallel_residual)


def info_from_hf_config(cfg: dict[str, Any], ref: str, source: str) -> ModelInfo:
    """ModelInfo from a transformers `config.json` dict; an unsupported `model_type` is refused by name."""
    mt = cfg.get("model_type")
    if mt not in FAMILIES:
        raise InvalidInput(f"{source} holds a {mt!r} model; supported families: {', '.join(FAMILIES)}")
    if mt == "gpt2":
        return ModelInfo(ref, mt, int(cfg.get("n_layer", 12)), int(cfg.get("n_embd", 768)),
                         int(cfg.get("vocab_size", 50257)), int(cfg.get("n_positions", 1024)), source={"config": source})
    parallel = mt == "gpt_neox" and bool(cfg.get("use_parallel_residual", True))
    return ModelInfo(ref, mt, int(cfg["num_hidden_layers"]), int(cfg["hidden_size"]), int(cfg["vocab_size"]),
                     int(cfg.get("max_position_embeddings", 2048)), parallel, source={"config": source})


def resolve_revision(path: Path, revision: str | None) -> Path:
    """The directory holding the weights: `path` itself, `path/<revision>`, or a hub-cache snapshot
    (`path/refs/<revision>` -> `path/snapshots/<hash>`, or `path/snapshots/<revision>`)."""
    if revision is None:
        if (path / "snapshots").is_dir() and (path / "refs" / "main").is_file():
            return path / "snapshots" / (path / "refs" / "main").read_text().strip()
        return path
    candidates = [path / revision, path / "snapshots" / revision]
    ref_file = path / "refs" / revision
    if ref_file.is_file():
        candidates.insert(0, path / "snapshots" / ref_file.read_text().strip())
    for c in candidates:
        if (c / "config.json").is_file():
            return c
    raise NotFound(f"revision {revision!r} not found under {path}: expected {path / revision}/config.json or a "
                   "Hugging Face cache layout (refs/<revision>, snapshots/<hash>); download it there first")


def hf_dir(path: str, revision: str | None) -> Path:
    """The checkpoint folder of `hf:<path>[@revision]`, checked to exist and hold a config.json."""
    root = Path(path).expanduser()
    if not root.is_absolute():
        raise InvalidInput(f"hf model path {path!r} must be absolute: use hf:/abs/path/to/model")
    if not root.is_dir():
        raise NotFound(f"no model directory at {root}; save one there with save_pretrained or download it")
    where = resolve_revision(root, revision)
    if not (where / "config.json").is_file():
        raise NotFound(f"{where} has no config.json; is it a Hugging Face model directory?")
    return where


def split_ref(ref: str) -> tuple[str, str, str | None]:
    """'kind:rest[@at]' -> (kind, rest, at); '@' followed by a path is part of the path."""
    kind, _, rest = ref.partition(":")
    head, sep, tail = rest.rpartition("@")
    if sep and tail and "/" not in tail:
        return kind, head, tail
    return kind, rest, None


def model_info(ref: str) -> ModelInfo | None:
    """ModelInfo of an `hf:` or `lm:` reference, read from config.json / the gguf metadata; None for `toy:`
    (its presets are checked when the model is built). Bad references raise InvalidInput / NotFound."""
    kind, rest, at = split_ref(ref)
    if kind == "hf":
        where = hf_dir(rest, at)
        try:
            cfg = json.loads((where / "config.json").read_text())
        except (OSError, ValueError) as e:
            raise InvalidInput(f"{where / 'config.json'} is not readable JSON: {e}") from None
        return info_from_hf_config(cfg, ref, str(where / "config.json"))
    if kind == "lm":
        from .lm import lm_info

        return lm_info(rest)
    return None


def check_hook(info: ModelInfo, hook: str, *, named_by: str = "") -> None:
    """Refuse a hook name `info`'s model does not offer, saying what it offers (by pattern, not 400 names)."""
    if hook in info.hooks:
        return
    by = f" (named by {named_by})" if named_by else ""
    if hook.startswith("blocks."):
        layer = hook.split(".")[1]
        if layer.isdigit() and int(layer) >= info.n_layers:
            raise InvalidInput(f"{info.ref} has {info.n_layers} blocks (0..{info.n_layers - 1}); hook {hook!r}{by} "
                               "is beyond them")
    per_block = sorted({n.split(".", 2)[2] for n in info.hooks if n.startswith("blocks.0.")})
    top = [n for n in info.hooks if not n.startswith("blocks.")]
    raise InvalidInput(f"{info.ref} ({info.family}) has no hook {hook!r}{by}; it offers "
                       f"blocks.N.{{{', '.join(per_block)}}} for N in 0..{info.n_layers - 1}, and {', '.join(top)}")


_RESIDUAL_WIDTH = ("hook_embed", "hook_pos_embed", "ln_final.hook_normalized", "hook_resid_pre", "hook_resid_mid",
                   "hook_resid_post", "hook_attn_out", "hook_mlp_out", "ln1.hook_normalized", "ln2.hook_normalized")


def hook_width(info: ModelInfo, hook: str) -> int | None:
    """The width of the activations at `hook` when the config alone says it (the residual stream's d_model at
    every hook on it); None where it does not (MLP hidden sites, per-head sites)."""
    site = hook.split(".", 2)[2] if hook.startswith("blocks.") and hook.count(".") >= 2 else hook
    return info.d_model if site in _RESIDUAL_WIDTH else None


def hooks_in(params: Any) -> list[tuple[str, str]]:
    """(where, hook name) for every string under a key `hook` or in a list under `hooks`, at any depth of a
    parameter dump: how `experiment add` finds the hooks a kind's parameters name, whatever the kind."""
    found: list[tuple[str, str]] = []

    def walk(x: Any, path: str) -> None:
        if isinstance(x, dict):
            for k, v in x.items():
                here = f"{path}.{k}" if path else str(k)
                if k == "hook" and isinstance(v, str):
                    found.append((here, v))
                elif k == "hooks" and isinstance(v, list):
                    found.extend((f"{here}[{i}]", h) for i, h in enumerate(v) if isinstance(h, str))
                else:
                    walk(v, here)
        elif isinstance(x, list):
            for i, v in enumerate(x):
                walk(v, f"{path}[{i}]")

    walk(params, "")
    return found


# The presets' names, torch-free for `experiment add` (the presets themselves are in load.py and corpus.py, which
# import torch; tests/experiments/test_families.py checks that these match them).
TOY_PRESET_NAMES = ("tiny", "small", "default", "medium", "one-layer")
CORPUS_PRESET_NAMES = ("default", "tiny")


def check_model_ref(ref: str | None, params: Any = None) -> ModelInfo | None:
    """Refuse, cheaply, a model reference the adapter cannot serve or a hook in `params` it does not have."""
    if not ref:
        return None
    kind, rest, _ = split_ref(ref)
    if kind == "toy" and rest not in TOY_PRESET_NAMES:
        raise InvalidInput(f"unknown toy model preset {rest!r} in {ref!r}; known: {', '.join(TOY_PRESET_NAMES)}")
    if kind not in ("toy", "hf", "lm") or ":" not in ref:
        raise InvalidInput(f"model reference {ref!r} is neither 'toy:<preset>' ({', '.join(TOY_PRESET_NAMES)}), "
                           "'hf:/abs/local/dir[@revision]' nor 'lm:<name>' (lm:smollm2-135m)")
    info = model_info(ref)
    if info is not None:
        for where, hook in hooks_in(params):
            check_hook(info, hook, named_by=f"param {where}")
    return info


def ref_provenance(ref: str | None) -> dict[str, Any] | None:
    """Where a model reference's weights come from, for the run record (torch-free, cheap): for `lm:` the gguf
    manifest (package and version, file sha256, quantization); for `hf:` the folder and its config's sha256."""
    if not ref:
        return None
    kind, rest, at = split_ref(ref)
    if kind == "lm":
        from .lm import lm_manifest

        return lm_manifest(rest)
    if kind == "hf":
        where = hf_dir(rest, at)
        weights = sorted(p.name for p in where.iterdir() if p.suffix in (".safetensors", ".bin"))
        return {"ref": ref, "folder": str(where), "weights": weights,
                "config_sha256": hashlib.sha256((where / "config.json").read_bytes()).hexdigest()}
    return {"ref": ref}


def model_digest(ref: str | None) -> str | None:
    """What the weights of a model reference are, as one string (torch-free): `lm:` the gguf file's sha256,
    `hf:` the content digest of its checkpoint folder (the revision resolved), `toy:` the reference itself
    (its weights are trained by the substrate code, which the kind's code version covers)."""
    if not ref:
        return None
    kind, rest, at = split_ref(ref)
    if kind == "lm":
        from .lm import lm_manifest

        return f"sha256:{lm_manifest(rest)['gguf_sha256']}"
    if kind == "hf":
        from claimgraph.experiments.context import folder_digest

        return f"sha256:{folder_digest(hf_dir(rest, at))}"
    return ref


P = TypeVar("P", bound=JobParams)


def check_data_ref(ref: str | None) -> None:
    """Refuse, cheaply, a `synthetic:` or `text:` data reference that names no corpus (other schemes belong to the
    kinds that use them, e.g. leading_terms' `builtin:`)."""
    if not ref:
        return
    kind, _, rest = ref.partition(":")
    if kind == "synthetic" and rest not in CORPUS_PRESET_NAMES:
        raise InvalidInput(f"unknown synthetic corpus preset {rest!r} in {ref!r}; known: {', '.join(CORPUS_PRESET_NAMES)}")
    if kind == "text":
        from .text import TEXT_RECIPES

        if rest not in TEXT_RECIPES:
            raise InvalidInput(f"unknown text corpus {rest!r} in {ref!r}; known: {', '.join(TEXT_RECIPES)}")


class ModelJob(Job[P]):
    """A job kind that runs on a model reference of the substrate (`toy:`, `hf:`, `lm:`): `experiment add` refuses a
    model or corpus that does not exist, a family or a hook in the params that the adapter cannot serve, and the
    run records where the weights came from."""

    def check_spec(self, spec: JobSpec) -> None:
        try:
            check_model_ref(spec.model, spec.params)
            check_data_ref(spec.data)
        except NotFound as e:  # a reference to nothing is bad input to `experiment add` (exit 2)
            raise InvalidInput(str(e)) from None

    def input_provenance(self, spec: JobSpec) -> dict[str, Any] | None:
        return ref_provenance(spec.model)

    def input_fingerprint(self, spec: JobSpec) -> dict[str, str | None]:
        out = super().input_fingerprint(spec)
        out["model"] = model_digest(spec.model)
        return out
