"""Loading models by reference, training toy presets on demand with an atomic on-disk cache, and helpers
every job uses (activations, shuffled controls).

References:
- `toy:<preset>[@<step>]`: a ToyTransformer trained on its preset's synthetic corpus, cached under
  `cache_dir()/models/<hash of (model, corpus, training config, seed, substrate version)>/`:
  config.json, ckpt-<step>.safetensors (log-spaced steps), curve.json, curve.png.
- `hf:/abs/local/dir[@<revision>]`: a Llama, GPT-NeoX or GPT-2 causal LM from a local directory (see hf.py).
- `lm:<name>`: a real pretrained LM that installs offline, e.g. `lm:smollm2-135m` (see lm.py).
Data references: `synthetic:<preset>` (corpus.py) and `text:<recipe>` (real text, text.py).
"""
from __future__ import annotations

import copy
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field

from claimgraph.experiments.context import cache_dir, resolve_device, torch_threads, train_threads, write_json_atomic
from claimgraph.graph.errors import InvalidInput, NotFound

from .atomic import build_once
from .corpus import CORPUS_PRESETS, SyntheticCorpus, get_corpus
from .hooks import HookedModel, is_weight_matrix
from .model import ToyConfig, ToyTransformer
from .train import TrainConfig, train

SUBSTRATE_VERSION = 3  # bump when the corpus generator or model code changes what a cached model means

TRAINING_RUNS: list[str] = []  # cache keys trained in this process (tests read it to tell a load from a retrain)


