"""The substrate's toy transformer against the bigram leading term.

The toy model (embeddings, LayerNorm, MLPs, AdamW from a random init) is not the one-hot model the theorem is
about, so only its closest analogue of W_O is compared: the embedding -> unembedding path
D = W_E diag(ln_final.w) W_U [V, V], rows centred (a softmax ignores each row's offset), against B from the
toy's own corpus, at every saved checkpoint; and the change of D since step 0, which removes the random
init and is what a leading term describes (for SGD from a small random init, E0 E0^T ~ I and U0^T U0 ~ I make
the first change of D proportional to B; the toy is trained with AdamW, so this is a test, not an identity).
B^T is reported beside it as a wrong-basis control. Only the
substrate contract is used (hook_embed activations, ln_final_weight, W_U); the attention OV/QK paths would
need per-head weights the contract does not expose.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from claimgraph.experiments.substrate.hooks import HookedModel
from claimgraph.graph.errors import InvalidInput

from .terms import bigram_mapping, trace_cosine


def direct_path(model: HookedModel) -> torch.Tensor:
    """[V, V] float64: W_E diag(ln_final.w) W_U with each row's mean removed."""
    from claimgraph.experiments.substrate.load import activations

    V, n_ctx = model.d_vocab, model.n_ctx
    ids = torch.arange(-(-V // n_ctx) * n_ctx) % V                               # [k * n_ctx] padded by wrapping
    E = activations(model, ids.view(-1, n_ctx), "hook_embed", out_device="cpu")[:V].double()   # [V, d_model]
    w = model.ln_final_weight()
    scale = w.detach().double().cpu() if w is not None else torch.ones(E.shape[1], dtype=torch.float64)
    D = (E * scale) @ model.W_U.detach().double().cpu()                           # [V, V]
    return D - D.mean(1, keepdim=True)


def toy_bigram(model_ref: str, n: int, seed: int) -> torch.Tensor:
    """B of the toy's own corpus, from `n` sampled sequences (positions as the toy saw them)."""
    from claimgraph.experiments.substrate.load import model_corpus

    corpus = model_corpus(model_ref)
    if corpus is None:
        raise InvalidInput(f"leading_terms compares toy models only (their corpus is known); {model_ref!r} is not "
                           f"one. Drop the model reference or use toy:<preset>")
    tokens = corpus.sample(n, seed)                                               # [n, seq_len]
    return bigram_mapping(tokens[:, :-1], tokens[:, 1:], len(corpus.vocab))


def path_rows(steps: list[int], paths: list[torch.Tensor], B: torch.Tensor) -> list[dict[str, Any]]:
    """Per checkpoint: cosine of the centred direct path D with B and with B^T (control), and of D's change
    since the first checkpoint with B (None at the first checkpoint itself)."""
    D0 = paths[0]
    rows: list[dict[str, Any]] = []
    for step, D in zip(steps, paths):
        assert D.shape == B.shape, f"toy vocabulary {tuple(D.shape)} does not match its corpus {tuple(B.shape)}"
        rows.append({"step": step, "cos_bigram": trace_cosine(D, B), "cos_bigram_transposed": trace_cosine(D, B.T),
                     "cos_bigram_change": trace_cosine(D - D0, B)})
    return rows


def early_change_cosine(rows: list[dict[str, Any]], early_fraction: float) -> float | None:
    """The paper's comparison on a model trained here: mean cosine of the direct path's change since step 0 with
    B over the early checkpoints, those after step 0 at or before `early_fraction` of the last checkpoint's step
    (the first after step 0 when none is that early); None without such a checkpoint."""
    last = rows[-1]["step"]
    later = [r for r in rows[1:] if r["cos_bigram_change"] is not None]
    early = [r for r in later if r["step"] <= early_fraction * last] or later[:1]
    return sum(r["cos_bigram_change"] for r in early) / len(early) if early else None


def toy_direct_path_check(model_ref: str, *, n: int, seed: int, model_seed: int | None = None,
                          progress: Callable | None = None) -> list[dict[str, Any]]:
    """path_rows of the toy model at every saved checkpoint (the preset trained with `model_seed`, see
    substrate.load.load_model; None: the preset's own seed), against B of its own corpus."""
    from claimgraph.experiments.substrate.load import list_checkpoints, load_model

    if not model_ref.startswith("toy:"):
        raise InvalidInput(f"leading_terms compares toy models only; {model_ref!r} is not 'toy:<preset>'")
    base = model_ref.split("@", 1)[0]
    B = toy_bigram(base, n, seed)
    steps = list_checkpoints(base, model_seed=model_seed)
    paths = [direct_path(load_model(base, checkpoint=step, progress=False, model_seed=model_seed))
             for step in (progress(steps, total=len(steps), desc="toy checkpoints") if progress else steps)]
    return path_rows(steps, paths, B)
