"""Feature pages: what one SAE latent does, laid out as researchers know it from SAE dashboards (SAE-Vis,
Neuronpedia) and written as HTML (plus PNGs) into the run folder, `<run>/features/feature-<n>.html`.

A page is computed from a run: the run names its SAE (the `sae` job under `details.conditions.<cond>.sae_folder`,
feature jobs under `details.sae_folder` / `details.sae_key`), its config names the model and data. On a held-out
sample of the corpus (fixed seed `PageConfig.sample_seed`, apart from SAE training seeds 0, 1, ... and the `sae`
job's eval seeds seed + 1_000_003) the page shows:
- activation density (fraction of tokens where the latent is > 0) and a histogram of the non-zero activations;
- top activating contexts: the sequences with the highest maximum activation, one context per sequence (so a
  single long run of the feature does not fill the list), a window around that maximum with every token's value;
- quantile bands: the non-zero activations split at their quantiles, random examples from each band;
- the logit table: the decoder direction's direct effect on the logits (`logits.feature_logit_effects`),
  its most positive and negative tokens;
- planted labels of the synthetic corpus the latent detects best (F1 / AUROC of `select.detection_scores`);
- related runs (logit_weights, ablation, pinned_sampling on the same SAE and feature): metrics and verdicts.

`page_for_run(store, run, feature)` is what `claimgraph feature RUN FEATURE` calls; `cli/feature.py` renders.

Nothing here imports torch at module level: the CLI imports the page model without it.
"""
from __future__ import annotations

import math
import operator
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from claimgraph.graph.errors import InvalidDocument, InvalidInput

if TYPE_CHECKING:
    from claimgraph.graph import Store

from .runs import RelatedRun, _read_json, load_run, locate_sae, related_run_dirs, related_runs, resolve_run


class PageConfig(BaseModel):
    """Sizes of a feature page (defaults: a page of toy:default in a few seconds on 2 cores)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    n_tokens: int = Field(16_384, ge=1)  # held-out tokens the page is computed on (whole sequences)
    sample_seed: int = 7_000_003  # corpus seed of that sample; apart from training seeds and the sae job's eval seeds
    top_k: int = Field(20, ge=1)  # top activating contexts (one per sequence)
    before: int = Field(12, ge=0)  # tokens shown before the highlighted token
    after: int = Field(4, ge=0)  # tokens shown after it
    n_bands: int = Field(5, ge=1)  # quantile bands of the non-zero activations
    per_band: int = Field(4, ge=1)  # random examples shown per band
    bins: int = Field(40, ge=1)  # histogram bins over (0, max activation]
    n_logits: int = Field(10, ge=1)  # tokens in each of the positive and negative logit tables
    n_labels: int = Field(5, ge=0)  # planted labels listed (best F1 first)
    batch_size: int = Field(64, ge=1)  # sequences per model forward pass


class Context(BaseModel):
    """A window of tokens around one highlighted token, with the feature's activation on each."""

    seq: int = Field(description="Index of the sequence in the page's sample")
    pos: int = Field(description="Position of the highlighted token in its sequence")
    act: float = Field(description="The feature's activation on the highlighted token")
    start: int = Field(description="Position of the first token shown")
    tokens: list[str]
    acts: list[float]

    @property
    def focus(self) -> int:
        """Index of the highlighted token within `tokens`."""
        return self.pos - self.start


class Band(BaseModel):
    """Non-zero activations between two quantiles, with random examples."""

    q_lo: float = Field(description="Lower quantile (fraction of non-zero activations below the band)")
    q_hi: float
    act_lo: float
    act_hi: float
    n_tokens: int = Field(description="Non-zero activations in the band")
    examples: list[Context]


class Histogram(BaseModel):
    edges: list[float] = Field(description="Bin edges (len(counts) + 1); the last bin includes its right edge")
    counts: list[int]


class LogitEntry(BaseModel):
    token: str
    value: float
    category: str | None = Field(None, description="Planted category of the token (synthetic corpora)")