class ToyPreset(BaseModel):
    """A named toy model: its corpus preset, architecture, training and seed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    corpus: str = Field("default", description="synthetic corpus preset it is trained on")
    model: ToyConfig
    train: TrainConfig = TrainConfig()
    seed: int = Field(0, description="seeds the init and the training data")


_V = len(get_corpus("synthetic:default").vocab)
TOY_PRESETS: dict[str, ToyPreset] = {
    # for tests: ~10-20 s on one CPU core
    "tiny": ToyPreset(corpus="tiny", model=ToyConfig(n_layers=2, d_model=32, n_heads=2, d_mlp=128, n_ctx=32,
                                                     d_vocab=_V),
                      train=TrainConfig(steps=300, batch_size=32, warmup_steps=30, n_eval=128)),
    # scale sweep: small < default < medium, same corpus, data and steps
    "small": ToyPreset(model=ToyConfig(n_layers=2, d_model=32, n_heads=2, d_mlp=128, n_ctx=64, d_vocab=_V),
                       train=TrainConfig(steps=1000)),
    "default": ToyPreset(model=ToyConfig(n_layers=2, d_model=64, n_heads=4, d_mlp=256, n_ctx=64, d_vocab=_V),
                         train=TrainConfig(steps=1000)),
    "medium": ToyPreset(model=ToyConfig(n_layers=3, d_model=96, n_heads=4, d_mlp=384, n_ctx=64, d_vocab=_V),
                        train=TrainConfig(steps=1000)),
    # Towards Monosemanticity's setting: one block, so its MLP output reaches the unembedding directly;
    # otherwise `default` (docs/preregistration/2026-11-21-feature-identification.md)
    "one-layer": ToyPreset(model=ToyConfig(n_layers=1, d_model=64, n_heads=4, d_mlp=256, n_ctx=64, d_vocab=_V),
                           train=TrainConfig(steps=1000)),
}


# ---------------------------------------------------------------------------------------------- references

def _split_at(rest: str) -> tuple[str, str | None]:
    """'x@y' -> ('x', 'y') when y contains no '/', else (rest, None)."""
    head, sep, tail = rest.rpartition("@")
    if sep and tail and "/" not in tail:
        return head, tail
    return rest, None


def _toy_preset(ref: str, model_seed: int | None = None) -> tuple[str, ToyPreset, str | None]:
    kind, _, rest = ref.partition(":")
    assert kind == "toy", f"not a toy reference: {ref}"
    name, at = _split_at(rest)
    if name not in TOY_PRESETS:
        raise InvalidInput(f"unknown toy model preset {name!r} in {ref!r}; known: {', '.join(TOY_PRESETS)}")
    return name, seeded_preset(TOY_PRESETS[name], model_seed), at


def seeded_preset(preset: ToyPreset, model_seed: int | None) -> ToyPreset:
    """The preset trained with another seed (init and training data): replicate `model_seed` of the family is
    the preset with seed preset.seed + model_seed, so replicate 0 is the preset itself (one cache entry each,
    keyed by preset_key). None: the preset as it is."""
    return preset if not model_seed else preset.model_copy(update={"seed": preset.seed + int(model_seed)})


def model_family(ref: str, model_seeds: list[int], *, progress: bool = True) -> dict[int, Path]:
    """The cached family of a toy preset: every replicate of `model_seeds` trained once (later calls load),
    {model seed: cache folder}. Replicates differ in initialisation and training data order."""
    name, _, _ = _toy_preset(ref)
    return {s: ensure_trained(name, _toy_preset(ref, s)[1], progress=progress) for s in model_seeds}


def _kind(ref: str) -> str:
    kind = ref.partition(":")[0]
    if kind not in ("toy", "hf", "lm") or ":" not in ref:
        raise InvalidInput(f"model reference {ref!r} is neither 'toy:<preset>' ({', '.join(TOY_PRESETS)}), "
                           "'hf:/abs/local/dir[@revision]' nor 'lm:<name>' (lm:smollm2-135m)")
    return kind


# ---------------------------------------------------------------------------------------------- toy cache

def preset_key(preset: ToyPreset) -> str:
    """Cache key: hash of (model, corpus, training config, seed, substrate version)."""
    blob = json.dumps({"model": preset.model.model_dump(mode="json"),
                       "corpus": CORPUS_PRESETS[preset.corpus].model_dump(mode="json"),
                       "train": preset.train.model_dump(mode="json"),
                       "seed": preset.seed, "version": SUBSTRATE_VERSION}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def ensure_trained(name: str, preset: ToyPreset, *, progress: bool = True) -> Path:
    """The cache folder of a toy preset, training it first if no finished copy exists."""
    key = preset_key(preset)
    final = cache_dir() / "models" / key

    def build(tmp: Path) -> None:
        corpus = get_corpus(f"synthetic:{preset.corpus}")
        assert preset.model.d_vocab == len(corpus.vocab), "preset d_vocab does not match its corpus"
        torch.manual_seed(preset.seed)
        model = ToyTransformer(preset.model, corpus.vocab)
        if progress:
            print(f"training toy:{name} (first use; cached at {final})", file=sys.stderr, flush=True)
        with torch_threads(train_threads()):
            summary = train(model, corpus, preset.train, seed=preset.seed, out_dir=tmp, progress=progress)
        TRAINING_RUNS.append(key)
        write_json_atomic(tmp / "config.json", {
            "preset": name, "key": key, "substrate_version": SUBSTRATE_VERSION,
            "model": preset.model.model_dump(mode="json"),
            "corpus": {"preset": preset.corpus, **CORPUS_PRESETS[preset.corpus].model_dump(mode="json")},
            "train": preset.train.model_dump(mode="json"), "seed": preset.seed, **summary})

    return build_once(final, "config.json", build)


def read_config(path: Path) -> dict:
    """config.json of a cached toy model."""
    return json.loads((path / "config.json").read_text())


def _steps_in(path: Path) -> list[int]:
    return sorted(int(p.stem.split("-", 1)[1]) for p in path.glob("ckpt-*.safetensors"))


def _pick_step(steps: list[int], checkpoint: int | str | None, ref: str) -> int:
    if checkpoint is None or (isinstance(checkpoint, str) and checkpoint.lower() in ("last", "final")):
        return steps[-1]
    try:
        step = int(str(checkpoint).removeprefix("step"))
    except ValueError:
        raise InvalidInput(f"checkpoint {checkpoint!r} of {ref} is not a step number; "
                           f"available steps: {steps}") from None
    if step not in steps:
        raise NotFound(f"{ref} has no checkpoint at step {step}; available steps: {steps}")
    return step


# ---------------------------------------------------------------------------------------------- public API

def load_model(ref: str, *, device: str = "cpu", checkpoint: int | str | None = None,
               progress: bool = True, model_seed: int | None = None) -> HookedModel:
    """A hooked model for `toy:<preset>[@step]`, `hf:/abs/local/dir[@revision]` or `lm:<name>`, in eval mode on
    `device`.

    Toy presets are trained on first use and cached; later calls load. `model_seed` picks a replicate of the
    preset's family (seeded_preset; None or 0: the preset itself); only toy models have replicates. The model
    carries `ref` and, for toy models, `step` (the checkpoint loaded), `cache_path` and `model_seed`.
    """
    if model_seed and _kind(ref) != "toy":
        raise InvalidInput(f"{ref} is one pretrained model; model seed replicates exist for toy:<preset> only")
    dev = resolve_device(device)
    if _kind(ref) == "lm":  # ---- real pretrained LMs (lm.py)
        from .lm import load_lm

        if checkpoint is not None:
            raise InvalidInput(f"{ref} has one checkpoint; checkpoint={checkpoint!r} does not apply")
        return load_lm(ref.partition(":")[2], device=dev, progress=progress)
    if _kind(ref) == "hf":
        from .hf import load_hf

        folder, revision = _split_at(ref.partition(":")[2])
        if checkpoint is not None:
            if revision is not None and str(checkpoint) != revision:
                raise InvalidInput(f"{ref} names revision {revision!r} but checkpoint={checkpoint!r} was also given")
            revision = str(checkpoint)
        return load_hf(folder, revision=revision, device=dev)
    name, preset, at = _toy_preset(ref, model_seed)
    if at is not None and checkpoint is not None and str(at) != str(checkpoint):
        raise InvalidInput(f"{ref} names step {at} but checkpoint={checkpoint!r} was also given; use one")
    path = ensure_trained(name, preset, progress=progress)
    step = _pick_step(_steps_in(path), checkpoint if checkpoint is not None else at, ref)
    from safetensors.torch import load_file

    corpus = get_corpus(f"synthetic:{preset.corpus}")
    model = ToyTransformer(ToyConfig(**read_config(path)["model"]), corpus.vocab)
    model.load_state_dict(load_file(str(path / f"ckpt-{step}.safetensors")))
    model.ref, model.step, model.cache_path = f"toy:{name}", step, path
    model.model_seed = int(model_seed or 0)
    return model.to(dev).eval()


def list_checkpoints(ref: str, model_seed: int | None = None) -> list[int]:
    """Saved training steps of a toy model (replicate `model_seed`, trained first if needed); [] for a Hugging
    Face model, whose checkpoints are revisions named in the reference (`hf:/dir@step1000`)."""
    if _kind(ref) in ("hf", "lm"):
        return []
    name, preset, _ = _toy_preset(ref, model_seed)
    return _steps_in(ensure_trained(name, preset, progress=False))


def model_corpus(ref: str) -> SyntheticCorpus | None:
    """The synthetic corpus a toy preset was trained on; None for a Hugging Face or lm: model."""
    if _kind(ref) in ("hf", "lm"):
        return None
    _, preset, _ = _toy_preset(ref)
    return get_corpus(f"synthetic:{preset.corpus}")


def tokenizer_for(model_ref: str) -> Any:
    """The tokenizer of an `lm:` or `hf:` model, without loading its weights (text corpora are tokenized by it)."""
    kind = _kind(model_ref)
    if kind == "toy":
        raise InvalidInput(f"{model_ref} reads synthetic token ids and has no tokenizer; text: corpora need an "
                           "lm: or hf: model")
    from transformers import AutoTokenizer

    if kind == "lm":
        from .lm import ensure_dequantized

        folder = ensure_dequantized(model_ref.partition(":")[2], progress=False)
    else:
        from .families import hf_dir, split_ref

        _, path, revision = split_ref(model_ref)
        folder = hf_dir(path, revision)
    try:
        return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError, TypeError, KeyError) as e:
        raise InvalidInput(f"{model_ref} has no readable tokenizer in {folder} ({e}); text: corpora need one") from None


def corpus_for(model_ref: str, data_ref: str | None) -> tuple[Any, str]:
    """(corpus, its reference): the one `data_ref` names, else the one the toy preset was trained on.
    `text:<recipe>` gives a TextCorpus tokenized by the model's tokenizer (text.py)."""
    if data_ref and data_ref.startswith("text:"):
        from .text import build_text_corpus

        return build_text_corpus(data_ref, tokenizer_for(model_ref)), data_ref
    corpus = get_corpus(data_ref) if data_ref else model_corpus(model_ref)
    if corpus is None:
        raise InvalidInput(f"no data reference for {model_ref}; give --data synthetic:<preset>")
    return corpus, data_ref or f"synthetic:{corpus.name}"


