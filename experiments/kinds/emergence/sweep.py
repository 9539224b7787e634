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

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from claimgraph.experiments.features.select import detection_table, latent_acts
from claimgraph.experiments.sae.provision import provision_sae
from claimgraph.experiments.sae.recipe import EVAL_SEED_OFFSET, SaeRecipe
from claimgraph.experiments.substrate.corpus import SyntheticCorpus
from claimgraph.experiments.substrate.hooks import HookedModel
from claimgraph.graph.errors import InvalidInput

from .analysis import ScoreTable, SizeScores, depth_of
from .textcats import token_set_f1


def depth_hooks(model: HookedModel, depths: Sequence[int] | None = None) -> list[str]:
    """The residual-stream hook at each depth (all, or those in `depths`): the embedding output, then each
    block's output."""
    hooks = ["blocks.0.hook_resid_pre"] + [f"blocks.{i}.hook_resid_post" for i in range(model.n_layers)]
    if depths is None:
        return hooks
    if max(depths) >= len(hooks):
        raise InvalidInput(f"depths {list(depths)} go beyond {model.ref}'s {model.n_layers} blocks (depths 0.."
                           f"{model.n_layers}: 0 the embedding, d the output of block d-1)")
    return [hooks[d] for d in depths]


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
    detector that sees the current token only, i.e. fires on a set of token ids, found on these positions
    (textcats.token_set_f1 fitted in-sample: the exact optimum). A category with a high token-alone F1 is
    readable from the embedding and cannot *emerge*."""
    ids = tokens.reshape(-1).long().cpu().numpy()                               # [M]
    y = labels.bool().cpu().numpy()                                             # [M, C]
    return token_set_f1(ids, y, ids, y, d_vocab)


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
               on_cell: Callable[[dict[str, Any]], None] | None = None, model_seed: int | None = None,
               depths: Sequence[int] | None = None) -> tuple[SizeScores, list[dict[str, Any]]]:
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
        hooks = depth_hooks(model, depths)
        step = getattr(model, "step", None)
        label = str(step if step is not None else (ckpt if ckpt is not None else "final"))
        labels_ckpt.append(label)
        sae_ref = f"{model_ref}@{label}" if ckpt is not None or step is not None else model_ref
        row_scores = []
        for hook in hooks:
            sae, folder = provision_sae(model, sae_ref, corpus, data_ref, recipe.model_copy(update={"hook": hook}),
                                        seed, log=log, batch_size=batch_size)
            acts = latent_acts(model, sae, eval_tokens, hook, batch_size=batch_size)  # [N * T, d_sae]
            best = best_latents(acts, labels, by=score)
            row_scores.append([float(v) for v in best[score]])
            cell = {"model": model_ref, "model_seed": int(model_seed or 0), "n_params": n_params, "checkpoint": label,
                    "depth": depth_of(hook), "hook": hook}
            rows += _cell_rows(cell, categories, best, score, int(acts.shape[1]), folder.name, on_cell)
        grid.append(row_scores)
    return SizeScores(model=model_ref, n_params=n_params, checkpoints=labels_ckpt, hooks=hooks, score=grid,
                      trained=trained), rows


def _cell_rows(cell: dict[str, Any], categories: Sequence[str], best: dict[str, Tensor], score: str, d_sae: int,
               sae: str, on_cell: Callable[[dict[str, Any]], None] | None) -> list[dict[str, Any]]:
    """The table rows of one (checkpoint, depth) cell: one per category with its best latent's scores."""
    rows = []
    for c, cat in enumerate(categories):
        row = {**cell, "category": cat, "score": float(best[score][c]), "latent": int(best["latent"][c]),
               "f1": float(best["f1"][c]), "precision": float(best["precision"][c]),
               "recall": float(best["recall"][c]), "auroc": float(best["auroc"][c]),
               "n_pos": int(best["n_pos"][c]), "d_sae": d_sae, "sae": sae}
        rows.append(row)
        if on_cell is not None:
            on_cell(row)
    return rows


def text_rows(corpus: Any, split: str, n: int, pool: int, seed: int) -> np.ndarray:
    """The seed's n windows of `split`, drawn without replacement from the pool of windows [0, pool) and sorted
    (the pool is what the activation cache holds; the corpus stores windows in a shuffled order, so the pool is
    a sample across sources)."""
    have = corpus.n_windows(split)
    if n > min(pool, have):
        raise InvalidInput(f"{corpus.ref} has {have} {split} windows of {corpus.seq_len} tokens and the pool holds "
                           f"{min(pool, have)}; asked for {n} per seed (lower the token count or raise text_pool)")
    return np.sort(np.random.default_rng(int(seed) & 0x7FFF_FFFF).choice(min(pool, have), n, replace=False))


