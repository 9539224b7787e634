"""Which SAE latent a feature job studies, and everything the three causal jobs (logit_weights, ablation,
pinned_sampling) share: their common parameters, loading the model, corpus and provisioned SAE, choosing the
feature on held-out tokens, and a control latent.

Categories: "base64" and "arabic" are the planted spans (the latent must detect positions inside
`b64: ... =` / `<ar> ... </ar>`, label `base64_span` / `arabic_span`) and predict the span's own characters;
any other token category `<x>` of the synthetic vocabulary uses the label `cat:<x>` and, unless `predict` says
otherwise, predicts its own tokens.

Token sets are sampled with fixed seed offsets, so the SAE's training tokens (seed), the tokens the feature is
chosen on (seed + SELECT_OFFSET) and the tokens every measurement uses (seed + MEASURE_OFFSET, PROMPT_OFFSET)
are independent samples.

On a real-text corpus (`text:<recipe>`, substrate/text.py) the categories are the corpus' character labels
(`base64`, `arabic`, ...; the label has the category's name) and the predicted tokens are the tokenizer's
(`text.category_token_mask`: read from each token's string, not from the corpus). Windows are fixed slices,
so one forward pass per (model, hook, slice) serves every seed and job through the activation cache: the SAE
trains on train windows [0, n) (n = sae.train_tokens / seq_len), the feature is chosen on eval windows
[0, n_select) and every measurement reads eval windows from n_select on (held-out documents only). Across
seeds only the SAE (its training seed), the feature chosen in it and the control draws vary. Torch is imported inside functions: the kinds' modules import the Params and
`FeatureJob` from here without it.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from pydantic import Field

from claimgraph.experiments.context import RunContext, resolve_device, torch_threads
from claimgraph.experiments.job import JobParams, SeedResult
from claimgraph.experiments.sae.recipe import SaeRecipe
from claimgraph.experiments.spec import JobSpec
from claimgraph.experiments.substrate.families import ModelJob
from claimgraph.experiments.substrate.text import is_text, record_corpus
from claimgraph.graph.errors import InvalidInput, NotFound

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
    sae_path: str | None = None  # an SAE trained elsewhere (a folder in the SAELens layout) used instead of
    #                              training one; of the recipe only sae.hook applies (it must be the SAE's hook)
    sae_sha256: str | None = None  # sha256 of that SAE's weights file: filled in at `experiment add`; a run
    #                                refuses a file that changed since (a changed SAE is a new experiment)
    sae_cfg_sha256: str | None = None  # sha256 of its cfg.json, likewise
    select_tokens: int = Field(16_384, ge=64)  # held-out tokens the feature is chosen on (whole sequences)
    model_batch_size: int = Field(64, ge=1)  # sequences per model forward pass
    threads: int | None = Field(1, ge=1)  # torch CPU threads (small matmuls on shared cores run fastest on
    #                                       one); None keeps torch's setting
    model_seeds: Literal["fixed", "per_replicate"] = Field(
        "fixed", description="'fixed': every seed reads the preset's one trained model, so the interval covers SAE "
        "seeds and token samples only; 'per_replicate': seed s reads replicate s of a toy preset's family "
        "(substrate.load.model_family: initialisation and training order from the preset's seed + s; replicate 0 "
        "is the preset itself), so the interval covers model training too. toy: models only")

    def windows_per_seed(self) -> bool:
        """Whether each seed measures on its own slice of a text corpus (not one fixed slice for every seed)."""
        return False


def category_spec(vocab: Vocab | None, category: str, predict: str | None = None) -> tuple[str, str]:
    """(label name in span_labels, predicted token category) for a category name; InvalidInput lists choices.
    `vocab` None: a real-text corpus, whose labels are text.LABELS and whose token sets text.TOKEN_CATEGORIES."""
    if vocab is None:
        from claimgraph.experiments.substrate.text import LABELS, TOKEN_CATEGORIES

        if category not in LABELS:
            raise InvalidInput(f"unknown category {category!r} for a text: corpus; its labels: {', '.join(LABELS)}")
        predicted = predict or category
        if predicted not in TOKEN_CATEGORIES:
            raise InvalidInput(f"no token set for predicted category {predicted!r} on real text; known: "
                               f"{', '.join(TOKEN_CATEGORIES)} (set predict=)")
        return category, predicted
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
    open_share: float | None = None  # text corpora: share of the label's positives whose token leaves it open
    open_recall: Tensor | None = None  # [d_sae] share of those open positives where the latent fires


def score_latents(model: HookedModel, sae: SparseAutoencoder, corpus: SyntheticCorpus, hook: str, label: str, *, seed: int, n_tokens: int,
                  batch_size: int = 64) -> LatentStats:
    """Detection scores, firing frequency and maximum activation of every latent on n_tokens (whole sequences)
    sampled with `seed`."""
    from .select import detection_scores

    n_windows = math.ceil(n_tokens / corpus.seq_len)
    acts, labels, keep = selection_acts(model, sae, corpus, hook, seed=seed, n_tokens=n_tokens,
                                        batch_size=batch_size, label=label)
    y = labels[label].reshape(-1)                                                     # [N * T]
    if not bool(y.any()):
        raise InvalidInput(f"no {label} positions among {len(y)} tokens; raise select_tokens")
    det = detection_scores(acts, y)
    stats = LatentStats(label=label, detection=det, freq=(acts > 0).float().mean(0), max_act=acts.amax(0),
                        n_tokens=int(y.numel()), seed=seed)
    if is_text(corpus):  # where the token leaves the label open (< 90% of its train occurrences carry it)
        import numpy as np
        import torch

        from claimgraph.experiments.substrate.text import LABELS

        j = LABELS.index(label)
        tok_tr = corpus.tokens["train"].reshape(-1)
        pos = np.bincount(tok_tr, weights=corpus.labels["train"][..., j].reshape(-1), minlength=model.d_vocab)
        cnt = np.bincount(tok_tr, minlength=model.d_vocab)
        open_tok = torch.from_numpy((cnt == 0) | (pos < 0.9 * cnt))                    # [V]
        ids = torch.from_numpy(corpus.tokens["eval"][:n_windows].reshape(-1))[keep]
        open_pos = y & open_tok[ids]                                                    # [M]
        stats.open_share = float(open_pos.sum()) / max(int(y.sum()), 1)
        stats.open_recall = ((acts[open_pos] > 0).float().mean(0) if bool(open_pos.any())
                             else torch.zeros(acts.shape[1]))
    return stats


STATS_FORMAT = "claimgraph-latent-stats/1"


def stats_key(model: HookedModel, sae_identity: dict[str, Any], corpus: Any, data_ref: str, hook: str, label: str, *,
              seed: int, n_tokens: int, batch_size: int, device: str) -> str | None:
    """The cache key of `score_latents`' result: what determines it (the model's weights, the SAE, the corpus,
    hook, label, seed, tokens and batch size, the device and torch, and the source of every module the scoring
    can run). None for a model without a fingerprint (built in memory): never cached."""
    import hashlib
    import json

    import torch

    from claimgraph.experiments.codeversion import module_version
    from claimgraph.experiments.substrate.acts_cache import model_fingerprint

    fingerprint = model_fingerprint(model)
    if fingerprint is None:
        return None
    corpus_id: dict[str, Any] = {"ref": data_ref}
    if is_text(corpus):  # the whole manifest: documents (hence labels), tokens, tokenizer, recipe, versions
        corpus_id["manifest"] = corpus.manifest
    else:
        corpus_id["config"] = corpus.config.model_dump(mode="json")
    payload = {"format": STATS_FORMAT, "model": fingerprint, "sae": sae_identity, "corpus": corpus_id, "hook": hook,
               "label": label, "seed": seed, "n_tokens": n_tokens, "batch_size": batch_size, "device": device,
               "torch": torch.__version__, "code": module_version(__name__)}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:20]


def cached_latent_stats(key: str | None, compute: Callable[[], LatentStats]) -> LatentStats:
    """`compute()`, once per key: cache_dir()/latent-stats/<key>/ (stats.safetensors and stats.json, written to a
    temp folder and renamed, under a lock) holds the result for every later run. The three causal kinds choose
    their latent from the same scores of the same SAE on the same tokens (a seed's base64 or arabic feature:
    logit_weights, ablation and pinned_sampling), so two of every three computations were the same. The tensors
    load bit for bit as computed, and the run that computes reads them back like the others."""
    if key is None:
        return compute()
    import json

    from safetensors.torch import load_file, save_file

    from claimgraph.experiments.context import cache_dir
    from claimgraph.experiments.substrate.atomic import build_once

    from .select import Detection

    def build(tmp: Path) -> None:
        st = compute()
        d = st.detection
        values = {"f1": d.f1, "precision": d.precision, "recall": d.recall, "auroc": d.auroc, "freq": st.freq,
                  "max_act": st.max_act, "open_recall": st.open_recall}
        tmp.mkdir(parents=True)
        save_file({k: v.contiguous() for k, v in values.items() if v is not None}, str(tmp / "stats.safetensors"))
        (tmp / "stats.json").write_text(json.dumps({
            "format": STATS_FORMAT, "label": st.label, "n_pos": d.n_pos, "n": d.n, "n_tokens": st.n_tokens,
            "seed": st.seed, "open_share": st.open_share}))

    folder = build_once(cache_dir() / "latent-stats" / key, "stats.json", build)
    meta = json.loads((folder / "stats.json").read_text())
    t = load_file(str(folder / "stats.safetensors"))
    det = Detection(f1=t["f1"], precision=t["precision"], recall=t["recall"], auroc=t["auroc"], n_pos=meta["n_pos"],
                    n=meta["n"])
    return LatentStats(label=meta["label"], detection=det, freq=t["freq"], max_act=t["max_act"],
                       n_tokens=meta["n_tokens"], seed=meta["seed"], open_share=meta["open_share"],
                       open_recall=t.get("open_recall"))


def selection_acts(model: HookedModel, sae: SparseAutoencoder, corpus: SyntheticCorpus, hook: str, *, seed: int,
                   n_tokens: int, batch_size: int = 64, label: str | None = None
                   ) -> tuple[Tensor, dict[str, Tensor], Tensor | None]:
    """Latent activations [M, d_sae] and labels {name: bool [M]} of the tokens latents are scored on: on a text
    corpus eval windows [0, n) through the activation cache (shared by every seed and job) without the document
    separators (`keep` [n * T] says which positions are kept); otherwise n windows sampled with `seed` (keep
    None). `label`, when given, must be one of the corpus' labels (checked before any activation is computed)."""
    from .select import latent_acts

    n_windows = math.ceil(n_tokens / corpus.seq_len)
    if is_text(corpus):
        import numpy as np
        import torch

        # document separators (every window's first position) are left out: no label, and a residual stream
        # there that is not about the text (its norm is many times the others')
        keep = torch.from_numpy(corpus.tokens["eval"][:n_windows].reshape(-1) != corpus.manifest["separator_id"])
        labels = {k: v.reshape(-1)[keep] for k, v in corpus.window_labels("eval", np.arange(n_windows)).items()}
        if label is not None and label not in labels:
            raise InvalidInput(f"unknown label {label!r}; the corpus labels: {', '.join(labels)}")
        acts = encode_cached(model, sae, corpus, hook, "eval", 0, n_windows, batch_size=batch_size)[keep]
        return acts, labels, keep
    tokens = corpus.sample(n_windows, seed)                                           # [N, T]
    labels = {k: v.reshape(-1) for k, v in corpus.span_labels(tokens).items()}
    if label is not None and label not in labels:
        raise InvalidInput(f"unknown label {label!r}; the corpus labels: {', '.join(labels)}")
    return latent_acts(model, sae, tokens, hook, batch_size=batch_size), labels, None  # [N * T, d_sae]


