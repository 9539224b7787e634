"""One seed of `pinned_sampling`: continue plain prompts (no span, no marker) by sampling, without intervention,
with the chosen feature pinned at its maximum activation at the generating positions, and with each of
`n_controls` frequency-matched control latents pinned at the same value; the same uniforms in every condition,
so they differ only by the intervention.
After all seeds, the notes. Definitions: the package docstring."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from claimgraph.experiments.context import RunContext
from claimgraph.experiments.features.intervene import RowClamp, clamp_hook
from claimgraph.experiments.features.sampling import sample, sample_rows
from claimgraph.experiments.features.target import PROMPT_OFFSET, Target, null_latents
from claimgraph.experiments.job import SeedResult
from claimgraph.experiments.substrate.corpus import SyntheticCorpus, Vocab
from claimgraph.experiments.substrate.lm import setting_note
from claimgraph.graph.errors import InvalidInput

from . import PinnedSamplingParams
from .plots import plot_pinned

MARKERS = ("b64:", "=", "<ar>", "</ar>")  # span markers a plain prompt must not hold


def measure(ctx: RunContext, params: PinnedSamplingParams, seed: int, t: Target) -> SeedResult:
    """Sample from plain prompts without intervention, with the feature pinned, and with each control latent
    pinned at the same value (the same uniforms in each); metrics, details and the plot. With `multiples`, the dose-response
    design instead (`measure_dose`)."""
    if params.multiples:
        return measure_dose(ctx, params, seed, t)
    P, n_new = params.prompt_len, params.n_new
    if P + n_new > t.model.n_ctx:
        raise InvalidInput(f"prompt_len {P} + n_new {n_new} exceeds the model's context {t.model.n_ctx}")
    prompts = plain_prompts(t.corpus, params.n_prompts, P, seed + PROMPT_OFFSET)    # [n, P]
    controls = null_latents(t.stats, t.feature, params.n_controls, seed)
    pin = params.pin_value if params.pin_value is not None else float(t.stats.max_act[t.feature])
    where = torch.zeros(P + n_new, dtype=torch.bool)
    where[P - 1:] = True                                       # [P + n_new]: the positions that generate
    hooks = {"baseline": [], "pinned": [(t.hook, clamp_hook(t.sae, [t.feature], pin, positions=where))],
             **{f"control{i}": [(t.hook, clamp_hook(t.sae, [c], pin, positions=where))]
                for i, c in enumerate(controls)}}
    ctx.log(f"sampling {n_new} tokens after {len(prompts)} plain prompts of {P} tokens: feature {t.feature} "
            f"and control latents {controls} each pinned at {pin:.3f}")
    cat = t.category_mask()                                                        # [V]
    opener = span_opener(t.corpus.vocab, t.predict)
    out: dict[str, Any] = {}
    for cond, fwd in hooks.items():
        seqs = sample(t.model, prompts, n_new, seed=seed, temperature=params.temperature,
                      fwd_hooks=fwd, vocab_limit=t.d_corpus,
                      batch_size=params.model_batch_size)                          # [n, P + n_new]
        new = seqs[:, P:]                                                          # [n, n_new]
        in_cat = cat[new]                                                          # [n, n_new]
        opened = (new == opener).any(1) if opener is not None else torch.zeros(len(new), dtype=torch.bool)
        prev = seqs[:, P - 1:-1]                                                   # [n, n_new] token before each
        follows = cat[prev] if opener is None else cat[prev] | (prev == opener)    # [n, n_new]
        in_run = in_cat & follows                                                  # [n, n_new]
        out[cond] = {"share": float(in_cat.float().mean()), "by_position": in_cat.float().mean(0).tolist(),
                     "span_open_frac": float(opened.float().mean()),
                     "run_frac": float(in_run.sum()) / max(int(in_cat.sum()), 1),
                     "examples": [{"prompt": " ".join(t.decode(s[:P])), "continuation": " ".join(t.decode(s[P:]))}
                                  for s in seqs[:params.show]]}
        ctx.log(f"{cond}: {out[cond]['share']:.3f} of sampled tokens are {t.predict}")
    per_control = [out.pop(f"control{i}") for i in range(len(controls))]

    def control_mean(key: str) -> float:
        return sum(c[key] for c in per_control) / len(per_control)

    out["control"] = {"share": control_mean("share"), "span_open_frac": control_mean("span_open_frac"),
                      "run_frac": control_mean("run_frac"),
                      "by_position": torch.tensor([c["by_position"] for c in per_control]).mean(0).tolist(),
                      "examples": per_control[0]["examples"], "per_latent_share": [c["share"] for c in per_control]}
    metrics = {
        "category_share_over_controls": out["pinned"]["share"] - out["control"]["share"],
        "category_share_diff": out["pinned"]["share"] - out["baseline"]["share"],
        "category_share_pinned": out["pinned"]["share"],
        "category_share_baseline": out["baseline"]["share"],
        "control_category_share": out["control"]["share"],
        "control_share_diff": out["control"]["share"] - out["baseline"]["share"],
        "category_run_frac_pinned": out["pinned"]["run_frac"],
        "category_run_frac_baseline": out["baseline"]["run_frac"],
        "span_open_frac_pinned": out["pinned"]["span_open_frac"],
        "span_open_frac_baseline": out["baseline"]["span_open_frac"],
        "pin_value": pin,
        "feature_f1": t.choice["f1"],
    }
    ctx.log_metrics(0, metrics)
    plot = ctx.artifact(f"seed{seed}/pinned_sampling.png")
    plot_pinned(plot, out, t, controls, params)
    details = {**t.details(), "control_latents": controls, "pin_value": pin, "control_pin_value": pin,
               "conditions": out, "plot": str(plot.relative_to(ctx.artifacts_dir))}
    return SeedResult(seed=seed, metrics=metrics, details=details)


def summarize(ctx: RunContext, params: PinnedSamplingParams, results: list[SeedResult]) -> dict[str, Any]:
    """Notes saying what the per-seed numbers mean."""
    if not results:
        return {}
    d0 = results[0].details

    def per_seed(name: str) -> str:
        return ", ".join(f"{r.metrics[name]:.3f}" for r in results)

    if params.multiples:
        curve = "; ".join(f"x{m:g}: feature {per_seed(f'share_feature_x{m:g}')} vs controls "
                          f"{per_seed(f'share_controls_x{m:g}')}" for m in params.multiples)
        notes = (f"Pinning the SAE feature that best detects {d0['label']} at {d0['hook']} at multiples of its "
                 f"maximum activation while sampling {params.n_new} tokens after {params.n_prompts} prompts "
                 f"without a span, against {params.n_controls} frequency-matched control latents pinned at the "
                 f"same multiples of theirs. Share of {d0['predict']} tokens per seed (baseline "
                 f"{per_seed('share_baseline')}): {curve}. Read at x{params.at_multiple:g} (fixed before the "
                 f"run): feature minus controls {per_seed('share_over_controls')}. The pin acts through one "
                 "decoder row at one layer while the error term and other latents keep the prompt's context; "
                 "few prompts and short continuations make each share noisy; the interval covers SAE seeds.")
        return {"notes": notes + setting_note(ctx.model_ref, ctx.data_ref), "share_over_controls": [r.metrics["share_over_controls"] for r in results]}

    notes = (f"Pinning the SAE feature that best detects {d0['label']} at {d0['hook']} at its maximum "
             f"activation while sampling {params.n_new} tokens after {params.n_prompts} plain prompts: the share "
             f"of {d0['predict']} tokens goes from {per_seed('category_share_baseline')} to "
             f"{per_seed('category_share_pinned')} per seed; {params.n_controls} frequency-matched control latents "
             f"pinned at the same value reach {per_seed('control_category_share')} on average, so the feature "
             f"writes {per_seed('category_share_over_controls')} more of the category than a latent pushed as "
             f"hard. Of the {d0['predict']} tokens sampled with the pin, "
             f"{per_seed('category_run_frac_pinned')} continue a run of the category (baseline "
             f"{per_seed('category_run_frac_baseline')}); the rest stand alone"
             f"{' (in this corpus the capitals A-Z are also name initials)' if d0['predict'] == 'base64' else ''}"
             ". The pinned value (the maximum seen on the selection tokens) differs between seeds: "
             f"{per_seed('pin_value')}. The pin acts through the SAE's decoder row at one layer "
             "while the error term and other latents keep saying the text is a plain sentence; pinning at "
             "several times the maximum, at a later layer, or with a model trained longer could change it.")
    return {"notes": notes + setting_note(ctx.model_ref, ctx.data_ref),
            "category_share_over_controls": [r.metrics["category_share_over_controls"] for r in results]}


def plain_prompts(corpus: SyntheticCorpus, n: int, length: int, seed: int) -> Tensor:
    """n prompts [n, length]: the first `length` tokens of sequences sampled with `seed` (more drawn as needed)
    that hold no span position and no span marker."""
    if length > corpus.seq_len:
        raise InvalidInput(f"prompt_len {length} exceeds the corpus sequence length {corpus.seq_len}")
    markers = corpus.vocab.encode(list(MARKERS))
    found: list[Tensor] = []
    have, draw = 0, max(4 * n, 16)
    for attempt in range(6):
        seqs = corpus.sample(draw, seed + attempt)[:, :length]                         # [draw, length]
        lab = corpus.span_labels(seqs)
        spans = torch.zeros_like(seqs, dtype=torch.bool)
        for k, v in lab.items():
            if k.endswith("_span") and k != "paren_span":
                spans |= v
        ok = ~(spans.any(1) | torch.isin(seqs, markers).any(1))                       # [draw]
        found.append(seqs[ok])
        have += int(ok.sum())
        if have >= n:
            break
    out = torch.cat(found)[:n]
    if len(out) < n:
        raise InvalidInput(f"only {len(out)} of {n} prompts of {length} tokens are free of spans; use a shorter "
                           "prompt_len or fewer prompts")
    return out


def span_opener(vocab: Vocab, predict: str) -> int | None:
    """The marker that opens a span of the predicted category (b64: for base64, <ar> for arabic), if any."""
    return {"base64": vocab.id("b64:"), "arabic": vocab.id("<ar>")}.get(predict)


def text_prompts(t: Target, n: int, length: int) -> Tensor:
    """n prompts [n, length]: the first `length` tokens of measurement windows (eval split, after the selection
    windows) that hold no base64 or Arabic position; each starts with the document separator."""
    from claimgraph.experiments.substrate.text import LABELS, is_text

    corpus = t.corpus
    assert is_text(corpus), "text_prompts reads a text: corpus"
    if length > corpus.seq_len:
        raise InvalidInput(f"prompt_len {length} exceeds the corpus window of {corpus.seq_len} tokens")
    lab = corpus.labels["eval"][t.n_select_windows:, :length]                      # [N, length, L]
    span = lab[..., [LABELS.index("base64"), LABELS.index("arabic")]].any(axis=(1, 2))  # [N]
    rows = np.flatnonzero(~span)[:n] + t.n_select_windows
    if len(rows) < n:
        raise InvalidInput(f"only {len(rows)} measurement windows of {corpus.ref} start without a span; lower n_prompts")
    return torch.from_numpy(corpus.tokens["eval"][rows, :length]).long()


def measure_dose(ctx: RunContext, params: PinnedSamplingParams, seed: int, t: Target) -> SeedResult:
    """The feature and `n_controls` frequency-matched control latents each pinned at every multiple of its own
    maximum activation at the generating positions, and a baseline; one batch, the same uniforms per prompt."""
    P, n_new = params.prompt_len, params.n_new
    if P + n_new > t.model.n_ctx:
        raise InvalidInput(f"prompt_len {P} + n_new {n_new} exceeds the model's context {t.model.n_ctx}")
    prompts = (text_prompts(t, params.n_prompts, P) if t.text
               else plain_prompts(t.corpus, params.n_prompts, P, seed + PROMPT_OFFSET))  # [n, P]
    controls = null_latents(t.stats, t.feature, params.n_controls, seed)
    conds: list[tuple[str, int, float]] = [("baseline", t.feature, float("nan"))]
    for latent, name in [(t.feature, "feature"), *[(c, f"control{i}") for i, c in enumerate(controls)]]:
        top = float(t.stats.max_act[latent])
        conds += [(f"{name}_x{m:g}", latent, m * top) for m in params.multiples]
    n = len(prompts)
    g = torch.Generator().manual_seed(int(seed))
    uniforms = torch.rand(n, n_new, generator=g, dtype=torch.float64)              # [n, n_new]
    lat = torch.tensor([c[1] for c in conds]).repeat_interleave(n)                 # [C * n]
    val = torch.tensor([c[2] for c in conds]).repeat_interleave(n)                 # [C * n]
    ctx.log(f"sampling {n_new} tokens after {n} prompts of {P} tokens in {len(conds)} conditions: feature "
            f"{t.feature} and controls {controls} pinned at {list(params.multiples)} x their max activation")
    clamp = RowClamp(t.sae, lat, val, start=P - 1)
    seqs = sample_rows(t.model, prompts.repeat(len(conds), 1), uniforms.repeat(len(conds), 1),
                       temperature=params.temperature, clamp=clamp, hook=t.hook,
                       vocab_limit=None if t.text else t.d_corpus)                 # [C * n, P + n_new]
    cat = t.category_mask()                                                        # [V]
    share = cat[seqs[:, P:]].float().mean(1).reshape(len(conds), n).mean(1)        # [C]
    by = {c[0]: float(s) for c, s in zip(conds, share)}
    metrics: dict[str, float] = {"share_baseline": by["baseline"], "controls_used": float(len(controls)),
                                 "pin_value": float(t.stats.max_act[t.feature]), "feature_f1": t.choice["f1"]}
    for m in params.multiples:
        k = f"x{m:g}"
        ctrl = sum(by[f"control{i}_{k}"] for i in range(len(controls))) / len(controls)
        metrics[f"share_feature_{k}"] = by[f"feature_{k}"]
        metrics[f"share_controls_{k}"] = ctrl
        metrics[f"share_over_controls_{k}"] = by[f"feature_{k}"] - ctrl
    at = f"x{params.at_multiple:g}"
    metrics["share_over_controls"] = metrics[f"share_over_controls_{at}"]
    metrics["share_diff_at"] = metrics[f"share_feature_{at}"] - by["baseline"]
    ctx.log_metrics(0, metrics)
    ctx.log("category share by condition: " + ", ".join(f"{k} {v:.3f}" for k, v in by.items()))
    examples = {c[0]: [{"prompt": "".join(t.decode(s[:P])), "continuation": "".join(t.decode(s[P:]))}
                       for s in seqs[i * n:i * n + params.show]] for i, c in enumerate(conds)
                if c[0] == "baseline" or c[0].startswith("feature") or c[0].startswith("control0")}
    details = {**t.details(), "control_latents": controls, "multiples": list(params.multiples),
               "at_multiple": params.at_multiple, "share_by_condition": by, "examples": examples}
    return SeedResult(seed=seed, metrics=metrics, details=details)
