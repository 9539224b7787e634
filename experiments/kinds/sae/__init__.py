"""Job kind `sae`: train a sparse autoencoder on a model's activations at one hook, measure it, and (control
`shuffled`) train the same SAE on a copy of the model whose weight matrices are shuffled entry-wise.

The control tests the claim "Learned features reflect the functionality of the model and not just the data
distribution": a model with shuffled weights still sees the same tokens, so an SAE on it can only find structure
the data and the architecture impose; the paper reports such SAEs give mainly single-token features. The metric
is the fraction of latents with >= 20 activations whose top-20 activations fall mostly (> 50%) on one token id
(definitions in claimgraph.experiments.sae.metrics); `single_token_frac_common_diff = shuffled - trained`
(`single_token_frac_diff`: the same over every live latent, rare ones included).

Default hook, blocks.0.mlp.hook_post of toy:default, chosen on the trained model alone (no shuffled runs, no
look at the single-token metric): zero-ablating layer 0's MLP raises next-token CE from 2.80 to 5.47 nats, layer
1's only to 2.87 (substrate version 3), so layer 0's MLP carries most of what the model computes and CE loss
recovered is meaningful there (at layer 1 it divides by a 0.07-nat gap). SAEs at either layer found latents
matching planted labels (base64 and Arabic spans, number words: best F1 0.85-0.94).

On a real-text corpus (`--data text:<recipe>`, with an `lm:` or `hf:` model) the windows are fixed slices read
through the activation cache (train windows [0, n) for training, eval windows [0, n) of held-out documents for
the metrics, document separators left out), so seeds vary the SAE's initialisation and batch order and, for the
shuffled control, the permutation; the trained-model SAE is the provisioned one the feature jobs read.

Why the rare-latent rule matters there (written before any real-model run): a latent seen firing once is
"single-token" by the top-20 rule, and a shuffled model's SAE can have many such latents, so a difference
driven by them would be a trivial effect. `single_token_frac_common` judges only latents with >= 20
activations (a full top-20), and `token_r2` (cross-validated, so a latent unrelated to the token scores ~0
however many token ids there are) measures the same property from all of a latent's activations. The default
criterion stayed the toy one then; the real-model experiment registers `single_token_frac_common_diff > 0.1
band 0.05` (docs/preregistration/2026-12-01-real-model.md), the same threshold and band for the same reason
(ten percentage points, ~3 SE of a fraction over a few hundred latents).

Metric changed (issue 11): the default criterion read `single_token_frac_diff`, over every live latent. A
planted pair of SAEs with the same latents among those that fire >= 20 times, the "shuffled" one with as many
again firing 1-3 times each, passed it (supported) although nothing but the rare latents differed
(tests/experiments/test_feature_criteria.py): the rule judges a rare latent on the few activations it has, so
rare latents make single-token ones by construction. The default criterion now reads
`single_token_frac_common_diff` (the same rule over latents with >= 20 activations), as the real-model
experiment does; threshold and band are unchanged. On the toy models it moves little: their SAEs had no rare
latents in the main job's runs (rare_frac 0-0.002). `single_token_frac_diff` is still reported.

The computation is in run.py (one seed: train and measure each condition) and plots.py; this module does not
import torch.
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from claimgraph.experiments.job import JobParams
from claimgraph.experiments.sae.recipe import SaeRecipe
from claimgraph.experiments.spec import Criterion
from claimgraph.experiments.substrate.families import ModelJob

CONDITIONS = ("trained", "shuffled")


class SaeParams(JobParams):
    sae: SaeRecipe = SaeRecipe()  # the SAE trained in each condition (hook: see the module docstring)
    eval_tokens: int = Field(65_536, ge=1)  # held-out tokens for the SAE metrics (whole sequences)
    ce_tokens: int = Field(16_384, ge=1)  # the first of those used for CE loss recovered (3 model passes each)
    control: Literal["none", "shuffled"] = "shuffled"  # also train on a weight-shuffled copy of the model
    model_batch_size: int = Field(64, ge=1)  # sequences per model forward pass
    log_every: int = Field(50, ge=1)  # steps between training-curve rows in metrics.jsonl
    threads: int | None = Field(1, ge=1)  # torch CPU threads during the run (small matmuls on shared cores run
    #                                        fastest on one); None keeps torch's setting
    # specs stored before the recipe was nested named its fields at the top level (`steps`, `hook`, ...)
    flat_aliases = {name: f"sae.{name}" for name in SaeRecipe.model_fields}


class SaeJob(ModelJob[SaeParams]):
    kind = "sae"
    summary = ("Train a sparse autoencoder at a hook; L0, FVE, CE recovered, dead/dense and single-token feature "
               "fractions, with a shuffled-weights control")
    Params = SaeParams
    # Registered before any SAE was trained on a toy model. The claim page reports that SAEs on shuffled-weight
    # models give "mainly single-token" features while trained models give interpretable ones, so the effect it
    # predicts is large. Noise at the defaults: ~500 live latents per SAE, so a single-token fraction has a
    # binomial standard error of at most sqrt(.25/500) = 0.022 and a trained-vs-shuffled difference about 0.03
    # per seed, before seed-to-seed training variation. A difference of 0.1 (ten percentage points, ~3 SE) is
    # the smallest we would call meaningful; the +-0.05 band (~1.5 SE) keeps differences within noise of the
    # threshold inconclusive. Supported: the 3-seed 95% interval lies above 0.15; refuted: below 0.05.
    # Registered on `single_token_frac_diff`; the metric changed in issue 11 (module docstring), threshold and
    # band did not.
    default_criterion = Criterion(metric="single_token_frac_common_diff", op=">", threshold=0.1, band=0.05)
    metrics = {
        "single_token_frac_diff": "shuffled_single_token_frac - trained_single_token_frac",
        "<cond>_single_token_frac": "live latents whose top-20 activations are > 50% one token id",
        "<cond>_l0": "mean non-zero latents per token",
        "<cond>_fve": "fraction of variance explained on eval activations",
        "<cond>_mse": "mean squared error per element (raw activation units)",
        "<cond>_ce_recovered": "1 - (CE_sae - CE_clean) / (CE_zero - CE_clean) at the hook",
        "<cond>_ce_clean": "next-token CE of the model on the CE tokens (nats)",
        "<cond>_ce_sae": "the same with the SAE reconstruction spliced in at the hook",
        "<cond>_ce_zero": "the same with the hook's activation zeroed",
        "<cond>_n_live": "latents that fire on the eval tokens",
        "<cond>_mean_top_token_share": "mean over live latents of their top-20 activations' modal token share",
        "<cond>_dead_frac": "latents that never fire on the eval tokens",
        "<cond>_dense_frac": "latents firing on > 10% of eval tokens",
        "<cond>_rare_frac": "live latents with fewer than 20 activations (judged on those they have)",
        "<cond>_single_token_frac_common": "latents with >= 20 activations whose top-20 are > 50% one token id",
        "<cond>_n_common": "latents with >= 20 activations on the eval tokens",
        "<cond>_token_r2": "mean over those latents of the cross-validated share of activation variance "
                           "explained by the current token id",
        "<cond>_token_r2_frac": "share of those latents with token R^2 > 0.5",
        "single_token_frac_common_diff": "shuffled - trained single_token_frac_common",
        "token_r2_diff": "shuffled - trained token_r2",
    }