def encode_cached(model: HookedModel, sae: SparseAutoencoder, corpus: Any, hook: str, split: str, start: int,
                  stop: int, *, batch_size: int = 64, chunk: int = 4096) -> Tensor:
    """SAE latent activations [n * T, d_sae] (float32, CPU) of windows [start, stop) of a text corpus' split,
    read from the activation cache (computed there once per model, hook and slice)."""
    import torch

    from claimgraph.experiments.substrate.acts_cache import cached_activations

    acts = cached_activations(model, corpus, hook, split=split, start=start, stop=stop,
                              batch_size=min(batch_size, 16)).tensor()                   # [n * T, d_in]
    dev = next(sae.parameters()).device
    with torch.no_grad():
        return torch.cat([sae.encode(a.to(dev)).float().cpu() for a in acts.split(chunk)])  # [n * T, d_sae]


def _scores(stats: LatentStats, j: int) -> dict[str, float]:
    d = stats.detection
    out = {"f1": float(d.f1[j]), "precision": float(d.precision[j]), "recall": float(d.recall[j]),
           "auroc": float(d.auroc[j]), "freq": float(stats.freq[j]), "max_act": float(stats.max_act[j])}
    if stats.open_recall is not None:  # recall where the token carries the label < 90% of the time (context)
        out["open_recall"] = float(stats.open_recall[j])
        out["open_share"] = float(stats.open_share or 0.0)
    return out


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


