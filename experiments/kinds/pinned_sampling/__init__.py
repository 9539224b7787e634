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
- metric: share of sampled tokens in the predicted category with the feature pinned, minus the mean share with
  each of `n_controls` frequency-matched control latents (features/target.py `null_latents`) pinned at the same
  value (`category_share_over_controls`); pinned minus unpinned is reported as `category_share_diff`.

Metric changed (issue 11): the default criterion read `category_share_diff` (pinned - unpinned), and the
control was one random latent pinned at its own maximum. The size of a push is an effect of its own: in a
planted model whose baseline confidently writes other tokens (tests/experiments/test_feature_criteria.py), a
direction that reads out nothing, pinned as hard as the feature (a push the size of the residual stream),
raised the category's share by 0.05-0.06 in every seed only by diluting what the residual stream said, so the
criterion could not come out refuted there (0.054 [0.047, 0.061], inconclusive); pinned at 6 times that
value, it came out supported (0.20 [0.16, 0.24]). Controls pinned at
the feature's own pin value (decoder rows have unit norm, so the same push) take that out: the default
criterion now reads `category_share_over_controls`; threshold and band are unchanged (ten percentage points
more of the category than latents pushed as hard). On toy:default at the default pin, control latents pinned
at the feature's value stayed near or below the baseline share (mean of 3 per seed: base64 0.046 / 0.037 /
0.101 vs baseline 0.052 / 0.090 / 0.080; arabic 0.011 / 0.032 / 0.040 vs 0.023 / 0.039 / 0.034), so the pilot
moved little: base64 0.019 / 0.183 / 0.219 (was 0.014 / 0.131 / 0.240), arabic 0.102 / 0.029 / 0.250 (was
0.089 / 0.022 / 0.256), both still inconclusive.

Dose-response against controls (`multiples` set; what the real-model experiments register, written before any
real-model run): the size of a pin is a trivial effect of its own (a large enough vector added to the residual
stream makes any model write odd tokens, some of them in the category), so one control latent at its own
maximum cannot tell a specific effect from a large push. Here the feature and `n_controls` frequency-matched
control latents (features/target.py `null_latents`) are each pinned at every multiple of their own maximum
activation on the selection tokens, all conditions sampled in one batch with the same uniforms per prompt;
`share_over_controls_x<m>` = the feature's category share minus the controls' mean share at multiple m, and
the criterion is read at `at_multiple`, fixed before the run. On text: corpora the prompts are the first
prompt_len tokens of measurement windows (held-out documents) holding no base64 or Arabic position, and the
category is the tokenizer's token set (substrate/text.py `category_token_mask`). Registered for the real-model
experiments: multiples (1, 2, 4), read at 2, `share_over_controls > 0.1 band 0.05` (ten percentage points more
category tokens than controls pushed as hard; supported above 0.15, refuted below 0.05 over 3 seeds).

The sampling is in run.py and its plot in plots.py; this module does not import torch.
"""
from __future__ import annotations

from pydantic import Field, model_validator

from claimgraph.experiments.features.target import FeatureJob, FeatureParams
from claimgraph.experiments.spec import Criterion

CONDITIONS = ("baseline", "pinned", "control")


class PinnedSamplingParams(FeatureParams):
    n_prompts: int = Field(64, ge=1)  # prompts (plain sentences, no spans) to continue
    prompt_len: int = Field(16, ge=1)  # tokens per prompt, <bos> included
    n_new: int = Field(16, ge=1)  # tokens sampled after each prompt
    pin_value: float | None = Field(None, ge=0.0)  # value the feature is pinned to; None: its max observed
    temperature: float = Field(1.0, gt=0.0)  # sampling temperature
    show: int = Field(6, ge=0)  # example continuations kept in details per condition
    n_controls: int = Field(3, ge=1)  # frequency-matched control latents, each pinned at the feature's pin value
    #                                   (with `multiples`: at the same multiples of its own maximum)
    # dose-response against controls (empty: off, the default design above)
    multiples: list[float] = Field(default_factory=list)  # pins at these multiples of each latent's max activation
    at_multiple: float = Field(2.0, gt=0.0)  # the multiple the criterion metric is read at (one of `multiples`)

    @model_validator(mode="after")
    def _dose(self) -> PinnedSamplingParams:
        if self.multiples and self.at_multiple not in self.multiples:
            raise ValueError(f"at_multiple={self.at_multiple} is not one of multiples={self.multiples}")
        if any(m <= 0 for m in self.multiples):
            raise ValueError(f"multiples must be positive, got {self.multiples}")
        return self


class PinnedSamplingJob(FeatureJob[PinnedSamplingParams]):
    kind = "pinned_sampling"
    summary = ("Pin the SAE feature for a planted category at its max activation while sampling from plain "
               "prompts: share of sampled tokens in the category, pinned vs control latents pinned as hard")
    Params = PinnedSamplingParams
    # Registered before any run. The metric is a difference of shares of sampled tokens (0..1). Noise at the
    # defaults: 64 prompts x 16 tokens; tokens within a continuation are correlated (a span, once opened, runs
    # on), so the effective sample is nearer the 64 prompts: an SE of about 0.03-0.04 on a share near 0.1-0.2.
    # Common sampling seeds across conditions make the difference less noisy than that. Ten percentage points
    # more category tokens (~3 SE) is the smallest effect we would call "pinning makes the model write the
    # category"; the band of 0.05 keeps 0.05..0.15 inconclusive. Supported: 3-seed 95% interval above 0.15;
    # refuted: below 0.05. Registered on `category_share_diff`; the metric changed in issue 11 (module
    # docstring), threshold and band did not.
    default_criterion = Criterion(metric="category_share_over_controls", op=">", threshold=0.1, band=0.05)
    metrics = {
        "category_share_over_controls": "share of sampled tokens in the predicted category, pinned - mean of the "
                                        "control latents pinned at the same value",
        "category_share_diff": "share of sampled tokens in the predicted category, pinned - baseline",
        "category_share_pinned": "share of sampled tokens in the predicted category with the feature pinned",
        "category_share_baseline": "the same share without intervention",
        "control_category_share": "the same share, mean over the n_controls control latents pinned at the "
                                  "feature's pin value",
        "control_share_diff": "control_category_share - category_share_baseline",
        "category_run_frac_pinned": "share of the sampled category tokens that follow a category token or the span "
                                    "opener (a run, as in a span, rather than an isolated token) (pinned)",
        "category_run_frac_baseline": "the same share without intervention",
        "span_open_frac_pinned": "fraction of continuations that open a span of the category (pinned)",
        "span_open_frac_baseline": "fraction of continuations that open a span of the category (baseline)",
        "pin_value": "value the feature was pinned to",
        "feature_f1": "F1 of the feature as a detector of the category label (selection tokens)",
        "share_over_controls": "share of category tokens, feature pinned - mean of the controls pinned, at "
                               "at_multiple (dose-response design)",
        "share_over_controls_x<m>": "the same at multiple m",
        "share_feature_x<m>": "share of category tokens with the feature pinned at m x its max",
        "share_controls_x<m>": "mean over control latents of that share, each pinned at m x its own max",
        "share_baseline": "share of category tokens without intervention",
        "share_diff_at": "feature pinned at at_multiple - baseline",
        "controls_used": "control latents pinned",
    }
