"""Planted truth for the default criteria of the four feature kinds (issue 11): each metric computed by the
kind's own code (`evaluate_sae` and the `sae` job's condition differences; the `measure` of `logit_weights`,
`ablation` and `pinned_sampling` on a hand-built Target) for three seeds, then decided by the kind's registered
default criterion: supported where the truth is planted, refuted where it is not.

The planted setting (no training): a random one-layer toy model over the synthetic vocabulary whose weights are
edited by hand so that known directions of the residual stream read out known token sets:
- p: the unembedding reads it as the base64 tokens (the category the feature should predict);
- r: every token's embedding carries it and the unembedding reads it as the function words, so the model's
  baseline prediction is confident, and not in the category (a push that only dilutes r makes it less so);
- e, q: the final LayerNorm's bias lies along e and the unembedding reads e as minus the animal and plural tokens
  (64 "other" tokens, improbable everywhere), and reads q as minus them too.
The SAE at `blocks.0.hook_resid_post` is set by hand: encoder zero, so every latent's activation is its bias
(1: fires everywhere, for ablation; 0: never, for pinning, with a hand-set maximum activation of 1); latent 0
is the feature, with the decoder row each case needs, the others random rows orthogonal to the planted directions
(they read out nothing), all of one norm (the mean norm of the residual stream at the hook, so one unit of a
latent is a push the size of the residual). Seeds vary the
random rows, the control latents drawn among them and the tokens or prompts measured on, as a job's seeds vary
the SAE, its controls and the tokens.

Metric changes (issue 11), each because a planted case here passed the old metric by a trivial effect (the
old metric is still reported, and each test shows its verdict too); thresholds and bands are unchanged:
- sae: `single_token_frac_diff` judges a latent seen firing a few times on its few activations, so an SAE with
  many rare latents passes it whatever its other latents do; now `single_token_frac_common_diff` (latents with
  >= 20 activations). Toy results barely move: the toy SAEs have no rare latents.
- logit_weights: `category_effect_z` compares the category's mean effect with the other tokens' mean, which a
  direction that only pushes down a minority of unrelated tokens moves; now `category_over_median_z` (the
  others' median).
- ablation: `category_logprob_drop_minus_other` weighs every token equally, so raising the log-probs of tokens
  the model never predicts passes it; now `category_mass_logdrop` (the drop in log P(category), each token
  weighted by its probability).
- pinned_sampling: `category_share_diff` (pinned - unpinned) rises with the size of the push alone; now
  `category_share_over_controls` (pinned - frequency-matched control latents pinned at the same value).
"""
from __future__ import annotations

import functools
import math

import pytest
import torch

from claimgraph.experiments.context import RunContext
from claimgraph.experiments.features.select import Detection
from claimgraph.experiments.features.target import LatentStats, Target, describe_choice
from claimgraph.experiments.sae import SaeRecipe
from claimgraph.experiments.sae.relu import ReluSAE
from claimgraph.experiments.substrate.corpus import get_corpus
from claimgraph.experiments.substrate.model import ToyConfig, ToyTransformer

HOOK = "blocks.0.hook_resid_post"
D = 32
N_LAT = 16
SEEDS = (0, 1, 2)
ALPHA = 0.8   # p's readout of the base64 tokens (logit per unit of normalised residual)
BETA = 0.7    # r's readout of the function words
K = 1.0       # r's share of every embedding
E_OFF = 20.0  # how improbable the LayerNorm bias makes the animal and plural tokens (logits)
GAMMA = 5.0   # q's readout of minus those tokens


@functools.cache
def planted_model() -> tuple[ToyTransformer, object, dict[str, torch.Tensor], float]:
    """The edited random model, its corpus, the planted directions (unit, orthogonal to each other and to the
    all-ones vector, so the LayerNorm keeps them) and the mean residual norm at HOOK."""
    corpus = get_corpus("synthetic:default")
    vocab = corpus.vocab
    torch.manual_seed(31)
    m = ToyTransformer(ToyConfig(n_layers=1, d_model=D, n_heads=2, d_mlp=64, n_ctx=64, d_vocab=len(vocab)),
                       vocab).eval()
    g = torch.Generator().manual_seed(32)
    basis = torch.linalg.qr(torch.cat([torch.ones(D, 1), torch.randn(D, 4, generator=g)], 1)).Q[:, 1:]  # [D, 4]
    p, r, e, q = basis.T
    cat = vocab.category_mask
    improbable = (cat("animal") | cat("plural")).float()                              # [V]
    with torch.no_grad():
        m.W_E.add_(K * r)                                                             # [V, D]
        m.W_U.add_(ALPHA * p[:, None] * cat("base64").float()[None])                  # [D, V]
        m.W_U.add_(BETA * r[:, None] * cat("function").float()[None])
        m.W_U.sub_((e + GAMMA * q)[:, None] * improbable[None])
        m.ln_final.b.copy_(E_OFF * e)
        windows = corpus.sample(16, 0)
        resid = m.run_with_cache(windows, [HOOK])[1][HOOK]                            # [16, T, D]
    return m, corpus, {"p": p, "r": r, "e": e, "q": q, "basis": basis}, float(resid.norm(dim=-1).mean())



