"""When and where planted categories become readable from SAE latents: emergence across training time
(checkpoints), depth (layers) and scale (model sizes), and re-emergence across depth, read off a table of
detection scores. Pure Python (no torch): the sweep that fills the table lives in sweep.py.

The table: for every model size s (ascending parameter count), checkpoint t (ascending training step) and
depth d (0 = the embedding output `blocks.0.hook_resid_pre`, d >= 1 = `blocks.{d-1}.hook_resid_post`; a sweep
of chosen depths (`depths`) holds those only, in order, and the series below run over them), and every
category c, `score[s][t][d][c]` is the best single latent's detection score (F1 by default) of c among the
latents of an SAE trained at that site (see claimgraph.experiments.features.select).

Definitions (fixed before any sweep was run):
- a category is *present* at a cell when its score is >= the threshold θ;
- *crossing* of a series x_0..x_{n-1}: x_0 < θ and some later x_i >= θ; the emergence index is the first such i.
  A series already >= θ at index 0 has no crossing (it was there from the start), nor has one never >= θ;
- the three axes, per category:
  time:  per size, x_t = max over depths of score[s][t][·][c] (present anywhere in the model at checkpoint t);
  depth: per size, at the final checkpoint, x_d = score[s][-1][d][c];
  scale: at each size's final checkpoint, x_s = max over depths of score[s][-1][·][c], sizes ascending;
- *re-emergence* of a depth series: there are depths i < j < k with x_i >= θ, x_k >= θ, x_j < θ, and both the
  fall x_i - x_j and the rise x_k - x_j at least `margin`: the category is present, is lost, and is present
  again, with a dip larger than noise. A wiggle around θ smaller than the margin is not re-emergence.

Which categories can emerge: one whose *token-alone F1* (the best F1 of a detector that sees only the current
token, ScoreTable.token_f1, measured on the same held-out tokens) reaches θ is readable from the embedding
itself, so it is present at depth 0, in the smallest model and at any checkpoint where the embedding has
learnt the token: its series cannot cross by construction, and counting it would bound every fraction by the
share of context categories (it did: 10 of the 11 default categories were token-readable and
emergence_fraction_min could not exceed about 0.1). The crossing fractions therefore count only the categories
that need context (token_f1 < θ); re-emergence counts every category.

Metrics (a metric is left out when its axis has fewer than two points, e.g. one size, one checkpoint, or no
category needs context):
- context_categories: how many categories need context (the ones the fractions count);
- time_threshold_fraction: share of (context category, size) pairs whose time series crosses (the time axis
  starts at the first checkpoint after initialisation: at step 0 nothing is learnt, so a crossing from there
  would only mean "learnt at all");
- depth_threshold_fraction: share of (context category, size) pairs whose depth series crosses;
- scale_threshold_fraction: share of context categories whose scale series crosses;
- emergence_fraction_min: the smallest of the three (claim 1 names all three axes, so it needs each of them);
- reemergence_count / reemergence_fraction: (category, size) pairs whose final-checkpoint depth series
  re-emerges (sizes with at least three depths), and their share of those pairs;
- final_present_fraction: share of categories present somewhere in the largest model at its final checkpoint
  (context: when it is low the emergence metrics say little).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class SizeScores(BaseModel):
    """One model size's scores: score[checkpoint][depth][category]."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="model reference, e.g. 'toy:small'")
    n_params: int = Field(ge=0, description="parameter count, orders the sizes")
    checkpoints: list[str] = Field(min_length=1, description="checkpoint labels, ascending training time")
    hooks: list[str] = Field(min_length=1, description="hook name at each depth")
    score: list[list[list[float]]] = Field(description="[checkpoint][depth][category]")
    trained: str | None = Field(None, description="a toy model's training cache key (which replicate of its "
                                "family; None for an hf model or a table averaged over replicates)")