def null_latents(stats: LatentStats, feature: int, n: int, seed: int) -> list[int]:
    """`n` distinct frequency-matched control latents: live latents that are not good detectors of the label
    (F1 at most half the feature's), drawn at random among those firing within a factor 2 of the feature's
    frequency; when fewer are that close, the rest are the next closest in log frequency."""
    import torch

    freq, f1 = stats.freq, stats.detection.f1
    ok = (freq > 0) & (f1 <= 0.5 * f1[feature])
    ok[feature] = False
    if int(ok.sum()) < n:
        raise InvalidInput(f"only {int(ok.sum())} live latents can serve as controls, {n} wanted; use a wider SAE")
    ratio = (freq.clamp_min(1e-12) / max(float(freq[feature]), 1e-12)).log().abs()    # [d_sae]
    g = torch.Generator().manual_seed(int(seed) + 7919)
    near = (ok & (ratio <= math.log(2))).nonzero().reshape(-1)
    near = near[torch.randperm(len(near), generator=g)]
    picks = [int(j) for j in near[:n]]
    if len(picks) < n:
        rest = torch.where(ok & (ratio > math.log(2)), ratio, torch.full_like(ratio, float("inf"))).argsort()
        picks += [int(j) for j in rest[:n - len(picks)]]
    return picks




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
    d_corpus: int  # synthetic vocabulary size (a prefix of the model's); a text corpus: the model's vocabulary
    sae_source: dict[str, Any] | None = None  # an SAE given by path: folder, digests, architecture, hook
    n_select_windows: int = 0  # text corpora: eval windows [0, n) chose the feature; measurements start after
    model_seed: int | None = None  # the toy preset's replicate the seed read (model_seeds per_replicate); None: the preset
    _mask: Tensor | None = None

    @property
    def sae_key(self) -> str | None:
        """The provisioned SAE's cache key (its folder's name); None for an SAE given by path."""
        return None if self.sae_source else self.sae_folder.name

    @property
    def text(self) -> bool:
        return is_text(self.corpus)

    def category_mask(self) -> Tensor:
        """BoolTensor[d_corpus]: the predicted category's tokens (text corpora: from the tokenizer's strings)."""
        if not is_text(self.corpus):
            return self.corpus.vocab.category_mask(self.predict)
        if self._mask is None:
            import torch

            from claimgraph.experiments.substrate.text import category_token_mask

            tok = getattr(self.model, "tokenizer", None)
            self._mask = torch.from_numpy(category_token_mask(tok, self.predict, self.d_corpus))
        return self._mask

    def measure_windows(self, n: int, seed: int) -> Tensor:
        """n windows [n, T] to measure on: synthetic, sampled with seed + MEASURE_OFFSET; text, eval windows
        [n_select, n_select + n) (held-out documents, not those the feature was chosen on)."""
        if not is_text(self.corpus):
            return self.corpus.sample(n, seed + MEASURE_OFFSET)
        have = self.corpus.n_windows("eval") - self.n_select_windows
        if n > have:
            raise InvalidInput(f"{self.corpus.ref} has {have} eval windows after the {self.n_select_windows} the "
                               f"feature was chosen on; {n} asked for")
        return self.corpus.window_slice("eval", self.n_select_windows, self.n_select_windows + n)

    def decode(self, ids: Tensor | list[int]) -> list[str]:
        """Token strings for ids: the synthetic vocabulary's (which defines an id's meaning, also in an HF model),
        or, on real text, the tokenizer's decoded strings."""
        if self.text:
            ids = ids.reshape(-1).tolist() if hasattr(ids, "reshape") else [int(i) for i in ids]
            from claimgraph.experiments.substrate.text import token_strings

            tok = getattr(self.model, "tokenizer", None)
            assert tok is not None, "a text: corpus is read by a model with a tokenizer"
            strings = token_strings(tok)  # the same decode([i]), once per vocabulary
            return [strings[int(i)] if 0 <= int(i) < len(strings) else tok.decode([int(i)]) for i in ids]
        return self.corpus.vocab.decode(ids)

    def details(self) -> dict[str, Any]:
        """What feature pages need to find the SAE and feature, plus how it was chosen."""
        return {"sae_folder": str(self.sae_folder), "sae_key": self.sae_key, "feature": self.feature,
                "hook": self.hook, "category": self.category, "label": self.label, "predict": self.predict,
                "d_sae": int(self.stats.freq.shape[0]), "selection": self.choice,
                **({"model_seed": self.model_seed, "model_cache_key": Path(str(self.model.cache_path)).name}
                   if self.model_seed is not None else {}),
                **({"sae_source": self.sae_source} if self.sae_source else {})}