def _orthogonal_unit(u: torch.Tensor) -> torch.Tensor:
    """u [n, D] with every planted direction and the all-ones vector projected out, rows of unit norm."""
    _, _, dirs, _ = planted_model()
    B = torch.cat([torch.ones(D, 1) / math.sqrt(D), dirs["basis"]], 1)                # [D, 5] orthonormal
    u = u - (u @ B) @ B.T
    return u / u.norm(dim=-1, keepdim=True)


def feature_row(kind: str, seed: int) -> tuple[torch.Tensor, float]:
    """Latent 0's decoder direction (unit) and its norm relative to the other rows: `planted` p; `improbable` q
    at a fifth of the norm (it moves only tokens the model never predicts, and is too small to change the
    residual's norm much); `orthogonal` a random direction orthogonal to every planted one (it reads out
    nothing); `random` a random direction (what any latent is)."""
    _, _, dirs, _ = planted_model()
    if kind == "planted":
        return dirs["p"], 1.0
    if kind == "improbable":
        return dirs["q"], 0.2
    u = torch.randn(1, D, generator=torch.Generator().manual_seed(1000 + seed))
    return (_orthogonal_unit(u)[0] if kind == "orthogonal" else u[0] / u.norm()), 1.0


def planted_target(kind: str, seed: int, tmp, *, fires: bool, scale: float = 1.0) -> tuple[Target, RunContext]:
    """A Target on the planted model with a hand-set SAE (module docstring): latent 0, the feature, has the
    decoder row `feature_row(kind, seed)` (times `scale`); the others random rows orthogonal to the planted
    directions (they read out nothing), all of the residual stream's mean norm. Hand-set latent statistics:
    every latent fires on 10% of selection tokens with maximum activation 1; the feature detects the label
    (F1 0.9), the others do not (0.1), so they are the frequency-matched controls."""
    m, corpus, _, norm = planted_model()
    rows = _orthogonal_unit(torch.randn(N_LAT, D, generator=torch.Generator().manual_seed(2000 + seed))) * norm
    row, rel = feature_row(kind, seed)
    rows[0] = row * rel * scale * norm                                                 # [N_LAT, D]
    sae = ReluSAE(SaeRecipe(d_sae=N_LAT).config(D, 0))
    with torch.no_grad():
        sae.W_enc.zero_()
        sae.b_enc.fill_(1.0 if fires else 0.0)
        sae.b_dec.zero_()
        sae.W_dec.copy_(rows)
    f1 = torch.full((N_LAT,), 0.1)
    f1[0] = 0.9
    det = Detection(f1=f1, precision=f1.clone(), recall=f1.clone(), auroc=0.5 + f1 / 2, n_pos=100, n=1000)
    stats = LatentStats(label="base64_span", detection=det, freq=torch.full((N_LAT,), 0.1),
                        max_act=torch.ones(N_LAT), n_tokens=1000, seed=seed)
    t = Target(model=m, corpus=corpus, sae=sae, sae_folder=tmp, hook=HOOK, category="base64", label="base64_span",
               predict="base64", feature=0, choice=describe_choice(stats, 0, chosen_by="given"), stats=stats,
               d_corpus=len(corpus.vocab))
    ctx = RunContext(tmp / f"{kind}-{seed}-{scale:g}", device="cpu", model_ref="toy:planted",
                     data_ref="synthetic:default", progress=False)
    return t, ctx


def seed_metrics(measure, params, kind: str, tmp, *, fires: bool, scale: float = 1.0) -> list[dict[str, float]]:
    """The kind's own `measure` on the planted target of each seed: the metrics per seed."""
    out = []
    for seed in SEEDS:
        t, ctx = planted_target(kind, seed, tmp, fires=fires, scale=scale)
        ctx.seed = seed
        out.append(measure(ctx, params, seed, t).metrics)
        ctx.close()
    return out


