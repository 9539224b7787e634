"""The model substrate: a synthetic corpus with planted structure, small transformers trained on it here,
and Hugging Face causal LMs loaded from local directories, all behind one hooked-model interface."""