def check_fit(model: HookedModel, model_ref: str, corpus: Any, data_ref: str, *,
              hook: str | None = None, hook_from: str = "") -> None:
    """Refuse, with a message naming both references, a corpus the model cannot read (token ids beyond its
    vocabulary, sequences beyond its context, a text corpus tokenized by another tokenizer) or a hook it does
    not have (`hook_from` says who named it)."""
    tok_id = getattr(corpus, "tokenizer_id", None)
    if tok_id is not None:
        from .text import tokenizer_fingerprint

        tok = getattr(model, "tokenizer", None)
        if tok is None or tokenizer_fingerprint(tok) != tok_id:
            raise InvalidInput(f"{data_ref} was tokenized by tokenizer {tok_id}, not by {model_ref}'s; build it "
                               f"with corpus_for({model_ref!r}, {data_ref!r})")
    vocab = getattr(corpus, "vocab", None)
    if vocab is not None and len(vocab) > model.d_vocab:
        raise InvalidInput(f"{data_ref} uses {len(vocab)} token ids but {model_ref} embeds only {model.d_vocab}; "
                           "the labels come from the synthetic corpus, so the model needs a vocabulary at least "
                           "that large")
    if corpus.seq_len > model.n_ctx:
        raise InvalidInput(f"{data_ref} has sequences of {corpus.seq_len} tokens but {model_ref} takes at most "
                           f"{model.n_ctx}; use a corpus preset with shorter sequences")
    if hook is not None and hook not in model.hook_names():
        raise InvalidInput(f"{model_ref} has no hook {hook!r}{f' (named by {hook_from})' if hook_from else ''}; "
                           f"it offers: {', '.join(model.hook_names())}")


