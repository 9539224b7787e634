"""Which SAE latent a feature job studies, and everything the three causal jobs (logit_weights, ablation,
pinned_sampling) share: their common parameters, loading the model, corpus and provisioned SAE, choosing the
feature on held-out tokens, and a control latent.

Categories: "base64" and "arabic" are the planted spans (the latent must detect positions inside
`b64: ... =` / `<ar> ... </ar>`, label `base64_span` / `arabic_span`) and predict the span's own characters;
any other token category `<x>` of the synthetic vocabulary uses the label `cat:<x>` and, unless `predict` says
otherwise, predicts its own tokens.

Token sets are sampled with fixed seed offsets, so the SAE's training tokens (seed), the tokens the feature is
chosen on (seed + SELECT_OFFSET) and the tokens every measurement uses (seed + MEASURE_OFFSET, PROMPT_OFFSET)
are independent samples. Torch is imported inside functions: the kinds' modules import the Params and
`FeatureJob` from here without it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import Field

from claimgraph.experiments.context import RunContext, resolve_device, torch_threads
from claimgraph.experiments.job import JobParams, SeedResult
from claimgraph.experiments.sae.recipe import SaeRecipe
from claimgraph.experiments.substrate.families import ModelJob
from claimgraph.graph.errors import InvalidInput

if TYPE_CHECKING:
    from torch import Tensor

    from claimgraph.experiments.sae.base import SparseAutoencoder
    from claimgraph.experiments.substrate.corpus import SyntheticCorpus, Vocab
    from claimgraph.experiments.substrate.hooks import HookedModel

    from .select import Detection

SELECT_OFFSET = 2_000_003   # tokens the feature is chosen on
MEASURE_OFFSET = 3_000_017  # tokens the effects are measured on
PROMPT_OFFSET = 4_000_037   # sequences prompts are cut from
SPAN_LABELS = {"base64": "base64_span", "arabic": "arabic_span"}


class FeatureParams(JobParams):
    """Parameters every causal feature job shares."""

    category: str = "base64"  # "base64" / "arabic" (planted spans) or a token category of the synthetic vocab
    predict: str | None = None  # token category the feature should promote; None: the category itself
    feature: int | None = Field(None, ge=0)  # SAE latent to study; None: the best F1 detector of the category
    sae: SaeRecipe = SaeRecipe()  # the SAE features are read from (defaults: the `sae` job's)
    sae_seed: int | None = None  # seed of that SAE; None: the job seed (each seed replicates SAE training)
    select_tokens: int = Field(16_384, ge=64)  # held-out tokens the feature is chosen on (whole sequences)
    model_batch_size: int = Field(64, ge=1)  # sequences per model forward pass
    threads: int | None = Field(1, ge=1)  # torch CPU threads (small matmuls on shared cores run fastest on
    #                                       one); None keeps torch's setting


def category_spec(vocab: Vocab, category: str, predict: str | None = None) -> tuple[str, str]:
    """(label name in span_labels, predicted token category) for a category name; InvalidInput lists choices."""
    cats = list(vocab.categories)
    if category in SPAN_LABELS:
        label = SPAN_LABELS[category]
    elif category in cats:
        label = f"cat:{category}"
    else:
        raise InvalidInput(f"unknown category {category!r}: use 'base64' or 'arabic' (planted spans) or a token "
                           f"category of the synthetic vocabulary: {', '.join(cats)}")
    predicted = predict or category
    if predicted not in cats:
        raise InvalidInput(f"unknown predicted token category {predicted!r}; known: {', '.join(cats)}")
    return label, predicted


@dataclass
class LatentStats:
    """Every latent scored as a detector of one label on held-out tokens (tensors [d_sae] on CPU)."""

    label: str
    detection: Detection
    freq: Tensor  # fraction of tokens where the latent fires
    max_act: Tensor  # largest activation seen
    n_tokens: int
    seed: int


def score_latents(model: HookedModel, sae: SparseAutoencoder, corpus: SyntheticCorpus, hook: str, label: str, *, seed: int, n_tokens: int,
                  batch_size: int = 64) -> LatentStats:
    """Detection scores, firing frequency and maximum activation of every latent on n_tokens (whole sequences)
    sampled with `seed`."""
    from .select import detection_scores, latent_acts

    tokens = corpus.sample(math.ceil(n_tokens / corpus.seq_len), seed)                # [N, T]
    labels = corpus.span_labels(tokens)
    if label not in labels:
        raise InvalidInput(f"unknown label {label!r}; the corpus labels: {', '.join(labels)}")
    acts = latent_acts(model, sae, tokens, hook, batch_size=batch_size)              # [N * T, d_sae]
    y = labels[label].reshape(-1)                                                     # [N * T]
    if not bool(y.any()):
        raise InvalidInput(f"no {label} positions among {len(y)} tokens; raise select_tokens")
    det = detection_scores(acts, y)
    return LatentStats(label=label, detection=det, freq=(acts > 0).float().mean(0), max_act=acts.amax(0),
                       n_tokens=int(y.numel()), seed=seed)


def _scores(stats: LatentStats, j: int) -> dict[str, float]:
    d = stats.detection
    return {"f1": float(d.f1[j]), "precision": float(d.precision[j]), "recall": float(d.recall[j]),
            "auroc": float(d.auroc[j]), "freq": float(stats.freq[j]), "max_act": float(stats.max_act[j])}


def describe_choice(stats: LatentStats, feature: int, *, chosen_by: str) -> dict[str, Any]:
    """JSON-able record of a chosen latent: its scores, how it was chosen, and the next-best detectors."""
    order = stats.detection.f1.argsort(descending=True)
    runners = [int(j) for j in order[:5] if int(j) != feature][:4]
    return {"feature": feature, "label": stats.label, "chosen_by": chosen_by, **_scores(stats, feature),
            "n_pos": stats.detection.n_pos, "n_tokens": stats.n_tokens, "select_seed": stats.seed,
            "runners_up": [{"feature": j, **_scores(stats, j)} for j in runners]}


def choose_feature(model: HookedModel, sae: SparseAutoencoder, corpus: SyntheticCorpus, hook: str, category: str, *, seed: int,
                   n_tokens: int, feature: int | None = None, batch_size: int = 64) -> dict[str, Any]:
    """The latent that best detects the category's label by F1 (`select.detection_scores`) on n_tokens
    held-out tokens sampled with `seed + SELECT_OFFSET`, with its scores (or, when `feature` is given, that
    latent's scores)."""
    label, _ = category_spec(corpus.vocab, category)
    stats = score_latents(model, sae, corpus, hook, label, seed=seed + SELECT_OFFSET, n_tokens=n_tokens,
                          batch_size=batch_size)
    return _choose(stats, feature)


def _choose(stats: LatentStats, feature: int | None) -> dict[str, Any]:
    d_sae = stats.freq.shape[0]
    if feature is not None and not 0 <= feature < d_sae:
        raise InvalidInput(f"feature {feature} is out of range: the SAE has latents 0..{d_sae - 1}")
    if feature is None:
        return describe_choice(stats, stats.detection.best("f1"), chosen_by="best f1")
    return describe_choice(stats, feature, chosen_by="given")


def control_latent(stats: LatentStats, feature: int, seed: int) -> int:
    """A random live latent firing about as often as `feature` (within a factor 2; else the closest in log
    frequency) that is not itself a good detector of the label (F1 at most half the feature's)."""
    import torch

    freq, f1 = stats.freq, stats.detection.f1
    ok = (freq > 0) & (f1 <= 0.5 * f1[feature])
    ok[feature] = False
    if not bool(ok.any()):
        raise InvalidInput("no live latent other than the feature to use as a control; use a larger SAE")
    ratio = (freq.clamp_min(1e-12) / max(float(freq[feature]), 1e-12)).log().abs()    # [d_sae]
    near = ok & (ratio <= math.log(2))
    g = torch.Generator().manual_seed(int(seed))
    if bool(near.any()):
        cands = near.nonzero().reshape(-1)
        return int(cands[torch.randint(len(cands), (1,), generator=g)])
    return int(torch.where(ok, ratio, torch.full_like(ratio, float("inf"))).argmin())




@dataclass
class Target:
    """The model, corpus, SAE and chosen feature one seed of a causal job works on."""

    model: HookedModel
    corpus: SyntheticCorpus
    sae: SparseAutoencoder
    sae_folder: Path
    hook: str
    category: str
    label: str
    predict: str
    feature: int
    choice: dict[str, Any]
    stats: LatentStats
    d_corpus: int  # synthetic vocabulary size (a prefix of the model's)

    @property
    def sae_key(self) -> str:
        return self.sae_folder.name

    def category_mask(self) -> Tensor:
        """BoolTensor[d_corpus]: the predicted category's tokens."""
        return self.corpus.vocab.category_mask(self.predict)

    def decode(self, ids: Tensor | list[int]) -> list[str]:
        """Synthetic-vocabulary strings for ids (the corpus defines what an id means, also in an HF model)."""
        return self.corpus.vocab.decode(ids)

    def details(self) -> dict[str, Any]:
        """What feature pages need to find the SAE and feature, plus how it was chosen."""
        return {"sae_folder": str(self.sae_folder), "sae_key": self.sae_key, "feature": self.feature,
                "hook": self.hook, "category": self.category, "label": self.label, "predict": self.predict,
                "d_sae": int(self.stats.freq.shape[0]), "selection": self.choice}


def prepare(ctx: RunContext, params: FeatureParams, seed: int, *, job: str) -> Target:
    """Load the model and corpus named in ctx, provision the SAE, and choose (or score) the feature."""
    from claimgraph.experiments.sae.provision import provision_sae
    from claimgraph.experiments.substrate.load import check_fit, corpus_for, load_model

    if ctx.model_ref is None:
        raise InvalidInput(f"the {job} job needs a model; give --model toy:<preset> or hf:/local/dir")
    device = resolve_device(ctx.device)
    model = load_model(ctx.model_ref, device=device, progress=ctx.show_progress)
    corpus, data_ref = corpus_for(ctx.model_ref, ctx.data_ref)
    d_corpus = len(corpus.vocab)
    hook = params.sae.hook
    check_fit(model, ctx.model_ref, corpus, data_ref, hook=hook)
    label, predict = category_spec(corpus.vocab, params.category, params.predict)
    sae_seed = seed if params.sae_seed is None else params.sae_seed
    sae, folder = provision_sae(model, ctx.model_ref, corpus, data_ref, params.sae, sae_seed, log=ctx.log,
                                progress=lambda it: ctx.progress(it, total=params.sae.steps, desc="SAE"),
                                batch_size=params.model_batch_size)
    stats = score_latents(model, sae, corpus, hook, label, seed=seed + SELECT_OFFSET,
                          n_tokens=params.select_tokens, batch_size=params.model_batch_size)
    choice = _choose(stats, params.feature)
    ctx.log(f"feature {choice['feature']} for {label} ({choice['chosen_by']}): F1 {choice['f1']:.3f}, "
            f"AUROC {choice['auroc']:.3f}, fires on {choice['freq']:.4f} of tokens; SAE {folder.name}")
    return Target(model=model, corpus=corpus, sae=sae, sae_folder=Path(folder), hook=hook,
                  category=params.category, label=label, predict=predict, feature=int(choice["feature"]),
                  choice=choice, stats=stats, d_corpus=d_corpus)


FP = TypeVar("FP", bound=FeatureParams)


class FeatureJob(ModelJob[FP]):
    """A causal feature job (logit_weights, ablation, pinned_sampling): each seed loads the model, provisions the
    SAE and chooses the feature (`prepare`), then `measure(ctx, params, seed, target)` of the kind's run.py
    measures it."""

    def run(self, ctx: RunContext, params: FP, seed: int) -> SeedResult:
        comp = self.computation()
        assert comp is not None and hasattr(comp, "measure"), f"{self.kind}: run.py must define measure()"
        with torch_threads(params.threads):
            result: SeedResult = comp.measure(ctx, params, seed, prepare(ctx, params, seed, job=self.kind))
            return result
