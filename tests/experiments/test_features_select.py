"""Detection scores against independent computations, and the caches of provisioned SAEs and of latent scores."""
from __future__ import annotations

import os
import time

import torch
from sklearn.metrics import f1_score, roc_auc_score

from claimgraph.experiments.features.select import detection_scores, positive_rank_sums


def test_scores_match_sklearn_with_ties():
    g = torch.Generator().manual_seed(0)
    m, d = 3000, 7
    labels = torch.rand(m, generator=g) < 0.2
    acts = torch.relu(torch.randn(m, d, generator=g))  # half the entries exactly 0: heavy ties
    acts[:, 0] += 2.0 * labels  # latent 0 detects the label
    acts[:, 1] = torch.round(acts[:, 1] * 2) / 2  # more ties
    acts[:, 2] = 0.0  # never fires
    det = detection_scores(acts, labels, chunk=3)
    for j in range(d):
        fires = (acts[:, j] > 0).numpy()
        assert abs(det.f1[j].item() - f1_score(labels.numpy(), fires, zero_division=0)) < 1e-6
        assert abs(det.auroc[j].item() - roc_auc_score(labels.numpy(), acts[:, j].numpy())) < 1e-5
    assert det.best("f1") == 0 and det.best("auroc") == 0
    assert det.auroc[2].item() == 0.5 and det.f1[2].item() == 0.0
    assert det.n_pos == int(labels.sum()) and det.n == m


