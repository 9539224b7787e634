"""Job kind `leading_terms`: do early-training weights follow the closed forms built from corpus statistics?

Tests the claims of Im, Oh, Fang & Li, "How Do Transformers Learn to Associate Tokens: Gradient Leading Terms
Bring Mechanistic Interpretability". One seed:
1. draws n_train + n_eval sequences from the data reference (`synthetic:<preset>` from the substrate, or the
   built-in `builtin:<preset>` topic-bigram language) with the seed;
2. computes the bases B (bigram), Phi (context), Sigma = B^T B (interchangeability) and the attention terms Q, q on
   the training sequences (terms.py);
3. trains the paper's attention-only one-hot transformer from zero with plain SGD, measuring at log-spaced steps
   the cosine (trace inner product over Frobenius norms) of W_O, W_V, W_QK, pos with B, Phi^T B^T, Q, q, the
   norm ratio against the derived coefficients, and the sampling-noise floor of the output cosine for the batch
   used (the cosine with B of the summed minibatch bigram estimates, which caps cos_output under SGD);
4. "early" is the first checkpoint (step >= 3, where every term is defined) at which the held-out loss has made
   `early_progress` of its total drop (log V at step 0 to the final held-out loss), "mid" likewise for
   `mid_progress`: a rule tied to learning progress rather than to a step count, fixed before any run;
5. projects each leading term out of the final weights and reports the held-out loss increase
   (the paper's expected ordering: output > value > attention), beside a control that subtracts a random
   direction of the same norm as the removed component;
6. runs the paper's setting, full-batch gradient descent (every training position in every step: no sampling
   noise, the gradient of exactly the statistics the bases are built from), from zero to the early step, with
   cosines at the checkpoints up to it (`cos_*_gd_early`, the verdict);
7. with a toy model reference (default `toy:default`), compares the substrate toy's embedding->unembedding path
   with B at each of its checkpoints (toy.py), the toy trained with the replicate's seed (`model_seeds`), and
   reports the paper's comparison on a model trained here: the path's change since initialisation against B
   at the toy's early checkpoints (`toy_cos_bigram_change_early`);
8. lists the top token associations of the most frequent tokens under B, Sigma and Phi;
9. writes cosine-over-training, projection and toy PNGs.

The verdict metric is `min_early_cosine`, the smallest of the output, value and attention cosines at "early"
under full-batch gradient descent. It was the same cosines under minibatch SGD (1,024 positions per step); the
sampling-noise floor of that setting caps the output cosine near 0.97 at the early step on synthetic:default, so
the 0.99 threshold could never be met whatever the closed forms' accuracy: the metric changed (to the paper's
setting), not the threshold. The SGD cosines stay as `cos_*_early` and `min_sgd_early_cosine`, with
`noise_floor_early` beside them. `ordering_holds` likewise now also requires each term's loss increase to exceed
its random-direction control (`ordering_terms_only` is the ordering alone). The toy criterion of the main job
was `toy_cos_bigram_final > 0.9`, unreachable (the toy's trained path is a log-probability table, not B: the
exact bigram log-probability table itself has cosine about 0.3 with B) and not the paper's test; the paper
compares learned weights with the bases early in training, so the toy metric is `toy_cos_bigram_change_early`.
tests/experiments/test_leading_terms_criteria.py plants cases that make each criterion pass and fail.

The computation is in run.py (the bases: terms.py; the one-hot model and its SGD: model.py; corpora: corpus.py;
plots: plots.py); this module does not import torch. It runs on the CPU whatever the spec's device: the model is
a few V x V matrices; about 50 s per seed at the defaults on synthetic:default (the full-batch run to the early
step about half of it), plus the toy comparison (a toy model per seed trained on first use).
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from claimgraph.experiments.job import JobParams
from claimgraph.experiments.spec import Criterion
from claimgraph.experiments.substrate.families import ModelJob

CHECKED_TERMS = ("output", "value", "attention")  # the three of the paper's Theorem 4.1, in expected causal order
TERMS = CHECKED_TERMS + ("position",)


class LeadingTermsParams(JobParams):
    seq_len: int = Field(32, ge=2, le=512, description="Predicted positions per sequence (the model reads seq_len tokens)")
    n_train: int = Field(2048, ge=8, description="Training sequences; the corpus statistics are computed on exactly these")
    n_eval: int = Field(512, ge=8, description="Held-out sequences: loss along training and the projection check")
    # lr and steps were set from held-out loss curves on synthetic:default alone (lr 10 stable, 30 oscillating,
    # 100 diverging; the loss has levelled off near the bigram entropy by ~300-600 steps), never from cosines.
    lr: float = Field(10.0, gt=0, description="Plain SGD step size (no momentum, no weight decay)")
    steps: int = Field(600, ge=4, description="SGD updates from zero initialisation")
    batch_size: int = Field(32, ge=1, description="Sequences per update, drawn with replacement")
    positional: bool = Field(True, description="Learned relative-position score bias pos[t - j], as in the paper")
    n_checkpoints: int = Field(40, ge=4, description="Log-spaced steps at which cosines and held-out loss are measured")
    early_progress: float = Field(0.1, gt=0, lt=1, description="'early': held-out loss has made this fraction of its drop")
    mid_progress: float = Field(0.5, gt=0, lt=1, description="'mid': likewise, later in training")
    gd_control: bool = Field(True, description="Run full-batch gradient descent from zero to the early step "
                             "(the paper's setting; the verdict metric min_early_cosine needs it, NaN without)")
    toy_check: bool = Field(True, description="Compare the model reference's toy (default toy:default) with B; "
                            "False skips it (a spec always names a model, the kind's default if none is given)")
    model_seeds: Literal["per_replicate", "fixed"] = Field(
        "per_replicate", description="Toy comparison: train the toy with the replicate's seed (a cached family, "
        "substrate.load.model_family), so intervals cover model variation; 'fixed': the preset's one model")
    toy_early_fraction: float = Field(0.1, gt=0, le=1, description="Toy comparison: its 'early' checkpoints are "
                                      "those after step 0 up to this fraction of its training steps")
    toy_sequences: int = Field(512, ge=8, description="Sequences of a toy model's corpus for its bigram B "
                               "(used only with a toy model reference)")
    n_frequent: int = Field(10, ge=1, description="Most frequent tokens whose associations are listed")
    top_k: int = Field(5, ge=1, description="Associated tokens listed per token and basis mapping")

    @model_validator(mode="after")
    def _ordered(self) -> "LeadingTermsParams":
        if self.mid_progress <= self.early_progress:
            raise ValueError(f"mid_progress ({self.mid_progress}) must exceed early_progress ({self.early_progress})")
        return self


class LeadingTermsJob(ModelJob[LeadingTermsParams]):
    kind = "leading_terms"
    summary = "Cosine of SGD-trained attention-only weights with closed-form gradient leading terms (B, Phi, Sigma, Q)"
    Params = LeadingTermsParams
    # Registered before any run. The paper reports cosines of about 0.998 or higher early in training. If the
    # closed forms hold on our corpus, the worst of the three early cosines should clear 0.99 by more than the
    # band (0.995); an interval wholly below 0.985 means they describe the early weights clearly worse than the
    # paper states. "Early" is fixed by learning progress (10% of the held-out loss drop), not by a step count.
    # The metric is measured in the paper's setting, full-batch gradient descent (see the module docstring).
    default_criterion = Criterion(metric="min_early_cosine", op=">", threshold=0.99, band=0.005)
    # The paper's comparison on a model trained here (the main job's toy experiment), registered before its run:
    # if the bigram leading term describes how a standard transformer's direct path first moves, the change's
    # cosine with B at the early checkpoints should be well above the 0.5 at which B and everything else
    # contribute equally; the band keeps values within 0.1 of that inconclusive.
    toy_criterion = Criterion(metric="toy_cos_bigram_change_early", op=">", threshold=0.5, band=0.1)
    metrics = {
        "min_early_cosine": "smallest of the output, value and attention cosines at the early step under full-batch "
                            "gradient descent (the paper's setting; the verdict metric)",
        "min_sgd_early_cosine": "smallest of cos_output_early, cos_value_early, cos_attention_early (minibatch SGD)",
        "noise_floor_early": "SGD's sampling-noise floor of the output cosine at the early step: cosine with B of "
                             "the summed bigram estimates of the minibatches drawn (1 = no noise)",
        **{f"cos_{t}_{w}": f"cosine (trace inner product / Frobenius norms) of the learned {t} tensor with its "
                           f"leading term at the {w} checkpoint"
           for t in TERMS for w in ("early", "mid", "final")},
        **{f"ratio_{t}_{w}": f"|learned {t}| / |c(s) x leading term| at the {w} checkpoint (1 = right size)"
           for t in TERMS for w in ("early", "mid", "final")},
        **{f"loss_increase_{t}": f"held-out loss increase (nats) when the {t} leading term is projected out of "
                                 f"the final weights" for t in TERMS},
        **{f"loss_increase_{t}_control": f"control: mean held-out loss increase when a random direction of the "
                                         f"norm of the removed {t} component is subtracted instead"
           for t in TERMS},
        "ordering_holds": "1 when loss_increase_output > loss_increase_value > loss_increase_attention and each "
                          "exceeds its random-direction control, else 0",
        "ordering_terms_only": "1 when loss_increase_output > loss_increase_value > loss_increase_attention",
        **{f"step_{w}": f"SGD step of the {w} checkpoint (early/mid: first step >= 3 with that share of the "
                        f"held-out loss drop)" for w in ("early", "mid", "final")},
        **{f"loss_{w}": f"held-out loss at the {w} checkpoint" for w in ("early", "mid", "final")},
        "loss_init": "held-out loss at zero initialisation (log d_vocab)",
        **{f"cos_{t}_gd_early": f"cosine of the {t} tensor with its leading term after full-batch gradient descent "
                                f"from zero to the early step (no sampling noise)"
           for t in TERMS},
        **{f"ratio_{t}_gd_early": f"norm ratio of the {t} tensor after full-batch gradient descent to the early step"
           for t in TERMS},
        "toy_cos_bigram_final": "toy model: cosine of its centred embedding->unembedding path with B at its "
                                "last checkpoint",
        "toy_cos_bigram_change_first": "toy model: cosine of that path's change since step 0 with B, at the first "
                                       "checkpoint after step 0",
        "toy_cos_bigram_change_final": "toy model: the same at its last checkpoint",
        "toy_cos_bigram_change_early": "toy model (the paper's comparison): mean cosine of that change with B over "
                                       "its early checkpoints (after step 0, up to toy_early_fraction of training)",
        "toy_cos_bigram_transposed_final": "toy model control: the last checkpoint's path against B^T",
        "d_vocab": "vocabulary size",
    }
    default_model = "toy:default"   # also compared: the toy's embedding->unembedding path against B (None: skip)
    default_data = "synthetic:default"