def verdict(criterion, per_seed: list[dict[str, float]], metric: str | None = None) -> str:
    """The criterion's verdict over the seeds' values of its metric (or the same rule read on `metric`)."""
    rule = criterion if metric is None else criterion.model_copy(update={"metric": metric})
    return rule.decide([m[rule.metric] for m in per_seed]).verdict


# --------------------------------------------------------------------------------------------------- ablation

@pytest.mark.parametrize(("kind", "want", "want_old"), [
    ("planted", "supported", "supported"),
    ("improbable", "refuted", "supported"),  # the old metric's trivial pass
    ("orthogonal", "refuted", "refuted"),
])
def test_ablation_default_criterion_planted(kind, want, want_old, tmp_path):
    """Positive: ablating the latent whose row the unembedding reads as base64 takes the category's probability
    away. Negative: a row that reads out nothing leaves the category no less probable. Trivial: a row that only
    lowers 64 tokens the model never predicts (each P < 2e-8 before and after, together < 4e-7); the old
    equal-weight metric counts their log-prob gain (~5.6 nats each) as the category's relative drop and passes,
    while the next-token distribution barely moves (KL ~6e-4) and the category's probability, if anything,
    rises."""
    from claimgraph.experiments.kinds.ablation import AblationJob, AblationParams
    from claimgraph.experiments.kinds.ablation.run import measure

    per_seed = seed_metrics(measure, AblationParams(measure_tokens=2048, kl_positions=32), kind, tmp_path, fires=True)
    crit = AblationJob.default_criterion
    assert crit.metric == "category_mass_logdrop"
    assert verdict(crit, per_seed) == want, [m["category_mass_logdrop"] for m in per_seed]
    assert verdict(crit, per_seed, "category_logprob_drop_minus_other") == want_old, per_seed
    if kind == "improbable":  # the next-token distribution barely moves, and the category's probability rises
        assert all(m["kl_next"] < 0.002 and m["category_mass_logdrop"] < 0 for m in per_seed), per_seed


# -------------------------------------------------------------------------------------------- pinned sampling

@pytest.mark.parametrize(("kind", "pin", "want", "old_not"), [
    ("planted", None, "supported", None),
    ("orthogonal", None, "refuted", "refuted"),  # the old metric could not come out refuted
    ("orthogonal", 6.0, "refuted", "refuted"),   # ... and a pin 6x as large passed it
])
def test_pinned_sampling_default_criterion_planted(kind, pin, want, old_not, tmp_path):
    """Positive: pinning the latent whose row the unembedding reads as base64 makes the model write base64.
    Negative: a row that reads out nothing, pinned as hard; it raises the category's share above the baseline
    only by diluting what the residual stream said (the model's confident function words), as much as the
    control latents pinned at the same value do. The old metric (pinned - baseline) read that dilution as the
    feature's effect: inconclusive at the feature's maximum, supported at 6x it."""
    from claimgraph.experiments.kinds.pinned_sampling import PinnedSamplingJob, PinnedSamplingParams
    from claimgraph.experiments.kinds.pinned_sampling.run import measure

    params = PinnedSamplingParams(n_prompts=32, pin_value=pin)
    per_seed = seed_metrics(measure, params, kind, tmp_path, fires=False)
    crit = PinnedSamplingJob.default_criterion
    assert crit.metric == "category_share_over_controls"
    assert verdict(crit, per_seed) == want, per_seed
    old = verdict(crit, per_seed, "category_share_diff")
    if old_not is not None:
        assert old != old_not, per_seed
    if pin is not None:
        assert old == "supported", per_seed
    if kind == "orthogonal":  # the push alone raises the share above the baseline, for feature and controls alike
        assert all(m["category_share_diff"] > 0.03 and m["control_share_diff"] > 0.03 for m in per_seed), per_seed


# ---------------------------------------------------------------------------------------------- logit weights

