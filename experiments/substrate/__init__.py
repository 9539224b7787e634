"""The model substrate: a synthetic corpus with planted structure, small transformers trained on it here,
Hugging Face causal LMs loaded from local directories, a real pretrained LM that installs offline, and real text,
all behind one hooked-model interface.

Modules: corpus (SyntheticCorpus, get_corpus), hooks (HookPoint, HookedModel), model (ToyTransformer),
train (TrainConfig), load (load_model, activations, ...), hf (HFHookedModel; imports transformers lazily),
families (supported families and hook names, torch-free), lm (`lm:` models from gguf files),
text (`text:` real-text corpora), acts_cache (activations cached on disk).

Names are imported on first use, so `from claimgraph.experiments.substrate.families import ...` does not import
torch (`experiment add` uses it).
"""
from importlib import import_module
from typing import Any

_WHERE = {"CorpusConfig": "corpus", "SyntheticCorpus": "corpus", "Vocab": "corpus", "get_corpus": "corpus",
          "HookedModel": "hooks", "HookPoint": "hooks", "TOY_PRESETS": "load", "activations": "load",
          "list_checkpoints": "load", "load_model": "load", "model_corpus": "load",
          "shuffled_copy": "load", "ToyConfig": "model", "ToyTransformer": "model"}

__all__ = list(_WHERE)


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(import_module(f"{__name__}.{_WHERE[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