def sweep_text(model_ref: str, checkpoints: Sequence[int | str | None], corpus: Any, data_ref: str,
               recipe: SaeRecipe, categories: Sequence[str], seed: int, *, eval_tokens: int, pool: float,
               depths: Sequence[int] | None = None, device: str = "cpu", score: str = "f1", batch_size: int = 16,
               log: Callable[[str], None] | None = None, on_cell: Callable[[dict[str, Any]], None] | None = None,
               ) -> tuple[SizeScores, list[dict[str, Any]], dict[str, Any]]:
    """Scores of one pretrained model on a real-text corpus (text.py) over its checkpoints (None: the model as
    referenced) and the chosen depths, with the table rows and what the seed read ({"train_windows",
    "eval_windows", "eval_positions", "positives"}).

    The activations of every chosen depth come from one forward pass over the pools of train windows
    [0, pool * n_train) and eval windows [0, pool * n_eval), cached (acts_cache.cached_activations_many) and
    shared by every seed; the seed draws its n_train SAE training windows and n_eval scoring windows from them
    (text_rows). Document separators are left out of training and scoring (their residual stream is an outlier
    with no text). The SAE of each depth trains on the seed's windows (cached with them in its key)."""
    from claimgraph.experiments.substrate.acts_cache import cached_activations_many
    from claimgraph.experiments.substrate.load import check_fit, load_model

    from .textcats import category_masks

    T, sep = corpus.seq_len, int(corpus.manifest["separator_id"])
    n_train, n_eval = math.ceil(recipe.train_tokens / T), math.ceil(eval_tokens / T)
    pools = {"train": math.ceil(pool * n_train), "eval": math.ceil(pool * n_eval)}
    rows_of = {"train": text_rows(corpus, "train", n_train, pools["train"], seed),
               "eval": text_rows(corpus, "eval", n_eval, pools["eval"], seed + EVAL_SEED_OFFSET)}
    pools = {k: min(v, corpus.n_windows(k)) for k, v in pools.items()}

    def positions(split: str) -> Tensor:
        """Row indices into the pool's [pool * T] activations of the seed's windows, separators left out."""
        rows = rows_of[split]
        idx = (rows[:, None] * T + np.arange(T)[None]).reshape(-1)                     # [n * T]
        return torch.from_numpy(idx[corpus.tokens[split][rows].reshape(-1) != sep])    # [n * T - seps]

    pos = {k: positions(k) for k in rows_of}
    keep = torch.from_numpy(corpus.tokens["eval"][rows_of["eval"]].reshape(-1) != sep)
    labels = torch.from_numpy(category_masks(corpus, "eval", rows_of["eval"], list(categories))
                              .reshape(-1, len(categories)))[keep]                     # [M, C]
    grid: list[list[list[float]]] = []
    rows: list[dict[str, Any]] = []
    labels_ckpt: list[str] = []
    hooks: list[str] = []
    n_params = 0
    for ckpt in checkpoints:
        model = load_model(model_ref, device=device, checkpoint=ckpt, progress=False)
        n_params = sum(p.numel() for p in model.parameters())
        check_fit(model, model_ref, corpus, data_ref)
        hooks = depth_hooks(model, depths)
        label = str(ckpt) if ckpt is not None else "final"
        labels_ckpt.append(label)
        sae_ref = f"{model_ref}@{label}" if ckpt is not None else model_ref
        cached = {split: cached_activations_many(model, corpus, hooks, split=split, stop=pools[split],
                                                 batch_size=batch_size, log=log) for split in pools}
        row_scores = []
        for hook in hooks:
            sample = {"split": "train", "pool": [0, pools["train"]], "windows": rows_of["train"].tolist(),
                      "separators": "skipped"}
            train = functools.partial(_rows_of, cached["train"][hook], pos["train"])
            sae, folder = provision_sae(model, sae_ref, corpus, data_ref, recipe.model_copy(update={"hook": hook}),
                                        seed, log=log, sample=sample, train_acts=train)
            dev = next(sae.parameters()).device
            with torch.no_grad():
                acts = torch.cat([sae.encode(a.to(dev)).float().cpu()
                                  for a in cached["eval"][hook].tensor()[pos["eval"]].split(4096)])  # [M, d_sae]
            best = best_latents(acts, labels, by=score)
            row_scores.append([float(v) for v in best[score]])
            cell = {"model": model_ref, "model_seed": 0, "n_params": n_params, "checkpoint": label,
                    "depth": depth_of(hook), "hook": hook}
            rows += _cell_rows(cell, categories, best, score, int(acts.shape[1]), folder.name, on_cell)
        grid.append(row_scores)
    read = {"train_windows": rows_of["train"].tolist(), "eval_windows": rows_of["eval"].tolist(),
            "pools": pools, "eval_positions": int(labels.shape[0]),
            "positives": {c: int(v) for c, v in zip(categories, labels.sum(0))}}
    return SizeScores(model=model_ref, n_params=n_params, checkpoints=labels_ckpt, hooks=hooks, score=grid), rows, read


def _rows_of(acts: Any, rows: Tensor) -> Tensor:
    """Rows `rows` of a cached activation slice (acts_cache.ActsSlice), float32 [len(rows), d]."""
    return acts.tensor()[rows]


def text_token_f1(corpus: Any, categories: Sequence[str]) -> list[float]:
    """Token-alone F1 of each category on a text corpus: the token set ranked on the whole train split and
    scored on the whole eval split (textcats.token_set_f1), separators left out; the same for every seed."""
    from .textcats import category_masks

    sep = int(corpus.manifest["separator_id"])
    tok = {s: corpus.tokens[s].reshape(-1) for s in ("train", "eval")}
    lab = {s: category_masks(corpus, s, None, list(categories)).reshape(-1, len(categories)) for s in tok}
    keep = {s: tok[s] != sep for s in tok}
    d_vocab = int(max(tok["train"].max(), tok["eval"].max())) + 1
    return token_set_f1(tok["train"][keep["train"]], lab["train"][keep["train"]], tok["eval"][keep["eval"]],
                        lab["eval"][keep["eval"]], d_vocab)


def assemble(sizes: list[SizeScores], categories: Sequence[str], score: str,
             token_f1: list[float] | None = None) -> ScoreTable:
    """The score table with sizes in ascending parameter count (and each category's token-alone F1)."""
    return ScoreTable(score_name=score, categories=list(categories), sizes=sorted(sizes, key=lambda s: s.n_params),
                      token_f1=token_f1)