def _rank_sums_by_sorting(acts: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The positives' average-rank sums from one full sort per latent (the definition, ties averaged)."""
    out = torch.empty(acts.shape[1], y.shape[1], dtype=torch.float64)
    for j in range(acts.shape[1]):
        col = acts[:, j]
        ordered = col.sort().values
        mid = (torch.searchsorted(ordered, col, right=False) + torch.searchsorted(ordered, col, right=True) + 1) / 2
        out[j] = mid.double() @ y.double()
    return out


def test_rank_sums_equal_the_full_sort_bit_for_bit():
    # the sparse path sorts only the nonzero values; the sums are exact, so they must equal the full sort's
    # exactly, with zeros, negative values, -0.0, heavy ties, all-zero latents and several labels
    g = torch.Generator().manual_seed(1)
    for trial in range(24):
        m, d, c = int(torch.randint(1, 900, (1,), generator=g)), int(torch.randint(1, 20, (1,), generator=g)), 1 + trial % 5
        acts = torch.randn(m, d, generator=g)
        if trial % 4 == 0:
            acts = acts.relu() * (torch.rand(m, d, generator=g) < 0.1)  # sparse, as SAE codes are
        elif trial % 4 == 1:
            acts = torch.round(acts * 2) / 2  # ties among negative, zero and positive values
        elif trial % 4 == 2:
            acts[:, : d // 2] = 0.0  # latents that never fire
        else:
            acts[torch.rand(m, d, generator=g) < 0.5] = -0.0
        y = (torch.rand(m, c, generator=g) < 0.3).float()
        assert torch.equal(positive_rank_sums(acts, y), _rank_sums_by_sorting(acts, y)), trial
    nan = torch.tensor([[0.0, 1.0], [float("nan"), 0.0], [2.0, 0.0]])  # NaN: the dense path, same definition
    y = torch.tensor([[1.0], [0.0], [1.0]])
    assert torch.equal(positive_rank_sums(nan, y), _rank_sums_by_sorting(nan, y))


def test_degenerate_labels():
    acts = torch.rand(50, 3)
    det = detection_scores(acts, torch.zeros(50, dtype=torch.bool))
    assert torch.all(det.auroc == 0.5) and torch.all(det.f1 == 0)


def test_provisioned_sae_is_cached():
    from claimgraph.experiments.sae import provision
    from claimgraph.experiments.sae.provision import provision_sae
    from claimgraph.experiments.sae.recipe import SaeRecipe
    from claimgraph.experiments.substrate.load import load_model, model_corpus

    model = load_model("toy:tiny", progress=False)
    corpus = model_corpus("toy:tiny")
    recipe = SaeRecipe(steps=30, train_tokens=2048, batch_size=128)
    sae, folder = provision_sae(model, "toy:tiny", corpus, "synthetic:tiny", recipe, seed=3)
    assert (folder / "cfg.json").is_file() and (folder / "sae_weights.safetensors").is_file()
    mtime = (folder / "sae_weights.safetensors").stat().st_mtime_ns
    again, folder2 = provision_sae(model, "toy:tiny", corpus, "synthetic:tiny", recipe, seed=3)
    assert folder2 == folder and (folder / "sae_weights.safetensors").stat().st_mtime_ns == mtime
    assert torch.equal(again.W_dec.detach(), sae.W_dec.detach())
    other = provision.sae_key(model, "toy:tiny", "synthetic:tiny", recipe, seed=4)
    assert other != folder.name


def _same_stats(a, b) -> bool:
    da, db = a.detection, b.detection
    tensors = all(torch.equal(x, y) and x.dtype == y.dtype for x, y in (
        (da.f1, db.f1), (da.precision, db.precision), (da.recall, db.recall), (da.auroc, db.auroc),
        (a.freq, b.freq), (a.max_act, b.max_act)))
    opt = (a.open_recall is None) == (b.open_recall is None) and (
        a.open_recall is None or torch.equal(a.open_recall, b.open_recall))
    return tensors and opt and (a.label, da.n_pos, da.n, a.n_tokens, a.seed, a.open_share) == \
        (b.label, db.n_pos, db.n, b.n_tokens, b.seed, b.open_share)


def test_latent_stats_are_cached_bit_for_bit_under_a_key_of_what_decides_them():
    from claimgraph.experiments.features.select import Detection
    from claimgraph.experiments.features.target import LatentStats, cached_latent_stats, score_latents, stats_key
    from claimgraph.experiments.sae.provision import provision_sae
    from claimgraph.experiments.sae.recipe import SaeRecipe
    from claimgraph.experiments.substrate.load import load_model, model_corpus

    model = load_model("toy:tiny", progress=False)
    corpus = model_corpus("toy:tiny")
    recipe = SaeRecipe(steps=30, train_tokens=2048, batch_size=128)
    sae, folder = provision_sae(model, "toy:tiny", corpus, "synthetic:tiny", recipe, seed=3)
    args = dict(seed=5, n_tokens=2048, batch_size=64)

    def key(**change):
        kw = dict(sae_identity={"cache": folder.name}, label="base64_span", device="cpu", **args) | change
        return stats_key(model, kw.pop("sae_identity"), corpus, "synthetic:tiny", recipe.hook, kw.pop("label"), **kw)

    calls = []

    def compute():
        calls.append(1)
        return score_latents(model, sae, corpus, recipe.hook, "base64_span", **args)

    k = key()
    computed = score_latents(model, sae, corpus, recipe.hook, "base64_span", **args)
    first = cached_latent_stats(k, compute)
    assert calls == [1] and _same_stats(first, computed)

    def boom():
        raise AssertionError("computed again")

    assert _same_stats(cached_latent_stats(k, boom), computed)  # served from the cache, the same to the bit
    # everything that decides the scores is in the key
    others = {key(label="arabic_span"), key(seed=6), key(n_tokens=4096), key(batch_size=32), key(device="cuda"),
              key(sae_identity={"cache": "another-sae"})}
    assert k not in others and len(others) == 6
    # a model with no fingerprint (built in memory) is never cached
    bare = type(model).__new__(type(model))
    bare.__dict__.update({k2: v for k2, v in model.__dict__.items() if k2 not in ("cache_path", "provenance")})
    assert stats_key(bare, {"cache": folder.name}, corpus, "synthetic:tiny", recipe.hook, "base64_span",
                     device="cpu", **args) is None
    cached_latent_stats(None, compute)
    cached_latent_stats(None, compute)
    assert calls == [1, 1, 1]
    # a text corpus' fields (open share and recall) round-trip too
    d = 5
    text_stats = LatentStats(label="arabic", detection=Detection(f1=torch.rand(d), precision=torch.rand(d),
                                                                  recall=torch.rand(d), auroc=torch.rand(d),
                                                                  n_pos=7, n=90),
                             freq=torch.rand(d), max_act=torch.rand(d), n_tokens=90, seed=11, open_share=0.25,
                             open_recall=torch.rand(d))
    tkey = f"text-stats-{os.getpid()}-{time.time_ns()}"
    assert _same_stats(cached_latent_stats(tkey, lambda: text_stats), text_stats)
    assert _same_stats(cached_latent_stats(tkey, boom), text_stats)