class ScoreTable(BaseModel):
    """Detection scores of every category over sizes x checkpoints x depths."""

    model_config = ConfigDict(extra="forbid")

    score_name: Literal["f1", "auroc"] = "f1"
    categories: list[str] = Field(min_length=1)
    sizes: list[SizeScores] = Field(min_length=1, description="ascending n_params")
    token_f1: list[float] | None = Field(None, description="per category: best F1 of a detector that sees the "
                                         "current token alone (None: not measured, every category is tested)")

    @model_validator(mode="after")
    def _shapes(self) -> "ScoreTable":
        n_cat = len(self.categories)
        for s in self.sizes:
            shape_ok = (len(s.score) == len(s.checkpoints)
                        and all(len(row) == len(s.hooks) for row in s.score)
                        and all(len(cell) == n_cat for row in s.score for cell in row))
            if not shape_ok:
                raise ValueError(f"{s.model}: score must be [{len(s.checkpoints)} checkpoints][{len(s.hooks)} depths]"
                                 f"[{n_cat} categories]")
        if self.token_f1 is not None and len(self.token_f1) != n_cat:
            raise ValueError(f"token_f1 has {len(self.token_f1)} values for {n_cat} categories")
        counts = [s.n_params for s in self.sizes]
        if counts != sorted(counts):
            raise ValueError(f"sizes must be in ascending parameter count, got {counts}")
        return self

    def needs_context(self, threshold: float) -> list[bool]:
        """Per category: True when the current token alone cannot reach the threshold (token_f1 < threshold),
        i.e. a latent that detects it must read context; all True when token_f1 was not measured."""
        return [True] * len(self.categories) if self.token_f1 is None else [f < threshold for f in self.token_f1]

    def time_series(self, s: int, c: int) -> list[float]:
        """Best score over depths at each checkpoint of size s, category c."""
        return [max(row[c] for row in ckpt) for ckpt in self.sizes[s].score]

    def depth_series(self, s: int, c: int, t: int = -1) -> list[float]:
        """Score at each depth of size s at checkpoint t (default the final one), category c."""
        return [cell[c] for cell in self.sizes[s].score[t]]

    def scale_series(self, c: int) -> list[float]:
        """Best score over depths at each size's final checkpoint, category c, sizes ascending."""
        return [max(row[c] for row in size.score[-1]) for size in self.sizes]


def depth_of(hook: str) -> int:
    """The depth of a residual-stream hook: 0 for `blocks.0.hook_resid_pre` (the embedding output), d for
    `blocks.{d-1}.hook_resid_post`."""
    parts = hook.split(".")
    if len(parts) == 3 and parts[0] == "blocks" and parts[1].isdigit():
        if parts[2] == "hook_resid_post":
            return int(parts[1]) + 1
        if parts[2] == "hook_resid_pre":
            return int(parts[1])
    raise ValueError(f"{hook!r} is not a residual-stream hook blocks.N.hook_resid_pre/post")


def first_crossing(series: Sequence[float], threshold: float) -> int | None:
    """The first index i > 0 with series[i] >= threshold when series[0] < threshold; None otherwise."""
    if len(series) < 2 or series[0] >= threshold:
        return None
    return next((i for i, x in enumerate(series) if x >= threshold), None)


def reemergence(series: Sequence[float], threshold: float, margin: float) -> tuple[int, int, int] | None:
    """(i, j, k) with i < j < k, x_i and x_k >= threshold, x_j < threshold, and x_i - x_j, x_k - x_j >= margin
    (the earliest such dip j, with the best i before and k after it); None when the series has no such dip."""
    assert margin >= 0, f"margin must be >= 0, got {margin}"
    n = len(series)
    for j in range(1, n - 1):
        xj = series[j]
        if xj >= threshold:
            continue
        i = max(range(j), key=lambda a: series[a])
        k = max(range(j + 1, n), key=lambda b: series[b])
        need = max(threshold, xj + margin)
        if series[i] >= need and series[k] >= need:
            return i, j, k
    return None


class Emergence(BaseModel):
    """One series' outcome: where it crossed (None: no crossing) and the series itself."""

    category: str
    axis: Literal["time", "depth", "scale"]
    size: str | None = Field(None, description="model of the series (None for the scale axis)")
    index: int | None = Field(None, description="emergence index along the axis")
    at: str | None = Field(None, description="checkpoint label, hook or model where it crossed")
    series: list[float]


class Reemergence(BaseModel):
    """A depth series that falls and rises again: depths (i, j, k) of the peak, the dip and the return."""

    category: str
    size: str
    checkpoint: str
    depths: tuple[int, int, int]
    hooks: tuple[str, str, str]
    series: list[float]