def prepare(ctx: RunContext, params: FeatureParams, seed: int, *, job: str) -> Target:
    """Load the model and corpus named in ctx, provision the SAE, and choose (or score) the feature."""
    from claimgraph.experiments.sae.provision import provision_sae
    from claimgraph.experiments.substrate.load import check_fit, corpus_for, load_model

    if ctx.model_ref is None:
        raise InvalidInput(f"the {job} job needs a model; give --model toy:<preset> or hf:/local/dir")
    device = resolve_device(ctx.device)
    model_seed = seed if params.model_seeds == "per_replicate" else None
    model = load_model(ctx.model_ref, device=device, progress=ctx.show_progress, model_seed=model_seed)
    if model_seed is not None:
        assert model.cache_path is not None, "a toy replicate loads from its training cache"
        ctx.log(f"model: replicate {model_seed} of {ctx.model_ref} (trained {model.cache_path.name})")
    corpus, data_ref = corpus_for(ctx.model_ref, ctx.data_ref)
    d_corpus = model.d_vocab if is_text(corpus) else len(corpus.vocab)
    hook = params.sae.hook
    check_fit(model, ctx.model_ref, corpus, data_ref, hook=hook)
    record_corpus(ctx.artifacts_dir, corpus)
    label, predict = category_spec(corpus.vocab, params.category, params.predict)
    source: dict[str, Any] | None = None
    if params.sae_path is not None:
        sae, source = given_sae(model, corpus, params, device)
        folder = Path(source["path"])
        ctx.log(f"SAE given by path: {folder} ({source['architecture']}, {source['d_sae']} latents, weights sha256 "
                f"{source['weights_sha256'][:12]})")
    else:
        sae_seed = seed if params.sae_seed is None else params.sae_seed
        sae, folder = provision_sae(model, ctx.model_ref, corpus, data_ref, params.sae, sae_seed, log=ctx.log,
                                    progress=lambda it: ctx.progress(it, total=params.sae.steps, desc="SAE"),
                                    batch_size=params.model_batch_size)
    sae_identity = ({"weights_sha256": source["weights_sha256"], "cfg_sha256": source["cfg_sha256"]} if source
                    else {"cache": Path(folder).name})
    key = stats_key(model, sae_identity, corpus, data_ref, hook, label, seed=seed + SELECT_OFFSET,
                    n_tokens=params.select_tokens, batch_size=params.model_batch_size, device=str(device))
    stats = cached_latent_stats(key, lambda: score_latents(model, sae, corpus, hook, label, seed=seed + SELECT_OFFSET,
                                                           n_tokens=params.select_tokens,
                                                           batch_size=params.model_batch_size))
    choice = _choose(stats, params.feature)
    ctx.log(f"feature {choice['feature']} for {label} ({choice['chosen_by']}): F1 {choice['f1']:.3f}, "
            f"AUROC {choice['auroc']:.3f}, fires on {choice['freq']:.4f} of tokens; SAE {folder.name}")
    return Target(model=model, corpus=corpus, sae=sae, sae_folder=Path(folder), hook=hook,
                  category=params.category, label=label, predict=predict, feature=int(choice["feature"]),
                  choice=choice, stats=stats, d_corpus=d_corpus, sae_source=source, model_seed=model_seed,
                  n_select_windows=math.ceil(params.select_tokens / corpus.seq_len) if is_text(corpus) else 0)


