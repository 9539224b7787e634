"""The model substrate: a synthetic corpus with planted structure, small transformers trained on it here,
and Hugging Face causal LMs loaded from local directories, all behind one hooked-model interface.

Modules: corpus (SyntheticCorpus, get_corpus), hooks (HookPoint, HookedModel), model (ToyTransformer),
train (TrainConfig), load (load_model, activations, ...), hf (HFHookedModel; imports transformers lazily).
"""
from .corpus import CorpusConfig, SyntheticCorpus, Vocab, get_corpus
from .hooks import HookedModel, HookPoint
from .load import TOY_PRESETS, activations, list_checkpoints, load_model, model_corpus, shuffled_copy
from .model import ToyConfig, ToyTransformer

__all__ = ["CorpusConfig", "SyntheticCorpus", "Vocab", "get_corpus", "HookedModel", "HookPoint", "TOY_PRESETS",
           "activations", "list_checkpoints", "load_model", "model_corpus", "shuffled_copy",
           "ToyConfig", "ToyTransformer"]