@pytest.mark.parametrize(("kind", "scale", "want", "want_old"), [
    ("planted", 1.0, "supported", "inconclusive"),
    ("planted", 10.0, "supported", "inconclusive"),  # ten times the norm: the same z (size is not rewarded)
    ("orthogonal", 1.0, "refuted", "refuted"),
    ("improbable", 1.0, "refuted", "supported"),     # the old metric's trivial pass
])
def test_logit_weights_default_criterion_planted(kind, scale, want, want_old, tmp_path):
    """Positive: the row the unembedding reads as base64. Negative: a row that reads out nothing. Trivial: a
    row that pushes down 64 tokens unrelated to the category (animals and plurals) and raises no base64 token;
    the old metric (category mean - other mean) passed it, and scored the true positive lower than it."""
    from claimgraph.experiments.kinds.logit_weights import LogitWeightsJob, LogitWeightsParams
    from claimgraph.experiments.kinds.logit_weights.run import measure

    per_seed = seed_metrics(measure, LogitWeightsParams(scale_tokens=1024), kind, tmp_path, fires=False, scale=scale)
    crit = LogitWeightsJob.default_criterion
    assert crit.metric == "category_over_median_z"
    assert verdict(crit, per_seed) == want, [m["category_over_median_z"] for m in per_seed]
    assert verdict(crit, per_seed, "category_effect_z") == want_old, [m["category_effect_z"] for m in per_seed]
    if kind == "improbable":  # no base64 token is raised: the top effects hold them at about their base rate
        assert all(m["enrichment_ratio"] < 2 for m in per_seed), per_seed


# -------------------------------------------------------------------------------------------------------- sae

def _condition(n_token: int, n_context: int, n_rare: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Hand-made activations [n, latents] (read by an identity SAE) and token ids [n]: `n_token` latents whose activation is a function of the
    token id (single-token by construction), `n_context` latents whose activation ignores it (their top 20
    spread over many tokens), `n_rare` latents that fire 1-3 times each, on one token id; 4,000 positions over
    50 token ids."""
    g = torch.Generator().manual_seed(seed)
    n, ids = 4000, 50
    tokens = torch.randint(0, ids, (n,), generator=g)
    cols = []
    for _ in range(n_token):
        value = torch.rand(ids, generator=g) * 3
        cols.append(value[tokens])
    cols += [torch.randn(n, generator=g).relu() for _ in range(n_context)]
    for _ in range(n_rare):  # at 1-3 of the positions of one token id (a rare token's latent, say)
        col = torch.full((n,), -1.0)
        where = (tokens == int(torch.randint(0, ids, (1,), generator=g))).nonzero()[:, 0]
        col[where[:int(torch.randint(1, 4, (1,), generator=g))]] = 2.0
        cols.append(col)
    return torch.stack(cols, 1), tokens


@pytest.mark.parametrize(("case", "want", "want_old"), [
    ("more single-token", "supported", "supported"),
    ("same", "refuted", "refuted"),
    ("rare latents", "refuted", "supported"),  # the old metric's trivial pass
])
def test_sae_default_criterion_planted(case, want, want_old, identity_sae):
    """The `sae` job's metrics (evaluate_sae per condition, then the job's shuffled - trained differences) on
    hand-made activations. Positive: the "shuffled" SAE's latents are mostly functions of the token id, the
    "trained" one's mostly not. Negative: the same mix in both. Trivial: the same mix among latents that fire
    >= 20 times, and as many again that fire 1-3 times in the "shuffled" SAE."""
    from claimgraph.experiments.kinds.sae import SaeJob
    from claimgraph.experiments.kinds.sae.run import condition_diffs
    from claimgraph.experiments.sae import evaluate_sae

    per_seed = []
    for seed in SEEDS:
        n_tok = 24 + seed                                        # token latents among the 96 of the "trained" SAE
        jitter = (0, 1, -1)[seed]
        shuffled = {"more single-token": (72 - seed, 24 + seed, 0), "same": (n_tok + jitter, 96 - n_tok - jitter, 0),
                    "rare latents": (n_tok, 96 - n_tok, 96)}[case]
        metrics = {}
        for cond, (a, b, c) in {"trained": (n_tok, 96 - n_tok, 0), "shuffled": shuffled}.items():
            x, tokens = _condition(a, b, c, 100 * seed + len(cond))
            report = evaluate_sae(identity_sae(x.shape[1]), x, tokens)
            metrics.update({f"{cond}_{k}": v for k, v in report.metrics.items()})
        per_seed.append({**metrics, **condition_diffs(metrics)})
    crit = SaeJob.default_criterion
    assert crit.metric == "single_token_frac_common_diff"
    assert verdict(crit, per_seed) == want, [m["single_token_frac_common_diff"] for m in per_seed]
    assert verdict(crit, per_seed, "single_token_frac_diff") == want_old, [m["single_token_frac_diff"] for m in per_seed]