class LogitTable(BaseModel):
    """Direct effect of one unit of the feature's decoder direction on the output logits, the final LayerNorm
    linearised at the sample's typical residual scale (logits.direct_logit_effects, logits.residual_scale)."""

    top: list[LogitEntry]
    bottom: list[LogitEntry]
    histogram: Histogram = Field(description="Effects over the vocabulary (the synthetic corpus's tokens)")


class LabelScore(BaseModel):
    """How well `feature > 0` detects a planted label of the synthetic corpus on the page's sample."""

    label: str
    f1: float
    precision: float
    recall: float
    auroc: float
    n_pos: int


class SampleInfo(BaseModel):
    data: str
    seed: int
    n_seqs: int
    seq_len: int

    @property
    def n_tokens(self) -> int:
        return self.n_seqs * self.seq_len


class FeaturePage(BaseModel):
    """Everything a feature page shows. `html` is the written page; `images` are its PNGs, relative to it."""

    feature: int
    run_id: str
    run_dir: str
    kind: str
    seed: int = Field(description="The run's seed whose SAE this is")
    condition: str | None = Field(None, description="The sae job's condition (trained / shuffled), if any")
    model: str
    hook: str
    sae_folder: str
    sae_key: str | None = None
    sae_sha256: str | None = Field(None, description="sha256 of the weights of an SAE the run was given by path")
    d_sae: int
    architecture: str
    sample: SampleInfo
    density: float = Field(description="Fraction of sampled tokens where the feature is > 0")
    n_firing: int
    max_act: float
    mean_act: float = Field(description="Mean of the non-zero activations (0 when it never fires)")
    histogram: Histogram = Field(description="Non-zero activations, equal bins over (0, max_act]")
    top_contexts: list[Context]
    bands: list[Band] = Field(description="Quantile bands, highest first")
    logits: LogitTable
    labels: list[LabelScore] = Field(description="Planted labels detected best, by F1")
    related: list[RelatedRun] = Field(default_factory=list)
    html: str | None = None
    images: dict[str, str] = Field(default_factory=dict)


# ----------------------------------------------------------------------------------------------- compute

def feature_acts(model: Any, sae: Any, tokens: Any, hook: str, feature: int, *, batch_size: int = 64):
    """The feature's activations [N, T] (float32, CPU) on tokens [N, T]."""
    from claimgraph.experiments.features.select import latent_acts

    return latent_acts(model, sae, tokens, hook, batch_size=batch_size, latents=[feature]).view(tokens.shape)


def _context(tokens: Any, acts: Any, seq: int, pos: int, before: int, after: int, decode) -> Context:
    T = tokens.shape[1]
    start, end = max(0, pos - before), min(T, pos + after + 1)
    return Context(seq=seq, pos=pos, act=float(acts[seq, pos]), start=start,
                   tokens=decode(tokens[seq, start:end]), acts=[float(a) for a in acts[seq, start:end]])


def top_contexts(tokens: Any, acts: Any, k: int, *, before: int, after: int, decode) -> list[Context]:
    """One context per sequence around its maximum, for the k sequences with the highest maximum (> 0)."""
    import torch

    seq_max, seq_pos = acts.max(dim=1)                                                     # [N], [N]
    order = torch.sort(seq_max, descending=True, stable=True).indices                      # [N]
    order = order[seq_max[order] > 0][:k]
    return [_context(tokens, acts, int(s), int(seq_pos[s]), before, after, decode) for s in order]


