"""Job kind `ablation`: clamp one SAE feature to zero (the SAE spliced in at its hook, error term kept) and
measure what the model then predicts, as the claim page's "clamping a feature's value to zero".

Definitions (fixed before any run):
- positions: where the feature fires (> 0) on held-out sequences; ablating elsewhere changes nothing;
- per position, dlogp_v = log p_ablated(v) - log p_clean(v) of the next-token distribution, averaged over the
  predicted category's tokens and over the other synthetic-vocabulary tokens; the drop is minus that;
  `category_logprob_drop_minus_other` = mean over positions of (category drop - other drop), in nats;
- pre-caching: ablate at one firing position t only, and take KL(clean || ablated) of the distribution of
  token t+j (predicted at position t+j-1) for j = 1..horizon. KL at j=1 is the immediate effect; the
  pre-caching score is sum_{j>=2} KL_j / KL_1 (each KL averaged over positions first): how much of what the
  feature computes at t is used for tokens further ahead;
- control: a random live latent firing about as often, not itself a detector of the category
  (features/target.py `control_latent`), ablated the same way.

The measurement is in run.py and its plot in plots.py; this module does not import torch.
"""
from __future__ import annotations

from pydantic import Field

from claimgraph.experiments.features.target import FeatureJob, FeatureParams
from claimgraph.experiments.spec import Criterion

CONDITIONS = ("feature", "control")


class AblationParams(FeatureParams):
    measure_tokens: int = Field(16_384, ge=64)  # held-out tokens (whole sequences) for the log-prob changes
    kl_positions: int = Field(256, ge=1)  # firing positions ablated one at a time for the KL horizon
    horizon: int = Field(10, ge=2)  # tokens t+1..t+horizon whose distributions are compared


class AblationJob(FeatureJob[AblationParams]):
    kind = "ablation"
    summary = ("Clamp the SAE feature for a planted category to zero (error term kept): change in next-token "
               "log-probs of the category vs other tokens, KL over the next 10 tokens, pre-caching score, control")
    Params = AblationParams
    # Registered before any run. The metric is in nats: 0.1 means that, where the feature fires, ablating it
    # lowers the category's tokens by ~10% in odds relative to the other tokens. Smaller shifts would not
    # make the feature matter for predicting its category (inside a base64 span the model gives each of the
    # 64 chars ~1/65; a feature that carried "in a span" alone would move them by nats). Sampling noise at the
    # defaults is small (thousands of firing positions; the per-position SE is ~0.01 nats), so seed-to-seed
    # differences come from the SAE and feature chosen; the band of 0.05 keeps 0.05..0.15 inconclusive.
    # Supported: 3-seed 95% interval above 0.15; refuted: below 0.05. The control latent is reported.
    default_criterion = Criterion(metric="category_logprob_drop_minus_other", op=">", threshold=0.1, band=0.05)
    metrics = {
        "category_logprob_drop_minus_other": "mean over firing positions of (category - other) drop in next-token "
                                             "log-prob (nats) when the feature is clamped to 0",
        "category_logprob_drop": "mean drop in log-prob of the predicted category's tokens (nats)",
        "other_logprob_drop": "mean drop in log-prob of the other synthetic-vocabulary tokens (nats)",
        "category_mass_logdrop": "mean drop in log of the total probability of the category (nats)",
        "next_token_loss_increase": "mean increase of the loss on the actual next token at firing positions",
        "kl_next": "KL(clean || ablated) of the next token (t+1) after ablating at t only",
        "kl_later": "sum of the KL of tokens t+2..t+horizon after ablating at t only",
        "precaching_score": "kl_later / kl_next",
        "fire_frac": "fraction of held-out tokens where the feature fires",
        "control_category_logprob_drop_minus_other": "the same for the control latent",
        "control_category_logprob_drop": "the same for the control latent",
        "control_other_logprob_drop": "the same for the control latent",
        "control_category_mass_logdrop": "the same for the control latent",
        "control_next_token_loss_increase": "the same for the control latent",
        "control_kl_next": "the same for the control latent",
        "control_kl_later": "the same for the control latent",
        "control_precaching_score": "the same for the control latent",
        "control_fire_frac": "the same for the control latent",
        "feature_f1": "F1 of the feature as a detector of the category label (selection tokens)",
    }
