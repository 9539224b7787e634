"""Job kind `pinned_sampling`: pin one SAE feature at its maximum observed activation at every generated
position and sample continuations, as the claim page's "pinned feature sampling": if the feature means "inside
a base64 span", the model should start writing base64.

Definitions (fixed before any run):
- prompts: the first `prompt_len` tokens of held-out sequences that contain no span and no span marker
  (plain sentences), so nothing in the prompt calls for the category;
- continuations: `n_new` tokens at temperature 1 from the synthetic vocabulary, with the same sampling seed in
  every condition (common random numbers: the conditions differ only by the intervention);
- pinning: the SAE spliced in at its hook (error term kept) with the feature set to `pin_value` (default: its
  largest activation on the selection tokens) at the positions that produce the sampled tokens (P-1 onwards);
- metric: share of sampled tokens in the predicted category, pinned minus unpinned (`category_share_diff`);
- control: a random live latent firing about as often (features/target.py), pinned at its own maximum.

Torch is imported inside `run` and `summarize` only.
"""
from __future__ import annotations

from typing import Any

from pydantic import Field

from claimgraph.experiments.features.target import PROMPT_OFFSET, FeatureParams
from claimgraph.experiments.job import Job, SeedResult
from claimgraph.experiments.spec import Criterion
from claimgraph.graph.errors import InvalidInput

CONDITIONS = ("baseline", "pinned", "control")
MARKERS = ("b64:", "=", "<ar>", "</ar>")


class PinnedSamplingParams(FeatureParams):
    n_prompts: int = Field(64, ge=1)  # prompts (plain sentences, no spans) to continue
    prompt_len: int = Field(16, ge=1)  # tokens per prompt, <bos> included
    n_new: int = Field(16, ge=1)  # tokens sampled after each prompt
    pin_value: float | None = Field(None, ge=0.0)  # value the feature is pinned to; None: its max observed
    temperature: float = Field(1.0, gt=0.0)  # sampling temperature
    show: int = Field(6, ge=0)  # example continuations kept in details per condition


