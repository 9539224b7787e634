"""Job kind `logit_weights`: the direct effect of one SAE feature on the output logits (its decoder row through
the MLP output weights, the linearised final LayerNorm and the unembedding: the claim page's "logit weight
analysis"), and whether the tokens its interpretation predicts rank at the top.

The feature is the best detector (F1) of a planted category (default: positions inside base64 spans) among
the latents of the provisioned SAE, chosen on held-out tokens (features/target.py). The effects of a random
direction of the same norm at the same hook are the control: `n_random` directions give the distribution of
the enrichment a direction with no relation to the category reaches.

Every live latent of the same SAE is scored the same way (its decoder row's category - other effect and
top_k enrichment), and the feature is ranked among them (`category_effect_pct_live`: the share of the other
live latents it beats, ties half). Random directions answer "more than chance in this geometry"; the other
latents answer "more than what this SAE's latents typically do", which the first cannot: on a model with tied
embeddings (SmolLM2) any latent that carries the current token's identity raises that token's logits, so a
token-identity latent of the category beats random directions without being a context feature.

Why the real-model experiments register the rank, not z (written before any real-model run): z is ~ N(0, 1)
over random directions in d_hook = 576 dimensions, but a residual-stream latent at an early layer is not a
random direction; the rank is read against the SAE's own latents, whose distribution needs no assumption.
Registered there: `category_effect_pct_live > 0.95 band 0.03` (supported: the 3-seed 95% interval above 0.98,
a feature in the top 2% of the SAE's latents; refuted: below 0.92). A typical latent's rank is uniform on
[0, 1], so 0.98 is what 2% of latents reach. On text: corpora the category's tokens are the tokenizer's
(substrate/text.py `category_token_mask`) over the whole vocabulary.

Metric changed (issue 11): the default criterion read `category_effect_z`, the z over random directions of
(mean effect on the category's tokens - mean effect on the other tokens). A mean over the others moves when a
minority of them is pushed down, so a planted direction that only lowers 64 tokens unrelated to the category
(the animal and plural words) passed it (z 4.4-4.8, supported) while raising no base64 token (its top 20
effects held 6 base64 tokens, chance is 4), as it would for any category but those 64 tokens; the direction
that does raise the base64 tokens scored lower (z 2.7-3.0, inconclusive)
(tests/experiments/test_feature_criteria.py). The default criterion now reads `category_over_median_z`: the
same z of (mean effect on the category's tokens - median effect on the other tokens), so the category must stand
above the typical other token; threshold and band are unchanged (z is again measured against the random
directions' own spread, so 3 keeps its meaning). `category_effect_z` is still reported. On the toy:default
pilot (seeds 0-2) the features stay well above it: base64 z 6.61 / 7.47 / 8.23 (old 7.58 / 8.06 / 8.64),
arabic 9.31 / 7.15 / 9.11 (old 9.49 / 6.91 / 9.11), supported as before. The same trivial effect can move
`category_effect_pct_live` (the real-model criterion ranks latents by the mean difference); that registered
criterion is left as registered.

The measurement is in run.py and its histogram in plots.py; this module does not import torch.
"""
from __future__ import annotations

from pydantic import Field

from claimgraph.experiments.features.target import FeatureJob, FeatureParams
from claimgraph.experiments.spec import Criterion


class LogitWeightsParams(FeatureParams):
    top_k: int = Field(20, ge=1)  # tokens with the largest effects in which the category is counted
    show_k: int = Field(20, ge=1)  # tokens listed at each end (top / bottom) in details
    n_random: int = Field(200, ge=1)  # random same-norm directions for the control distribution
    scale_tokens: int = Field(8192, ge=1)  # tokens on which the final residual's typical norm is measured


class LogitWeightsJob(FeatureJob[LogitWeightsParams]):
    kind = "logit_weights"
    summary = ("Direct logit effects of the SAE feature for a planted category (default: base64 spans): top/bottom "
               "tokens and enrichment of the predicted category among the top tokens, vs random directions")
    Params = LogitWeightsParams
    # Registered before any toy:default run. Metric: how far the feature's direct effect separates its
    # category from the other tokens (mean effect on category tokens - mean on the rest), in standard
    # deviations of the same quantity over `n_random` random directions of the same norm at the same hook.
    # That difference is linear in the direction, so over random directions it is symmetric about 0, and z is
    # about cos(feature, category logit direction) * sqrt(d_hook). A first design used the top-20 enrichment
    # ratio against a hypergeometric null (threshold 2); a pilot on toy:tiny (200-step SAE, before any default
    # run) showed that null is wrong: the category's unembeddings cluster, so random directions' ratios were
    # heavy-tailed (mean 0.57, 95th percentile 4.39), and a threshold of 2 would pass many random directions.
    # The ratio and its hypergeometric p stay reported; the criterion uses the random directions as the null.
    # z = 3 is what fewer than ~0.2% of random directions reach (near-Gaussian for d_hook >= 128); the band
    # of 1 keeps z within 2..4 inconclusive. Supported: 3-seed 95% interval above 4; refuted: below 2.
    # Registered on `category_effect_z`; the metric changed in issue 11 (module docstring), threshold and band
    # did not. z over random directions is no longer exactly cos * sqrt(d_hook) (the median is not linear in the
    # direction), so the random directions' empirical mean and SD are the null, as they were.
    default_criterion = Criterion(metric="category_over_median_z", op=">", threshold=3.0, band=1.0)
    metrics = {
        "category_over_median_z": "(feature's category mean - other median effect - random mean) / random SD of "
                                  "the same",
        "category_over_median": "mean direct effect on category tokens - median on the others",
        "control_category_over_median": "mean over random directions of category mean - other median effect",
        "control_category_over_median_sd": "SD over random directions of the same",
        "category_effect_z": "(feature's category - other mean effect - random mean) / random SD of the same",
        "enrichment_ratio": "share of predicted-category tokens among the top_k direct effects / base rate",
        "enrichment_share": "share of predicted-category tokens among the top_k direct effects",
        "enrichment_neglog10_p": "-log10 hypergeometric p of at least that many category tokens in the top_k",
        "base_rate": "predicted category's share of the synthetic vocabulary",
        "category_effect_minus_other": "mean direct effect on category tokens - mean on the others (logits "
                                       "per unit feature activation)",
        "control_enrichment_ratio": "mean enrichment ratio of the random same-norm directions",
        "control_enrichment_ratio_p95": "95th percentile of the random directions' enrichment ratios",
        "control_category_effect_minus_other": "mean over random directions of category - other mean effect",
        "control_category_effect_sd": "SD over random directions of category - other mean effect",
        "random_ratio_at_least_feature": "fraction of random directions whose ratio >= the feature's",
        "feature_f1": "F1 of the feature as a detector of the category label (selection tokens)",
        "feature_auroc": "AUROC of the feature as a detector of the category label (selection tokens)",
        "category_effect_pct_live": "share of the SAE's other live latents whose category - other effect is "
                                    "below the feature's (ties half)",
        "enrichment_pct_live": "the same rank for the top_k enrichment ratio",
        "category_effect_pct_random": "share of the random directions whose category - other effect is below "
                                      "the feature's",
        "n_live_latents": "live latents (firing on the selection tokens) the feature is ranked among",
        "residual_scale": "typical sqrt(var + eps) of the final residual stream the effects are divided by",
    }
