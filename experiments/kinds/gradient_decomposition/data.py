"""Where the gradient-decomposition experiment gets its sequences and its probed feature.

- `majority_source`: the majority task (majority.py). Feature: `is_majority_c` for every task token c at the
  useless positions 1 .. n_in-1; conditions normal, myopic and split (input / output segment weights).
- `corpus_source`: a substrate corpus (`synthetic:<preset>`, experiments/substrate/corpus.py). Feature: one of
  its position labels (`paren_span`, `base64_span`, `cat:animal`, ...) at every position but BOS; conditions
  normal and myopic (a corpus has no input / output segments to split). Whether such a feature is useless for
  the immediate next token depends on the label; the decomposition reports where its gradient comes from.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

import torch

from claimgraph.graph.errors import InvalidInput

from .majority import MajorityConfig, sample
from .transformer import Transformer

if TYPE_CHECKING:
    from . import GradientDecompositionParams


class Source(NamedTuple):
    name: str
    train: torch.Tensor         # [steps * batch, L] long: training sequences, consumed in order
    held: torch.Tensor          # [N, L] long: held-out sequences for probes, risk and accuracy
    features: torch.Tensor      # [N, L - 1, C] float: the probed feature after the token at each position
    positions: list[int]        # tracked and probed positions
    d_vocab: int
    n_ctx: int                  # positions the model reads (L - 1)
    split_at: int | None        # first position of the output segment; None: no split-weight condition
    accuracy: Callable[[Transformer], dict[str, float]]  # task accuracy metrics of a trained model


def majority_source(params: GradientDecompositionParams, seed: int, device: str) -> Source:
    task = MajorityConfig(n_vocab=params.n_vocab, n_in=params.n_in, n_out=params.n_out)
    train = sample(task, params.steps * params.batch_size, seed=2 * seed).tokens.to(device)   # [S*B, L]
    held = sample(task, params.probe_sequences, seed=2 * seed + 1)
    tokens, legal = held.tokens.to(device), held.legal.to(device)

    @torch.no_grad()
    def accuracy(model: Transformer) -> dict[str, float]:
        """Share of output positions whose argmax is a current majority token, and the same at the first."""
        pred = model(tokens[:, :-1])[:, task.n_in:].argmax(-1)                         # [N, n_out]
        ok = torch.nn.functional.pad(legal[:, task.n_in:], (0, 1)).gather(-1, pred[..., None])[..., 0].float()
        return {"task_accuracy": float(ok.mean()), "first_output_accuracy": float(ok[:, 0].mean())}

    return Source(name="majority", train=train, held=tokens, features=held.features.to(device),
                  positions=task.useless_positions(), d_vocab=task.d_vocab, n_ctx=task.n_ctx,
                  split_at=task.split_at, accuracy=accuracy)


def corpus_source(params: GradientDecompositionParams, seed: int, device: str, data_ref: str) -> Source:
    from claimgraph.experiments.substrate.corpus import get_corpus

    corpus = get_corpus(data_ref)
    train = corpus.sample(params.steps * params.batch_size, seed=2 * seed).to(device)   # [S*B, L]
    held = corpus.sample(params.probe_sequences, seed=2 * seed + 1)                    # [N, L]
    labels = corpus.span_labels(held)
    if params.corpus_feature not in labels:
        raise InvalidInput(f"corpus feature {params.corpus_feature!r} is not a label of {data_ref}; "
                           f"choose one of: {', '.join(sorted(labels))}")
    features = labels[params.corpus_feature][:, :-1, None].float().to(device)          # [N, L-1, 1]
    held = held.to(device)
    L = held.shape[1]

    @torch.no_grad()
    def accuracy(model: Transformer) -> dict[str, float]:
        """Top-1 next-token accuracy on the held-out sequences."""
        pred = model(held[:, :-1]).argmax(-1)                                          # [N, L-1]
        return {"task_accuracy": float((pred == held[:, 1:]).float().mean())}

    return Source(name=data_ref, train=train, held=held, features=features, positions=list(range(1, L - 1)),
                  d_vocab=len(corpus.vocab), n_ctx=L - 1, split_at=None, accuracy=accuracy)