def given_sae(model: HookedModel, corpus: SyntheticCorpus, params: FeatureParams,
              device: str) -> tuple[SparseAutoencoder, dict[str, Any]]:
    """The SAE at `params.sae_path`, refused (InvalidInput) when it reads another hook or width than the model
    gives at `params.sae.hook`, or when its files are not those the experiment registered."""
    from claimgraph.experiments.sae.io import sae_from_path
    from claimgraph.experiments.substrate.load import activations

    assert params.sae_path is not None
    hook = params.sae.hook
    width = int(activations(model, corpus.sample(1, 0)[:, :2], hook, out_device="cpu").shape[-1])
    sae, source = sae_from_path(params.sae_path, device=device, d_in=width, hook_name=hook)
    check_registered(params, source.path, source.weights_sha256, source.cfg_sha256)
    return sae, source.record()


def check_registered(params: FeatureParams, path: str, weights_sha256: str, cfg_sha256: str) -> None:
    """Refuse an SAE folder whose files are not those `params` registered (when it registered digests)."""
    for field, now in (("sae_sha256", weights_sha256), ("sae_cfg_sha256", cfg_sha256)):
        registered = getattr(params, field)
        if registered is not None and registered != now:
            raise InvalidInput(f"param {field}: the SAE at {path} is not the one this experiment registered "
                               f"(sha256 {registered[:12]} then, {now[:12]} now); a changed SAE is a new "
                               "experiment: add it again with `claimgraph experiment add`")