def shuffled_copy(model: HookedModel, seed: int) -> HookedModel:
    """A copy whose weight matrices (parameters with ndim >= 2: embeddings, unembedding, attention and MLP
    weights) are each shuffled entry-wise; biases (the toy's [H, d_head] b_Q/b_K/b_V included) and LayerNorm
    parameters are kept. Tied parameters (GPT-2's embedding and unembedding) are one tensor, shuffled once."""
    clone = copy.deepcopy(model)
    g = torch.Generator().manual_seed(int(seed))
    with torch.no_grad():
        for name, p in clone.named_parameters():  # named_parameters yields a shared tensor once
            if is_weight_matrix(name, p):
                perm = torch.randperm(p.numel(), generator=g).to(p.device)              # [numel]
                p.copy_(p.reshape(-1)[perm].reshape(p.shape))
    clone.shuffled_seed = int(seed)  # so caches keyed on the model (acts_cache) tell it from the original
    if model.provenance:
        clone.provenance = {**model.provenance, "shuffled_seed": int(seed)}
    return clone


def activations(model: HookedModel, tokens: torch.Tensor, hook_name: str, *, batch_size: int = 64,
                out_device: str | torch.device | None = None) -> torch.Tensor:
    """Activations at `hook_name` for tokens [N, T], flattened to float32 [N * T, d] (per-head hooks give
    d = H * d_head), computed in batches without grad; on the model's device unless `out_device`."""
    if hook_name.endswith("hook_pattern"):
        raise InvalidInput("attention patterns are [B, H, T, T], not per position; use run_with_cache for them")
    if tokens.ndim != 2:
        raise InvalidInput(f"tokens must be [N, T], got shape {tuple(tokens.shape)}")
    if batch_size < 1:
        raise InvalidInput(f"batch_size must be >= 1, got {batch_size}")
    model._site(hook_name)  # unknown names fail before any work
    out = []
    for i in range(0, len(tokens), batch_size):
        batch = tokens[i:i + batch_size].to(model.device)                          # [b, T]
        act = model.capture(batch, hook_name)                                      # [b, T, ...]
        if act.shape[0] != batch.shape[0]:  # broadcast over the batch (GPT-2's hook_pos_embed is [1, T, d])
            act = act.expand(batch.shape[0], *act.shape[1:])
        out.append(act.reshape(batch.shape[0] * batch.shape[1], -1).float())       # [b * T, d]
        if out_device is not None:
            out[-1] = out[-1].to(out_device)
    if not out:
        d = model.capture(tokens.new_zeros(1, 1).to(model.device), hook_name).reshape(1, -1).shape[1]
        return torch.zeros(0, d, device=out_device or model.device)
    return torch.cat(out)                                                          # [N * T, d]
