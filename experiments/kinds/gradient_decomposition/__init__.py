"""Job kind `gradient_decomposition`: where does a seemingly useless feature's gradient come from?

Reproduces, at toy scale, the analysis of Rofin, Naghiyev and Hahn ("Understanding the Emergence of Seemingly
Useless Features in Next-Token Predictors") on the majority task (majority.py): the
next-token gradient at residual stream (layer, i) is split into direct learning, pre-caching and circuit sharing
(decomposition.py); each part's Adam update is scored against the gradient of a probe risk
for the feature "token c is a current majority" at the input positions, where it cannot help predict the next
(random) token (influence.py); and models trained myopically or with split input/output
weights show how the feature's probe correlation depends on those paths. With `data=synthetic:<preset>` the same
analysis runs on a substrate corpus for one of its position labels (`corpus_feature`), without the split condition.

The loss is next-token cross-entropy at every position, inputs included: that is the paper's setting, and it is
what makes the input positions' own loss a real (if uninformative) gradient source, so "direct influence near
zero" is a finding rather than a definition.

One seed's computation is in run.py (the model: transformer.py; sequences and the probed feature: data.py;
plots: plots.py); this module does not import torch.
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from claimgraph.experiments.job import Job, JobParams
from claimgraph.experiments.spec import Criterion


class GradientDecompositionParams(JobParams):
    # task
    n_vocab: int = Field(3, ge=2)                # task tokens (the paper: 3)
    n_in: int = Field(10, ge=2)                  # random input tokens per sequence (the paper: 10)
    n_out: int = Field(10, ge=1)                 # output tokens per sequence (the paper: 10)
    # model (small, so four trainings fit in about a minute per seed on 2 CPU cores)
    d_model: int = Field(32, ge=2)               # residual width
    n_heads: int = Field(2, ge=1)                # attention heads
    d_mlp: int = Field(128, ge=1)                # MLP width
    n_layers: int = Field(2, ge=1)               # transformer blocks
    # training (Adam, no weight decay, as the paper)
    steps: int = Field(400, ge=1)                # optimiser steps per condition (the task is learnt in ~100)
    batch_size: int = Field(64, ge=1)            # sequences per step
    lr: float = Field(1e-3, gt=0)                # Adam learning rate (the paper's)
    beta1: float = Field(0.9, ge=0, lt=1)        # Adam first-moment decay
    beta2: float = Field(0.999, ge=0, lt=1)      # Adam second-moment decay
    eps: float = Field(1e-8, gt=0)               # Adam epsilon
    # analysis
    layer: int = Field(1, ge=0)                  # residual stream index decomposed and probed (0 = embeddings)
    # "position": each tracked position's parts scored against its own probe risk (the paper's pairing;
    # 3 backward passes of the blocks below `layer` per position and step); "set": all tracked positions as
    # one group (parts summed, risk averaged; 3 passes per step), where direct learning at one position that
    # reshapes the feature at another counts as direct rather than as circuit sharing; "auto": "position" on
    # the majority task, "set" on a corpus (62 positions per sequence in synthetic:default)
    pairing: Literal["auto", "position", "set"] = "auto"
    corpus_feature: str = "paren_span"          # label probed when data is a synthetic corpus (span_labels)
    probe_sequences: int = Field(2048, ge=16)    # held-out sequences for the ridge probes
    probe_test_frac: float = Field(0.3, gt=0, lt=1)  # share of them used to score probe correlations
    probe_alpha: float = Field(1.0, gt=0)        # ridge penalty (the paper's default)
    risk_sequences: int = Field(128, ge=1)       # fixed sequences on which the probe risk R is measured
    # the framework predicts that myopic training lowers the feature only as far as pre-caching built it:
    # myopic_corr_drop_predicted is decided only for seeds whose pre-caching share reaches this
    myopic_min_precache_share: float = Field(0.2, ge=0, le=1)
    check_decomposition: bool = True            # recompute the first step's parts from the definitions
    float64: bool = False                        # train in float64 (for exact checks; slower)
    log_every: int = Field(50, ge=1)             # steps between rows of metrics.jsonl
    threads: int | None = Field(1, ge=1)         # torch CPU threads during the run (these small tensors run
                                                 # fastest on one); None keeps torch's setting


class GradientDecompositionJob(Job[GradientDecompositionParams]):
    kind = "gradient_decomposition"
    summary = ("Split the next-token gradient into direct / pre-caching / circuit-sharing parts, measure each "
               "part's influence on a useless feature, and test myopic and split-weight training (majority task)")
    Params = GradientDecompositionParams
    # Registered before any result of the intervention link was seen (the paper's third contribution): the
    # pre-caching score, computed from the trained model without retraining, should rank the probed features
    # (the feature at each tracked position) as their influence ratio |pre-caching| / |direct| does. Supported
    # when the rank correlation's interval across seeds lies above 0.4, refuted when it lies below 0.2: over nine
    # positions a correlation of 0.3 is well within what unrelated rankings give, so the claim needs more.
    default_criterion = Criterion(metric="precache_score_rank_corr", op=">", threshold=0.3, band=0.1)
    # The myopic test of the same claim (registered earlier, metric changed): myopic training removes the
    # pre-caching path, so the feature's held-out probe correlation should fall, but only where pre-caching built
    # it. A drop of 0.05 in correlation is about five standard errors of a correlation estimated on ~5,000
    # held-out (sequence, position) pairs; the +-0.025 band keeps drops of that noise scale inconclusive. The
    # metric was myopic_corr_drop over every seed, which tested a drop the framework does not predict where the
    # pre-caching influence is about zero (it was, on the majority task): it is now myopic_corr_drop_predicted,
    # NaN (left out) for seeds whose pre-caching share is below myopic_min_precache_share.
    myopic_criterion = Criterion(metric="myopic_corr_drop_predicted", op=">", threshold=0.05, band=0.025)
    # Sibling claims are tested with criteria such as `direct_influence_share < 0.1` or
    # `precache_plus_shared_share > 0.5` on the same computation. Shares are of magnitudes (run.magnitude_shares):
    # per probed position |I_part| / sum of the three |I|, averaged over positions; the probe risk is centred
    # (influence.py), so offsets no longer count as influence. tests/experiments/test_gradient_decomposition_criteria.py
    # plants cases that make each of these criteria pass and fail.
    metrics = {
        "direct_influence_share": "share of the feature's integrated influence from direct learning (own loss), "
                                  "from magnitudes: mean over positions of |I_direct| / sum of the parts' |I|",
        "precache_influence_share": "share from pre-caching (later positions' losses through the position), likewise",
        "shared_influence_share": "share from circuit sharing (paths avoiding the position), likewise",
        "precache_plus_shared_share": "pre-caching plus circuit-sharing share (1 - direct share)",
        "influence_direct": "integrated influence of direct learning (R units, mean over positions)",
        "influence_precache": "integrated influence of pre-caching",
        "influence_shared": "integrated influence of circuit sharing",
        "risk_start": "centred probe risk R at initialisation (fixed batch)",
        "risk_end": "probe risk R at the end of the tracked replay (0 when the replay matches)",
        "influence_sum_ratio": "sum of the parts' influences / (R start - R end); 1 to first order",
        "probe_corr_init": "held-out probe correlation of the feature at initialisation (baseline)",
        "probe_corr_normal": "held-out probe correlation after normal training",
        "probe_corr_myopic": "held-out probe correlation after myopic training",
        "probe_corr_split": "held-out probe correlation after split-weight training (majority task only)",
        "myopic_corr_drop": "probe_corr_normal - probe_corr_myopic",
        "myopic_corr_drop_predicted": "myopic_corr_drop where the framework predicts a drop (pre-caching share >= "
                                      "myopic_min_precache_share), NaN elsewhere",
        "precache_score_rank_corr": "Spearman correlation over the probed positions of the pre-caching score "
                                    "(sum_{d>=2} KL_{t+d} / KL_{t+1} after ablating the feature) with the "
                                    "influence ratio |pre-caching| / |direct| (\"position\" pairing only)",
        "precache_score_median": "median pre-caching score over the probed positions",
        "influence_ratio_median": "median influence ratio |pre-caching| / |direct| over the probed positions",
        "split_corr_drop": "probe_corr_normal - probe_corr_split (majority task only)",
        "task_accuracy": "normal model: share of output predictions that are a current majority token "
                         "(on a corpus: top-1 next-token accuracy)",
        "first_output_accuracy": "normal model: the same at the first output position (majority task only)",
        "task_accuracy_myopic": "myopic model: task accuracy",
        "task_accuracy_split": "split model: task accuracy (majority task only)",
        "final_loss_normal": "normal model: training loss at the last step",
        "decomposition_check_error": "max |fast parts - parts from the definitions| / max |grad L| at step 1",
        "adam_sum_error": "max over steps of |sum of part updates - Adam's update| / max |Adam's update|",
        "replay_max_diff": "max |tracked replay weights - normal run weights| at the end",
    }
    default_model = None     # trains its own small transformer (transformer.py)
    default_data = None      # the built-in majority task
    default_seeds = [0, 1, 2]
