"""What the worker fork server (experiments/launch.py) imports before it forks: the worker, torch, and the
libraries the job kinds load on their first seed (transformers' Llama code for lm: models, safetensors,
matplotlib for the plots; pyplot is left to the plotting code, which picks its backend first). A library that is not installed is left to the worker, as it would be."""
from __future__ import annotations

import importlib

import claimgraph.experiments.worker  # noqa: F401

for _name in ("torch", "safetensors.torch", "numpy", "matplotlib", "transformers",
              "transformers.models.llama.modeling_llama", "claimgraph.experiments.registry"):
    try:
        importlib.import_module(_name)
    except ImportError:
        pass
