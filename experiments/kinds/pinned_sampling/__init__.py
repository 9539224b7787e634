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

The sampling is in run.py and its plot in plots.py; this module does not import torch.
"""
from __future__ import annotations

from pydantic import Field

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


class PinnedSamplingJob(FeatureJob[PinnedSamplingParams]):
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