def quantile_bands(tokens: Any, acts: Any, n_bands: int, per_band: int, *, before: int, after: int, decode,
                   seed: int) -> list[Band]:
    """Non-zero activations split at their quantiles 0, 1/n, ..., 1; up to `per_band` random tokens from each
    band (fixed generator), each shown in its context; highest band first."""
    import torch

    flat = acts.reshape(-1)                                                                # [N * T]
    idx = (flat > 0).nonzero().squeeze(1)                                                  # [M]
    if len(idx) == 0:
        return []
    vals = flat[idx]                                                                       # [M]
    qs = torch.linspace(0, 1, n_bands + 1)                                                 # [n_bands + 1]
    edges = torch.quantile(vals.double(), qs.double()).float()                             # [n_bands + 1]
    band = (torch.bucketize(vals, edges[1:-1], right=True)).clamp(max=n_bands - 1)         # [M] band of each value
    g = torch.Generator().manual_seed(seed)
    T = acts.shape[1]
    out = []
    for b in reversed(range(n_bands)):
        members = idx[band == b]                                                           # [m_b]
        pick = members[torch.randperm(len(members), generator=g)[:per_band]]
        pick = pick[flat[pick].argsort(descending=True)]
        out.append(Band(q_lo=float(qs[b]), q_hi=float(qs[b + 1]), act_lo=float(edges[b]), act_hi=float(edges[b + 1]),
                        n_tokens=len(members),
                        examples=[_context(tokens, acts, int(p) // T, int(p) % T, before, after, decode)
                                  for p in pick]))
    return out


def histogram(values: Any, bins: int, hi: float | None = None) -> Histogram:
    """Counts of values in `bins` equal bins over [min(0, values), hi or max]; the last bin is closed."""
    import torch

    v = values.double()
    if len(v) == 0:
        return Histogram(edges=[0.0, 1.0], counts=[0])
    lo = min(0.0, float(v.min()))
    hi = float(v.max()) if hi is None else hi
    if hi <= lo:
        hi = lo + 1.0
    counts, edges = torch.histogram(v, bins=bins, range=(lo, hi))
    return Histogram(edges=[float(e) for e in edges], counts=[int(c) for c in counts])


def label_scores(corpus: Any, tokens: Any, acts: Any, n: int) -> list[LabelScore]:
    """The planted labels (span labels and token categories) that `feature > 0` detects best, by F1."""
    import torch

    from claimgraph.experiments.features.select import detection_table

    labels = corpus.span_labels(tokens)                                                    # name -> [N, T]
    names = sorted(labels)
    y = torch.stack([labels[k].reshape(-1) for k in names], 1)                             # [N * T, L]
    t = detection_table(acts.reshape(-1, 1), y)                                            # [1, L] each
    rows = [LabelScore(label=name, f1=float(t.f1[0, j]), precision=float(t.precision[0, j]),
                       recall=float(t.recall[0, j]), auroc=float(t.auroc[0, j]), n_pos=int(t.n_pos[j]))
            for j, name in enumerate(names)]
    rows.sort(key=lambda r: (-r.f1, -r.auroc, r.label))
    return rows[:n]


def logit_table(model: Any, sae: Any, hook: str, feature: int, k: int, bins: int, *, vocab: Any = None,
                scale: float | None = None) -> LogitTable:
    """Top and bottom tokens of the feature's direct logit effects (per unit of activation; the final LayerNorm
    linearised at residual scale `scale`), and their histogram. With a synthetic `vocab` (a prefix of the
    model's ids), only its tokens are ranked and named by it: they are the only ids the data has."""
    from claimgraph.experiments.features.logits import feature_logit_effects, top_tokens

    effects = feature_logit_effects(model, sae, hook, [feature], scale=scale)[0].float()  # [d_vocab]
    decode = model.decode
    if vocab is not None:
        assert len(vocab) <= effects.shape[0], f"vocabulary of {len(vocab)} tokens, model of {effects.shape[0]}"
        effects, decode = effects[:len(vocab)], vocab.decode                               # [d_corpus]
    k = min(k, effects.shape[0])
    tt = top_tokens(effects, decode, k)
    cats = {}
    if vocab is not None:
        for end, largest in (("top", True), ("bottom", False)):
            cats[end] = [vocab.category_of(int(i)) for i in effects.topk(k, largest=largest).indices]

    def entries(end: str) -> list[LogitEntry]:
        return [LogitEntry(token=t, value=float(v), category=cats[end][i] if cats else None)
                for i, (t, v) in enumerate(tt[end])]

    return LogitTable(top=entries("top"), bottom=entries("bottom"),
                      histogram=histogram(effects, bins, hi=float(effects.max())))


def feature_page(run_dir: Path, feature: int, *, seed: int | None = None, condition: str | None = None,
                 related: Iterable[Path] = (), config: PageConfig | None = None, device: str = "cpu",
                 out_dir: Path | None = None, write: bool = True) -> FeaturePage:
    """The page of latent `feature` of the SAE that run `run_dir` names (for `seed`, and `condition` for the sae
    job), computed on a held-out corpus sample. With `write`, the HTML and PNGs go to `out_dir` (default
    `<run_dir>/features/`) and `page.html` holds the HTML's path."""
    from claimgraph.experiments.context import resolve_device
    from claimgraph.experiments.features.logits import residual_scale
    from claimgraph.experiments.sae import load_sae
    from claimgraph.experiments.substrate.load import check_fit, corpus_for, load_model, shuffled_copy

    cfg_page = config or PageConfig()
    run_dir = Path(run_dir)
    if isinstance(feature, bool) or not hasattr(feature, "__index__"):
        raise InvalidInput(f"feature must be an integer latent index, got {feature!r}")
    feature = operator.index(feature)
    cfg, result = load_run(run_dir)
    ref = locate_sae(run_dir, result, seed=seed, condition=condition)
    given = next(r.details.get("sae_source") for r in result.per_seed if r.seed == ref.seed)
    if isinstance(given, dict):  # an SAE given by path: the page must show the SAE the run measured
        from claimgraph.experiments.sae.folder import read_sae_folder

        now = read_sae_folder(ref.folder).weights_sha256
        if now != given.get("weights_sha256"):
            raise InvalidInput(f"the SAE at {ref.folder} changed since run {cfg.run_id} used it (weights sha256 "
                               f"{str(given.get('weights_sha256'))[:12]} then, {now[:12]} now); its page would "
                               "describe another SAE")
    dev = resolve_device(device)
    sae = load_sae(ref.folder, device=dev)
    if not 0 <= feature < sae.d_sae:
        raise InvalidInput(f"feature {feature} is out of range: the SAE of run {cfg.run_id} has {sae.d_sae} latents "
                           f"(0..{sae.d_sae - 1})")
    model_ref, data_ref = cfg.spec.model, cfg.spec.data
    if model_ref is None:
        raise InvalidInput(f"run {cfg.run_id} names no model; feature pages need the model its SAE was trained on")
    hook = sae.cfg.hook_name or result.per_seed[0].details.get("hook")
    if not hook:
        raise InvalidDocument("the SAE config names no hook", path=str(ref.folder / "cfg.json"), field="hook_name")
    model = load_model(model_ref, device=dev, progress=False)
    if ref.condition == "shuffled":  # the sae job's control SAE was trained on this weight-shuffled copy
        model = shuffled_copy(model, ref.seed)
    corpus, data_ref = corpus_for(model_ref, data_ref)
    check_fit(model, model_ref, corpus, data_ref, hook=hook, hook_from=f"the SAE at {ref.folder}")

    n_seqs = max(1, math.ceil(cfg_page.n_tokens / corpus.seq_len))
    tokens = corpus.sample(n_seqs, cfg_page.sample_seed)                                   # [N, T]
    acts = feature_acts(model, sae, tokens, hook, feature, batch_size=cfg_page.batch_size)  # [N, T]
    assert acts.shape == tokens.shape, f"activations {tuple(acts.shape)} vs tokens {tuple(tokens.shape)}"
    nonzero = acts[acts > 0]                                                               # [M]
    vocab = getattr(corpus, "vocab", None)
    decode = vocab.decode if vocab is not None else model.decode  # the corpus says what a synthetic id means
    page = FeaturePage(
        feature=feature, run_id=cfg.run_id, run_dir=str(run_dir), kind=cfg.spec.kind, seed=ref.seed,
        condition=ref.condition, model=model_ref, hook=hook, sae_folder=str(ref.folder),
        sae_key=ref.key or _provisioned_key(ref.folder),
        sae_sha256=given.get("weights_sha256") if isinstance(given, dict) else None, d_sae=sae.d_sae, architecture=sae.cfg.architecture,
        sample=SampleInfo(data=data_ref or f"synthetic:{corpus.name}", seed=cfg_page.sample_seed, n_seqs=n_seqs,
                          seq_len=corpus.seq_len),
        density=float((acts > 0).double().mean()), n_firing=len(nonzero),
        max_act=float(acts.max()), mean_act=float(nonzero.double().mean()) if len(nonzero) else 0.0,
        histogram=histogram(nonzero, cfg_page.bins),
        top_contexts=top_contexts(tokens, acts, cfg_page.top_k, before=cfg_page.before, after=cfg_page.after,
                                  decode=decode),
        bands=quantile_bands(tokens, acts, cfg_page.n_bands, cfg_page.per_band, seed=cfg_page.sample_seed,
                             before=cfg_page.before, after=cfg_page.after, decode=decode),
        logits=logit_table(model, sae, hook, feature, cfg_page.n_logits, cfg_page.bins, vocab=vocab,
                           scale=residual_scale(model, tokens, batch_size=cfg_page.batch_size)),
        labels=label_scores(corpus, tokens, acts, cfg_page.n_labels) if hasattr(corpus, "span_labels") else [],
        related=related_runs([run_dir, *related], ref, feature),
    )
    if write:
        path = write_feature_html(page, Path(out_dir) if out_dir else run_dir / "features")
        page.html = str(path)
    return page


def page_for_run(store: Store, run: str | Path, feature: int, *, seed: int | None = None,
                 condition: str | None = None, device: str = "cpu", config: PageConfig | None = None) -> FeaturePage:
    """`claimgraph feature RUN FEATURE`: the page of `feature` for a run id (or run folder), with the store's
    completed feature-job runs as related candidates; the store is released before the page is computed."""
    run_dir = resolve_run(store, run)
    candidates = related_run_dirs(store)
    store.release()
    return feature_page(run_dir, feature, seed=seed, condition=condition, related=candidates, config=config,
                        device=device)


def _provisioned_key(folder: Path) -> str | None:
    prov = _read_json(folder / "provenance.json")
    return str(prov["key"]) if prov and prov.get("key") else None


def page_name(page: FeaturePage) -> str:
    """File stem of a page: `feature-<n>`, with the condition and seed when the run has several SAEs."""
    stem = f"feature-{page.feature}"
    if page.condition not in (None, "trained") or page.seed != _first_seed(page.run_dir):
        stem += f"-{page.condition or 'sae'}-seed{page.seed}"
    return stem


def _first_seed(run_dir: str) -> int | None:
    res = _read_json(Path(run_dir) / "result.json")
    seeds = [r.get("seed") for r in (res or {}).get("per_seed", [])]
    return seeds[0] if seeds else None


def write_feature_html(page: FeaturePage, out_dir: Path) -> Path:
    """Write the page's HTML and its PNGs (activation histogram, logit-effect histogram) to `out_dir`;
    returns the HTML's path and records the PNGs (relative names) in `page.images`."""
    from .html import render_html
    from .plots import plot_histogram

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = page_name(page)
    acts_png = out_dir / f"{stem}-acts.png"
    plot_histogram(acts_png, page.histogram, title=f"feature {page.feature}: non-zero activations",
                   xlabel="activation", subtitle=f"density {page.density:.3%} of {page.sample.n_tokens} tokens",
                   color="#e8710a")
    logits_png = out_dir / f"{stem}-logits.png"
    plot_histogram(logits_png, page.logits.histogram, title=f"feature {page.feature}: direct logit effects",
                   xlabel="logit effect", subtitle="every token of the vocabulary", color="#1a73e8", signed=True)
    page.images = {"acts": acts_png.name, "logits": logits_png.name}
    path = out_dir / f"{stem}.html"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(render_html(page, out_dir), encoding="utf-8")
    tmp.replace(path)
    return path