def seeds_note(params: FeatureParams, n_seeds: int, *, text: bool = False) -> str:
    """What the seeds of a feature job vary, hence what its interval covers (`text`: a text: corpus, whose
    selection windows are a fixed slice, and its measurement windows too unless `params.windows_per_seed()`)."""
    own = text and params.windows_per_seed()
    if own:
        tokens = ("its own measurement windows of the text corpus, positions and random directions (the windows "
                  "latents are chosen on are one fixed slice)")
    elif text:
        tokens = ("the control latents and positions (the windows the feature is chosen and measured on are fixed "
                  "slices of the text corpus)")
    else:
        tokens = "the tokens the feature is chosen on and measured on, and the control latent"
    if params.sae_path is not None:
        return (f"The SAE is fixed, given by path ({params.sae_path}, weights sha256 {(params.sae_sha256 or '?')[:12]}): "
                f"the {n_seeds} seed(s) vary only {tokens}, so the interval does not cover SAE seeds (nor how the "
                "SAE was trained).")
    if params.sae_seed is not None:
        return (f"One SAE (seed {params.sae_seed}) for every seed: the {n_seeds} seed(s) vary only {tokens}, so the "
                "interval does not cover SAE seeds.")
    if params.model_seeds == "per_replicate":
        return (f"Each seed reads its own replicate of the toy model (model seed = job seed: its own initialisation "
                f"and training order), trains its own SAE on it (SAE seed = job seed) and draws {tokens}: the "
                f"interval covers model seeds and SAE seeds.")
    covers = "SAE seeds and text samples (not model seeds)" if own else "SAE seeds"
    return (f"Each seed trains its own SAE (SAE seed = job seed) on the one trained model and draws {tokens}: the "
            f"interval covers {covers}, not how the model's training could have gone.")


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

    def summarize(self, ctx: RunContext, params: FP, results: list[SeedResult]) -> dict[str, Any]:
        """The kind's summary, its notes followed by what the seeds varied (what the interval covers)."""
        out = super().summarize(ctx, params, results)
        note = seeds_note(params, len(results), text=bool(ctx.data_ref and ctx.data_ref.startswith("text:")))
        out["notes"] = f"{out['notes']}\n{note}" if out.get("notes") else note
        return out

    def resolve_spec(self, spec: JobSpec) -> JobSpec:
        """With `sae_path`: the folder made absolute and its files' digests written into the params; refused
        (InvalidInput / NotFound / InvalidDocument, naming the field) when the folder is not an SAE claimgraph
        loads, names another hook than `sae.hook`, is narrower or wider than the model's hook where its config
        says the width, or is not the file the experiment registered; also refused: recipe settings or
        `sae_seed` that a given SAE would silently ignore."""
        params = self.Params.model_validate(spec.params)
        if params.model_seeds == "per_replicate":
            if not (spec.model or "").startswith("toy:"):
                raise InvalidInput(f"param model_seeds: per_replicate trains a replicate of a toy preset per seed; "
                                   f"{spec.model} is one trained model (use model_seeds=fixed, or a toy:<preset>)")
            if params.sae_path is not None:
                raise InvalidInput("param model_seeds: an SAE given by path (sae_path) was trained on one model; "
                                   "per_replicate needs an SAE per replicate (remove sae_path or model_seeds)")
            if "@" in (spec.model or ""):
                raise InvalidInput(f"param model_seeds: per_replicate reads each replicate's final weights; "
                                   f"{spec.model} names a checkpoint")
        if params.sae_path is None:
            for field in ("sae_sha256", "sae_cfg_sha256"):
                if getattr(params, field) is not None:
                    raise InvalidInput(f"param {field} names the digest of an SAE given by path; give sae_path too")
            return spec
        from claimgraph.experiments.sae.folder import read_sae_folder
        from claimgraph.experiments.substrate.families import hook_width, model_info

        if params.sae_seed is not None:
            raise InvalidInput("param sae_seed: the SAE is given (sae_path), not trained; remove sae_seed")
        default = self.Params.model_fields["sae"].get_default(call_default_factory=True)
        ignored = [f"sae.{k}" for k, v in params.sae.model_dump(exclude={"hook"}).items()
                   if v != getattr(default, k)]
        if ignored:
            raise InvalidInput(f"param {ignored[0]}: the SAE is given (sae_path), not trained, so only sae.hook "
                               f"applies; remove {', '.join(ignored)}")
        try:
            f = read_sae_folder(params.sae_path)
        except NotFound as e:  # a parameter naming nothing is bad input (exit 2), as a bad value is
            raise InvalidInput(f"param sae_path: {e}") from None
        where = f"{f.path}/cfg.json"
        check_registered(params, f.path, f.weights_sha256, f.cfg_sha256)
        if f.hook_name is not None and f.hook_name != params.sae.hook:
            raise InvalidInput(f"param sae.hook: the SAE at {f.path} reads hook {f.hook_name!r} ({where}: hook_name), "
                               f"not {params.sae.hook!r}; add --param sae.hook={f.hook_name}")
        info = model_info(spec.model) if spec.model else None
        width = hook_width(info, params.sae.hook) if info is not None else None
        if width is not None and width != f.d_in:
            raise InvalidInput(f"param sae_path: the SAE at {f.path} reads {f.d_in}-wide activations ({where}: d_in), "
                               f"but {spec.model} gives {width} at {params.sae.hook}")
        resolved = params.model_copy(update={"sae_path": f.path, "sae_sha256": f.weights_sha256,
                                             "sae_cfg_sha256": f.cfg_sha256})
        return spec.model_copy(update={"params": resolved.model_dump(mode="json")})

    def input_provenance(self, spec: JobSpec) -> dict[str, Any] | None:
        """The model's provenance, and with `sae_path` the SAE folder's (path, digests, architecture, hook)."""
        prov = super().input_provenance(spec)
        path = spec.params.get("sae_path")
        if not path:
            return prov
        from claimgraph.experiments.sae.folder import read_sae_folder

        return {**(prov or {}), "sae": read_sae_folder(path).record()}