class EmergenceReport(BaseModel):
    threshold: float
    margin: float
    metrics: dict[str, float]
    emergence: list[Emergence]
    reemergence: list[Reemergence] = Field(description="at the final checkpoint (the metrics count these)")
    reemergence_all_checkpoints: list[Reemergence] = Field(description="at every checkpoint, for reading only")


def _fraction(flags: list[bool]) -> float:
    return sum(flags) / len(flags)


def analyse(table: ScoreTable, threshold: float, margin: float) -> EmergenceReport:
    """Emergence along each axis (categories that need context only) and re-emergence across depth (every
    category); metrics as in the module docstring."""
    cats, sizes = table.categories, table.sizes
    context = [c for c, needs in enumerate(table.needs_context(threshold)) if needs]
    out: list[Emergence] = []
    metrics: dict[str, float] = {"context_categories": float(len(context))}

    def record(axis: str, size: str | None, c: int, series: list[float], labels: list[str]) -> bool:
        idx = first_crossing(series, threshold)
        out.append(Emergence(category=cats[c], axis=axis, size=size, index=idx,
                             at=None if idx is None else labels[idx], series=series))
        return idx is not None

    time_flags = [record("time", s.model, c, table.time_series(si, c), s.checkpoints)
                  for si, s in enumerate(sizes) if len(s.checkpoints) >= 2 for c in context]
    depth_flags = [record("depth", s.model, c, table.depth_series(si, c), s.hooks)
                   for si, s in enumerate(sizes) if len(s.hooks) >= 2 for c in context]
    scale_flags = ([record("scale", None, c, table.scale_series(c), [s.model for s in sizes])
                    for c in context] if len(sizes) >= 2 else [])
    axes = {}
    for name, flags in (("time", time_flags), ("depth", depth_flags), ("scale", scale_flags)):
        if flags:
            axes[f"{name}_threshold_fraction"] = _fraction(flags)
    metrics.update(axes)
    if len(axes) == 3:
        metrics["emergence_fraction_min"] = min(axes.values())

    def dips(si: int, t: int) -> list[Reemergence]:
        s = sizes[si]
        found = []
        for c in range(len(cats)):
            series = table.depth_series(si, c, t)
            hit = reemergence(series, threshold, margin)
            if hit is not None:
                found.append(Reemergence(category=cats[c], size=s.model, checkpoint=s.checkpoints[t], depths=hit,
                                         hooks=tuple(s.hooks[d] for d in hit), series=series))
        return found

    deep = [si for si, s in enumerate(sizes) if len(s.hooks) >= 3]
    final = [r for si in deep for r in dips(si, len(sizes[si].checkpoints) - 1)]
    every = [r for si in deep for t in range(len(sizes[si].checkpoints)) for r in dips(si, t)]
    if deep:
        metrics["reemergence_count"] = float(len(final))
        metrics["reemergence_fraction"] = len(final) / (len(deep) * len(cats))
    metrics["final_present_fraction"] = _fraction([table.scale_series(c)[-1] >= threshold for c in range(len(cats))])
    return EmergenceReport(threshold=threshold, margin=margin, metrics=metrics, emergence=out, reemergence=final,
                           reemergence_all_checkpoints=every)


def mean_table(tables: list[dict[str, Any]]) -> ScoreTable:
    """The cell-wise mean of per-seed score tables (same sizes, checkpoints, depths, categories)."""
    parsed = [ScoreTable.model_validate(t) for t in tables]
    first = parsed[0]
    for t in parsed[1:]:
        same = (t.categories == first.categories and
                [(s.model, s.checkpoints, s.hooks) for s in t.sizes] ==
                [(s.model, s.checkpoints, s.hooks) for s in first.sizes])
        assert same, "seeds swept different grids; they cannot be averaged"
    sizes = []
    for si, s in enumerate(first.sizes):
        score = [[[sum(t.sizes[si].score[a][b][c] for t in parsed) / len(parsed) for c in range(len(first.categories))]
                  for b in range(len(s.hooks))] for a in range(len(s.checkpoints))]
        sizes.append(s.model_copy(update={"score": score, "trained": s.trained if len(parsed) == 1 else None}))
    token_f1 = None
    if all(t.token_f1 is not None for t in parsed):
        token_f1 = [sum(t.token_f1[c] for t in parsed if t.token_f1) / len(parsed) for c in range(len(first.categories))]
    return first.model_copy(update={"sizes": sizes, "token_f1": token_f1})