class PinnedSamplingJob(Job):
    kind = "pinned_sampling"
    summary = ("Pin the SAE feature for a planted category at its max activation while sampling from plain "
               "prompts: share of sampled tokens in the category, pinned vs not, with a control latent")
    Params = PinnedSamplingParams
    # Registered before any run. The metric is a difference of shares of sampled tokens (0..1). Noise at the
    # defaults: 64 prompts x 16 tokens; tokens within a continuation are correlated (a span, once opened, runs
    # on), so the effective sample is nearer the 64 prompts: an SE of about 0.03-0.04 on a share near 0.1-0.2.
    # Common sampling seeds across conditions make the difference less noisy than that. Ten percentage points
    # more category tokens (~3 SE) is the smallest effect we would call "pinning makes the model write the
    # category"; the band of 0.05 keeps 0.05..0.15 inconclusive. Supported: 3-seed 95% interval above 0.15;
    # refuted: below 0.05. The control latent's difference is reported beside it.
    default_criterion = Criterion(metric="category_share_diff", op=">", threshold=0.1, band=0.05)
    metrics = {
        "category_share_diff": "share of sampled tokens in the predicted category, pinned - baseline",
        "category_share_pinned": "share of sampled tokens in the predicted category with the feature pinned",
        "category_share_baseline": "the same share without intervention",
        "control_category_share": "the same share with the control latent pinned at its max",
        "control_share_diff": "control_category_share - category_share_baseline",
        "category_run_frac_pinned": "share of the sampled category tokens that follow a category token or the span "
                                    "opener (a run, as in a span, rather than an isolated token) (pinned)",
        "category_run_frac_baseline": "the same share without intervention",
        "span_open_frac_pinned": "fraction of continuations that open a span of the category (pinned)",
        "span_open_frac_baseline": "fraction of continuations that open a span of the category (baseline)",
        "pin_value": "value the feature was pinned to",
        "feature_f1": "F1 of the feature as a detector of the category label (selection tokens)",
    }

    def run(self, ctx: Any, params: PinnedSamplingParams, seed: int) -> SeedResult:
        from claimgraph.experiments.context import torch_threads
        from claimgraph.experiments.features.target import prepare

        with torch_threads(params.threads):
            target = prepare(ctx, params, seed, job=self.kind)
            return self._measure(ctx, params, seed, target)

    def _measure(self, ctx: Any, params: PinnedSamplingParams, seed: int, t: Any) -> SeedResult:
        import torch

        from claimgraph.experiments.features.intervene import clamp_hook
        from claimgraph.experiments.features.sampling import sample
        from claimgraph.experiments.features.target import control_latent

        P, n_new = params.prompt_len, params.n_new
        if P + n_new > t.model.n_ctx:
            raise InvalidInput(f"prompt_len {P} + n_new {n_new} exceeds the model's context {t.model.n_ctx}")
        prompts = plain_prompts(t.corpus, params.n_prompts, P, seed + PROMPT_OFFSET)    # [n, P]
        control = control_latent(t.stats, t.feature, seed)
        pin = params.pin_value if params.pin_value is not None else float(t.stats.max_act[t.feature])
        pin_control = float(t.stats.max_act[control])
        where = torch.zeros(P + n_new, dtype=torch.bool)
        where[P - 1:] = True                                       # [P + n_new]: the positions that generate
        hooks = {"baseline": [],
                 "pinned": [(t.hook, clamp_hook(t.sae, [t.feature], pin, positions=where))],
                 "control": [(t.hook, clamp_hook(t.sae, [control], pin_control, positions=where))]}
        ctx.log(f"sampling {n_new} tokens after {len(prompts)} plain prompts of {P} tokens: feature {t.feature} "
                f"pinned at {pin:.3f}, control latent {control} at {pin_control:.3f}")
        cat = t.category_mask()                                                        # [V]
        opener = span_opener(t.corpus.vocab, t.predict)
        out: dict[str, Any] = {}
        for cond in CONDITIONS:
            seqs = sample(t.model, prompts, n_new, seed=seed, temperature=params.temperature,
                          fwd_hooks=hooks[cond], vocab_limit=t.d_corpus,
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
        metrics = {
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
        _plot(plot, out, t, control, params)
        details = {**t.details(), "control_latent": control, "pin_value": pin, "control_pin_value": pin_control,
                   "conditions": out, "plot": str(plot.relative_to(ctx.artifacts_dir))}
        return SeedResult(seed=seed, metrics=metrics, details=details)

    def summarize(self, ctx: Any, params: PinnedSamplingParams, results: list[SeedResult]) -> dict[str, Any]:
        """Notes saying what the per-seed numbers mean."""
        if not results:
            return {}
        d0 = results[0].details

        def per_seed(name: str) -> str:
            return ", ".join(f"{r.metrics[name]:.3f}" for r in results)

        notes = (f"Pinning the SAE feature that best detects {d0['label']} at {d0['hook']} at its maximum "
                 f"activation while sampling {params.n_new} tokens after {params.n_prompts} plain prompts: the share "
                 f"of {d0['predict']} tokens goes from {per_seed('category_share_baseline')} to "
                 f"{per_seed('category_share_pinned')} per seed (control latent pinned: "
                 f"{per_seed('control_category_share')}). Of the {d0['predict']} tokens sampled with the pin, "
                 f"{per_seed('category_run_frac_pinned')} continue a run of the category (baseline "
                 f"{per_seed('category_run_frac_baseline')}); the rest stand alone"
                 f"{' (in this corpus the capitals A-Z are also name initials)' if d0['predict'] == 'base64' else ''}"
                 ". The pinned value (the maximum seen on the selection tokens) differs between seeds: "
                 f"{per_seed('pin_value')}. The pin acts through the SAE's decoder row at one layer "
                 "while the error term and other latents keep saying the text is a plain sentence; pinning at "
                 "several times the maximum, at a later layer, or with a model trained longer could change it.")
        return {"notes": notes, "category_share_diff": [r.metrics["category_share_diff"] for r in results]}


def plain_prompts(corpus: Any, n: int, length: int, seed: int) -> Any:
    """n prompts [n, length]: the first `length` tokens of sequences sampled with `seed` (more drawn as needed)
    that hold no span position and no span marker."""
    import torch

    if length > corpus.seq_len:
        raise InvalidInput(f"prompt_len {length} exceeds the corpus sequence length {corpus.seq_len}")
    markers = corpus.vocab.encode(list(MARKERS))
    found: list[Any] = []
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


def span_opener(vocab: Any, predict: str) -> int | None:
    """The marker that opens a span of the predicted category (b64: for base64, <ar> for arabic), if any."""
    return {"base64": vocab.id("b64:"), "arabic": vocab.id("<ar>")}.get(predict)


def _plot(path: Any, out: dict[str, Any], t: Any, control: int, params: PinnedSamplingParams) -> None:
    """Category share per condition, and by generated position."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 3.8), layout="constrained")
    ax_bar, ax_pos = fig.subplots(1, 2)
    colors = {"baseline": "tab:blue", "pinned": "tab:red", "control": "tab:gray"}
    labels = {"baseline": "no intervention", "pinned": f"feature {t.feature} pinned",
              "control": f"control latent {control} pinned"}
    ax_bar.bar(range(3), [out[c]["share"] for c in CONDITIONS], color=[colors[c] for c in CONDITIONS])
    ax_bar.set_xticks(range(3), [labels[c] for c in CONDITIONS], fontsize=8)
    ax_bar.set(ylabel=f"share of sampled tokens that are {t.predict}", ylim=(0, 1),
               title=f"{params.n_prompts} prompts x {params.n_new} tokens")
    for c in CONDITIONS:
        ax_pos.plot(range(1, params.n_new + 1), out[c]["by_position"], "o-", color=colors[c], label=labels[c])
    ax_pos.set(xlabel="generated token", ylabel=f"share {t.predict}", ylim=(0, 1), title="by position")
    ax_pos.legend(fontsize=8)
    fig.suptitle(f"{t.hook}: pinned sampling of the {t.label} feature")
    fig.savefig(path, dpi=110)
