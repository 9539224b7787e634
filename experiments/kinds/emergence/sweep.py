"""The emergence sweep: one SAE per (model size, checkpoint, depth), provisioned through the shared SAE cache,
and for every category the latent that detects it best on held-out tokens.

Depth is read from the residual stream: depth 0 is the embedding output `blocks.0.hook_resid_pre` and depth
d >= 1 is `blocks.{d-1}.hook_resid_post`. The residual stream is the one space every layer reads from and
writes to, so "can a latent read category c at depth d" asks what the model has built up to that depth, with
attention and MLP contributions included and the same width at every depth (SAE width is then the same
across depths of one model). MLP hidden activations (`mlp.hook_post`) would miss everything attention
computes and live in a different basis per layer. Including the embedding gives a 2-layer model three depths,
the fewest in which a category can be present, lost and present again.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from claimgraph.experiments.features.select import detection_table, latent_acts
from claimgraph.experiments.sae.provision import provision_sae
from claimgraph.experiments.sae.recipe import SaeRecipe
from claimgraph.experiments.substrate.corpus import SyntheticCorpus
from claimgraph.experiments.substrate.hooks import HookedModel
from claimgraph.graph.errors import InvalidInput

from .analysis import ScoreTable, SizeScores


def depth_hooks(model: HookedModel) -> list[str]:
    """The residual-stream hook at each depth: the embedding output, then each block's output."""
    return ["blocks.0.hook_resid_pre"] + [f"blocks.{i}.hook_resid_post" for i in range(model.n_layers)]


def pick_checkpoints(steps: Sequence[int], n: int) -> list[int]:
    """n of the saved steps, evenly spaced by position (the saved steps are log-spaced, so these are too),
    the first and the last always included; all of them when there are at most n."""
    steps = sorted(steps)
    if len(steps) <= n:
        return list(steps)
    assert n >= 2, f"need at least 2 checkpoints to pick, got n={n}"
    idx = sorted({round(i * (len(steps) - 1) / (n - 1)) for i in range(n)})
    return [steps[i] for i in idx]


def category_labels(corpus: SyntheticCorpus, tokens: Tensor, categories: Sequence[str]) -> Tensor:
    """BoolTensor[N * T, C]: position-level membership of each category (keys of corpus.span_labels)."""
    labels = corpus.span_labels(tokens)
    missing = [c for c in categories if c not in labels]
    if missing:
        raise InvalidInput(f"unknown categories {missing}; the corpus labels: {', '.join(labels)}")
    return torch.stack([labels[c].reshape(-1) for c in categories], dim=1)  # [N * T, C]


def token_alone_f1(tokens: Tensor, labels: Tensor, d_vocab: int) -> list[float]:
    """For each label column of labels [N * T, C] (bool) at the positions of tokens [N, T]: the best F1 of a
    detector that sees the current token only, i.e. fires on a set of token ids. The best set is a prefix of the
    tokens ranked by P(label | token) (the F1 of a set grows by adding any token whose share of positives
    exceeds F1 / 2, so the optimum takes the highest-share tokens first); every prefix is scored, the best
    kept. A category with a high token-alone F1 is readable from the embedding and cannot *emerge*."""
    ids = tokens.reshape(-1).long().cpu()                                       # [M]
    y = labels.float().cpu()                                                    # [M, C]
    count = torch.bincount(ids, minlength=d_vocab).double()                     # [V]
    pos = torch.zeros(d_vocab, y.shape[1], dtype=torch.float64).index_add_(0, ids, y.double())  # [V, C]
    share = pos / count.clamp_min(1)[:, None]                                   # [V, C] P(label | token)
    order = share.argsort(dim=0, descending=True)                               # [V, C]
    tp = pos.gather(0, order).cumsum(0)                                         # [V, C] positives caught
    fired = count[order].cumsum(0)                                              # [V, C] positions fired on
    n_pos = y.sum(0).double()                                                   # [C]
    f1 = 2 * tp / (fired + n_pos).clamp_min(1)                                  # [V, C]
    return [float(v) for v in f1.max(0).values]


def best_latents(acts: Tensor, labels: Tensor, by: str = "f1", *, chunk: int = 64) -> dict[str, Tensor]:
    """For each label column of labels [M, C] (bool), the latent of acts [M, d_sae] with the best `by` score
    (select.detection_table), with its f1, precision, recall and auroc and the label's positive count;
    tensors [C]."""
    assert by in ("f1", "auroc"), f"by must be 'f1' or 'auroc', got {by!r}"
    t = detection_table(acts, labels, chunk=chunk)
    best = getattr(t, by).argmax(0)                                            # [C]
    out = {k: getattr(t, k).gather(0, best[None]).squeeze(0) for k in ("f1", "precision", "recall", "auroc")}
    return {"latent": best, **out, "n_pos": t.n_pos}


def sweep_size(model_ref: str, checkpoints: Sequence[int | str | None], corpus: SyntheticCorpus, data_ref: str,
               recipe: SaeRecipe, categories: Sequence[str], seed: int, *, eval_tokens: Tensor, device: str = "cpu",
               score: str = "f1", batch_size: int = 64, log: Callable[[str], None] | None = None,
               on_cell: Callable[[dict[str, Any]], None] | None = None,
               model_seed: int | None = None) -> tuple[SizeScores, list[dict[str, Any]]]:
    """Scores of one model size over its checkpoints (None: the model as referenced) and every depth, with one
    table row per (checkpoint, depth, category). `recipe.hook` is replaced by each depth's hook; `model_seed`
    picks the toy preset's replicate (substrate.load.seeded_preset)."""
    from claimgraph.experiments.substrate.load import check_fit, load_model

    labels = category_labels(corpus, eval_tokens, categories)                   # [N * T, C]
    grid: list[list[list[float]]] = []
    rows: list[dict[str, Any]] = []
    hooks: list[str] = []
    labels_ckpt: list[str] = []
    n_params = 0
    trained = None
    for ckpt in checkpoints:
        model = load_model(model_ref, device=device, checkpoint=ckpt, progress=False, model_seed=model_seed)
        n_params = sum(p.numel() for p in model.parameters())
        trained = model.cache_path.name if model.cache_path is not None else None
        check_fit(model, model_ref, corpus, data_ref)
        hooks = depth_hooks(model)
        step = getattr(model, "step", None)
        label = str(step if step is not None else (ckpt if ckpt is not None else "final"))
        labels_ckpt.append(label)
        sae_ref = f"{model_ref}@{label}" if ckpt is not None or step is not None else model_ref
        row_scores = []
        for depth, hook in enumerate(hooks):
            sae, folder = provision_sae(model, sae_ref, corpus, data_ref, recipe.model_copy(update={"hook": hook}),
                                        seed, log=log, batch_size=batch_size)
            acts = latent_acts(model, sae, eval_tokens, hook, batch_size=batch_size)  # [N * T, d_sae]
            best = best_latents(acts, labels, by=score)
            row_scores.append([float(v) for v in best[score]])
            for c, cat in enumerate(categories):
                row = {"model": model_ref, "model_seed": int(model_seed or 0), "n_params": n_params,
                       "checkpoint": label, "depth": depth, "hook": hook,
                       "category": cat, "score": float(best[score][c]), "latent": int(best["latent"][c]),
                       "f1": float(best["f1"][c]), "precision": float(best["precision"][c]),
                       "recall": float(best["recall"][c]), "auroc": float(best["auroc"][c]),
                       "n_pos": int(best["n_pos"][c]), "d_sae": int(acts.shape[1]), "sae": folder.name}
                rows.append(row)
                if on_cell is not None:
                    on_cell(row)
        grid.append(row_scores)
    return SizeScores(model=model_ref, n_params=n_params, checkpoints=labels_ckpt, hooks=hooks, score=grid,
                      trained=trained), rows


def assemble(sizes: list[SizeScores], categories: Sequence[str], score: str,
             token_f1: list[float] | None = None) -> ScoreTable:
    """The score table with sizes in ascending parameter count (and each category's token-alone F1)."""
    return ScoreTable(score_name=score, categories=list(categories), sizes=sorted(sizes, key=lambda s: s.n_params),
                      token_f1=token_f1)
