"""Mode "precaching" of `ablation`: the pre-caching score of SAE latents grouped by what they detect (on real text,
code vs prose), each against random directions of the same norm at the same positions.

Pre-caching score of a latent (Rofin, Naghiyev and Hahn's intervention score, as `kl_horizon` and
gradient_decomposition/intervention.py compute it): zero the latent at one position t where it fires (SAE spliced
in, error term kept: x_t - f_j(x_t) W_dec[j]) and take KL(clean || ablated) of the distributions of tokens
t+1..t+H; with each KL averaged over the latent's positions first,

    score_j = sum_{d=2..H} KL_{t+d} / KL_{t+1}.

A latent that matters only for its own next token scores near 0; one that later positions read scores high.
The null: at each of the same positions, a random direction u of the same norm as the latent's contribution
(x_t + ||f_j W_dec[j]|| u / ||u||, u ~ N(0, I), a fresh draw per position) gives null_j the same way. The null
holds fixed what the score would show for any perturbation of that size at those positions (a position after
which the next token is already certain makes every perturbation look pre-caching), so

    excess_j = log10 score_j - log10 null_j

is what the latent's direction adds. Per group g (latents that detect label g on the selection tokens: firing on
at least `group_min_freq` of them, with a precision for g of at least `group_min_lift` times g's base rate; of
those the `group_size` with the highest F1), mean_excess_g; the registered metric `code_minus_prose_log_excess`
is the first group's minus the
second's (named `<g1>_minus_<g2>_log_excess` for other groups).

The forward passes: per batch of measurement windows, one clean pass; then every perturbed row (latent zeroed,
random direction) with position t is run only over tokens t..t+H-1: a Hugging Face model reuses the clean pass's
key-value cache of positions < t (the perturbation cannot change them), a toy model re-runs the prefix.
"""
from __future__ import annotations

import math
import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from claimgraph.experiments.sae.base import SparseAutoencoder
from claimgraph.experiments.substrate.hf import cached_forward
from claimgraph.experiments.substrate.hooks import HookedModel
from claimgraph.graph.errors import InvalidInput

# ---------------------------------------------------------------------------------------------- which latents

def group_latents(acts: Tensor, labels: dict[str, Tensor], groups: list[str], *, size: int, min_lift: float,
                  min_freq: float) -> tuple[dict[str, list[int]], dict[str, Any]]:
    """Latents (columns of acts [M, d_sae]) that detect each label of `groups` (labels[name]: bool [M]): among
    those firing on >= min_freq of the M tokens whose precision for the label (share of their firings on it) is
    at least min_lift times the label's base rate, the `size` with the highest F1. The lift, not a fixed
    precision, makes labels of different base rates comparable (code is 32% of the selection tokens of
    text:mixed, prose 14%). A latent that qualifies for two labels goes to the one with the higher lift.
    Returns the groups and, per group, the number qualifying and each chosen latent's scores."""
    missing = [g for g in groups if g not in labels]
    if missing:
        raise InvalidInput(f"param groups: unknown label(s) {', '.join(missing)}; the corpus labels: {', '.join(labels)}")
    fires = (acts > 0).float()                                                         # [M, d]
    freq = fires.mean(0)                                                               # [d]
    y = torch.stack([labels[g].reshape(-1).float() for g in groups], 1)                # [M, G]
    tp = fires.t() @ y                                                                 # [d, G]
    prec = tp / fires.sum(0).clamp_min(1)[:, None]                                     # [d, G]
    rec = tp / y.sum(0).clamp_min(1)                                                   # [d, G]
    f1 = 2 * prec * rec / (prec + rec).clamp_min(1e-12)                                # [d, G]
    lift = prec / y.mean(0).clamp_min(1e-12)                                           # [d, G]
    ok = (lift >= min_lift) & (freq >= min_freq)[:, None]                              # [d, G]
    best = lift.masked_fill(~ok, -1.0).argmax(1)                                       # [d]
    out: dict[str, list[int]] = {}
    table: dict[str, Any] = {}
    for gi, g in enumerate(groups):
        mine = ok[:, gi] & (best == gi)
        cand = mine.nonzero().reshape(-1)
        cand = cand[f1[cand, gi].argsort(descending=True)][:size]
        out[g] = [int(j) for j in cand]
        table[g] = {"qualifying": int(mine.sum()), "base_rate": float(y[:, gi].mean()),
                    "latents": [{"latent": int(j), "f1": float(f1[j, gi]), "precision": float(prec[j, gi]),
                                 "lift": float(lift[j, gi]), "freq": float(freq[j])} for j in cand]}
    return out, table


# ---------------------------------------------------------------------------------------------- the forward passes

def _add_at(deltas: Tensor, positions: Tensor):
    """Hook for a batch of rows: row r's activation at positions[r] gets deltas[r] added [r, d_in]."""
    def fn(act: Tensor, name: str) -> Tensor:
        x = act.reshape(*act.shape[:2], -1)                                            # [r, T, d_in]
        ar = torch.arange(x.shape[0], device=x.device)
        out = x.clone()
        out[ar, positions.to(x.device)] += deltas.to(x.device, x.dtype)
        return out.reshape(act.shape)
    return fn


def perturbed_kl(model: HookedModel, hook: str, windows: Tensor, pairs: Tensor, make_deltas, *, horizon: int,
                 n_vocab: int | None = None, batch_size: int = 8, row_batch: int = 32,
                 use_cache: bool = True) -> Tensor:
    """KL(clean || perturbed) [P, K, horizon] of tokens t+1..t+horizon when the activation at `hook` of window w,
    position t (pairs [P, 2] of (w, t) into windows [n, L], t + horizon <= L) gets each of K perturbations added
    at t only (`perturbed_effects`)."""
    return perturbed_effects(model, hook, windows, pairs, make_deltas, horizon=horizon, n_vocab=n_vocab,
                             batch_size=batch_size, row_batch=row_batch, use_cache=use_cache)["kl"]


@torch.no_grad()
def perturbed_effects(model: HookedModel, hook: str, windows: Tensor, pairs: Tensor, make_deltas, *, horizon: int,
                      n_vocab: int | None = None, category: Tensor | None = None, batch_size: int = 8,
                      row_batch: int = 32, use_cache: bool = True) -> dict[str, Tensor]:
    """What perturbing the activation at `hook` of window w, position t (pairs [P, 2] of (w, t) into windows
    [n, L], t + horizon <= L) does, for each of K perturbations added at t only:

    - `kl` [P, K, horizon]: KL(clean || perturbed) of tokens t+1..t+horizon;
    - `cat_drop` [P, K] (with `category`, bool [n_vocab]): log P_clean(C) - log P_perturbed(C) of token t+1,
      P(C) the total probability of the category's tokens.

    `make_deltas(x [p, d_in], rows [p])` returns the perturbations [p, K, d_in] from the clean activations x at
    the p pairs (rows: their indices into `pairs`). `n_vocab`: compare only the first that many token ids.
    Clean passes take `batch_size` windows at a time, perturbed ones `row_batch` rows. A Hugging Face model runs
    a perturbed row over positions t..t+horizon-1 only, on the clean pass's key-value cache of positions < t
    (rows with different t share a pass: each row's cache is left-padded to the longest and the padding masked);
    use_cache=False, or a toy model: the whole prefix again."""
    H = horizon
    n, L = windows.shape
    assert bool((pairs[:, 1] + H <= L).all()), "every pair needs horizon positions from t on"
    hf = getattr(model, "hf", None) if use_cache else None
    cat = None if category is None else category.bool().to(model.device)                # [V]
    out: Tensor | None = None
    drop: Tensor | None = None
    for start in range(0, n, batch_size):
        sel = ((pairs[:, 0] >= start) & (pairs[:, 0] < start + batch_size)).nonzero().reshape(-1)  # [p]
        if len(sel) == 0:
            continue
        toks = windows[start:start + batch_size].to(model.device)                      # [b, L]
        box: list[Tensor] = []

        def read(act: Tensor, name: str, box: list[Tensor] = box) -> None:
            box.append(act.reshape(*act.shape[:2], -1).detach())                        # [b, L, d_in]

        with model.hooks([(hook, read)]), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            if hf is not None:
                logits, past = cached_forward(hf, toks)
                kv = [(layer.keys, layer.values) for layer in past.layers]
                clean = logits.float()                                                 # [b, L, V]
            else:
                clean = model(toks)                                                    # [b, L, V]
        V = n_vocab or clean.shape[-1]
        lp_clean = F.log_softmax(clean, -1)[..., :V]                                   # [b, L, V]
        w, t = pairs[sel, 0] - start, pairs[sel, 1]                                    # [p], [p]
        deltas = make_deltas(box[0][w.to(box[0].device), t.to(box[0].device)], sel)    # [p, K, d_in]
        K = deltas.shape[1]
        if out is None:
            out = torch.zeros(len(pairs), K, H, dtype=torch.float64)
            drop = torch.zeros(len(pairs), K, dtype=torch.float64)
        rw, rt = w.repeat_interleave(K), t.repeat_interleave(K)                        # [p * K] window, position
        dl = deltas.reshape(-1, deltas.shape[-1])                                      # [p * K, d_in]
        kl = torch.empty(len(rw), H, dtype=torch.float64)                              # [p * K, H]
        dr = torch.zeros(len(rw), dtype=torch.float64)                                 # [p * K]
        for c in range(0, len(rw), row_batch):
            cw, ct, cd = rw[c:c + row_batch], rt[c:c + row_batch], dl[c:c + row_batch]
            pos = (ct[:, None] + torch.arange(H)).to(toks.device)                      # [r, H] positions t..t+H-1
            if hf is not None:
                logits = _cached_rows(model, hf, hook, kv, toks, cw, ct, cd, H)         # [r, H, V]
            else:  # the whole prefix, perturbed at each row's own t
                end = int(ct.max()) + H
                full = model.run_with_hooks(toks[cw, :end], [(hook, _add_at(cd, ct))])  # [r, end, V]
                logits = full.gather(1, pos[..., None].expand(-1, -1, full.shape[-1]))  # [r, H, V]
            lp = F.log_softmax(logits.float(), -1)[..., :V]                            # [r, H, V]
            lc = lp_clean[cw.to(toks.device)[:, None], pos]                            # [r, H, V]
            kl[c:c + len(cw)] = (lc.exp() * (lc - lp)).sum(-1).clamp_min(0).double().cpu()
            if cat is not None:  # the token after t: the category's log-mass, clean minus perturbed
                dr[c:c + len(cw)] = (lc[:, 0][:, cat].logsumexp(-1) - lp[:, 0][:, cat].logsumexp(-1)).double().cpu()
        out[sel] = kl.reshape(len(sel), K, H)
        assert drop is not None
        drop[sel] = dr.reshape(len(sel), K)
    assert out is not None and drop is not None, "no pair to perturb"
    return {"kl": out, **({"cat_drop": drop} if category is not None else {})}


def _cached_rows(model: HookedModel, hf: Any, hook: str, kv: list[tuple[Tensor, Tensor]], toks: Tensor, rw: Tensor,
                 rt: Tensor, deltas: Tensor, H: int) -> Tensor:
    """Logits [r, H, V] of rows r (window rw[r] of toks, perturbed by deltas[r] at position rt[r]) over positions
    rt..rt+H-1, each on its window's clean cache kv (per layer keys and values [b, heads, L, d_head]) of positions
    < rt, left-padded to P = max rt with the padding masked out; positions rt.. go to the rotary embedding."""
    from transformers import DynamicCache

    dev = toks.device
    r, P = len(rw), int(rt.max())
    rw, rt = rw.to(dev), rt.to(dev)
    src = torch.arange(P, device=dev)[None, :] - (P - rt[:, None])                     # [r, P] clean position
    valid = src >= 0                                                                   # [r, P] not padding

    def pad(x: Tensor) -> Tensor:
        g = x[rw]                                                                      # [r, h, L, dh]
        idx = src.clamp_min(0)[:, None, :, None].expand(-1, g.shape[1], -1, g.shape[3])  # [r, h, P, dh]
        return g.gather(2, idx) * valid[:, None, :, None].to(g.dtype)                  # [r, h, P, dh]

    cache = DynamicCache(ddp_cache_data=[(pad(k), pad(v)) for k, v in kv])
    pos = rt[:, None] + torch.arange(H, device=dev)                                    # [r, H]
    mask = torch.cat([valid, torch.ones(r, H, dtype=torch.bool, device=dev)], 1).long()  # [r, P + H]
    feed = toks[rw].gather(1, pos)                                                     # [r, H]
    with model.hooks([(hook, _add_at(deltas, torch.zeros(r, dtype=torch.long)))]), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return cached_forward(hf, feed, cache, attention_mask=mask, position_ids=pos)[0].float()  # [r, H, V]


def draw_pairs(fires: Tensor, latents: list[int], *, pairs: int, horizon: int, t_min: int, seed: int,
               keep: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Up to `pairs` (window, t) positions per latent where it fires (fires: bool [n, L, k], column j for
    latents[j]), t_min <= t <= L - horizon, `keep` [n, L] (not a separator), drawn at random (seed). Returns the
    pairs [P, 2] and the latent slot of each [P]."""
    n, L, _ = fires.shape
    ok = fires.clone()
    ok[:, :t_min] = False
    ok[:, L - horizon + 1:] = False
    if keep is not None:
        ok &= keep[..., None]
    g = torch.Generator().manual_seed(int(seed) + 65537)
    chosen, slot = [], []
    for j in range(len(latents)):  # one draw per latent (a few dozen), not a loop over examples
        where = ok[..., j].nonzero()                                                   # [Q, 2]
        where = where[torch.randperm(len(where), generator=g)[:pairs]]
        chosen.append(where)
        slot.append(torch.full((len(where),), j, dtype=torch.long))
    return torch.cat(chosen), torch.cat(slot)


def precaching_kl(model: HookedModel, sae: SparseAutoencoder, hook: str, latents: list[int], windows: Tensor, *,
                  pairs: int, horizon: int, t_min: int, seed: int, separator: int | None = None,
                  n_vocab: int | None = None, batch_size: int = 8, use_cache: bool = True) -> dict[str, Tensor]:
    """For each latent of `latents`: KL [k, 2, horizon] of tokens t+1..t+horizon averaged over up to `pairs`
    positions t where it fires in windows [n, L] (column 0: the latent zeroed at t; column 1: a random
    direction of the same norm added at t instead), and `n_pairs` [k] (0: it never fired in range; nan KL)."""
    from claimgraph.experiments.features.select import latent_acts

    n, L = windows.shape
    acts = latent_acts(model, sae, windows, hook, batch_size=batch_size, latents=latents).reshape(n, L, -1)
    keep = None if separator is None else windows != separator
    where, slot = draw_pairs(acts > 0, latents, pairs=pairs, horizon=horizon, t_min=t_min, seed=seed, keep=keep)
    k = len(latents)
    if len(where) == 0:
        return {"kl": torch.full((k, 2, horizon), float("nan")), "n_pairs": torch.zeros(k, dtype=torch.long)}
    W_dec = sae.W_dec.detach()
    lat = torch.as_tensor(latents, dtype=torch.long)[slot]                             # [P]
    g = torch.Generator().manual_seed(int(seed) + 92821)
    u = torch.randn(len(where), W_dec.shape[1], generator=g)                          # [P, d_in] one draw per pair
    u = u / u.norm(dim=1, keepdim=True)

    def make(x: Tensor, rows: Tensor) -> Tensor:
        li = lat[rows].to(W_dec.device)                                                # [p]
        f = sae.encode(x.to(W_dec.dtype))                                              # [p, d_sae]
        d_lat = -f.gather(1, li[:, None]) * W_dec[li]                                  # [p, d_in] zero the latent
        d_rand = d_lat.norm(dim=1, keepdim=True) * u[rows].to(W_dec.device)           # [p, d_in] same norm
        return torch.stack([d_lat, d_rand], 1)                                         # [p, 2, d_in]

    kl = perturbed_kl(model, hook, windows, where, make, horizon=horizon, n_vocab=n_vocab, batch_size=batch_size,
                      use_cache=use_cache)                                             # [P, 2, H]
    total = torch.zeros(k, 2, horizon, dtype=torch.float64).index_add_(0, slot, kl)
    count = torch.zeros(k, dtype=torch.float64).index_add_(0, slot, torch.ones(len(slot), dtype=torch.float64))
    mean = (total / count.clamp_min(1)[:, None, None]).masked_fill((count == 0)[:, None, None], float("nan"))
    return {"kl": mean.float(), "n_pairs": count.long()}


# ---------------------------------------------------------------------------------------------- the metrics

def scores(kl: Tensor) -> Tensor:
    """Pre-caching scores [...] from KL [..., H] averaged over positions: sum_{d>=2} KL_d / KL_1 (nan where KL_1
    is 0 or the KL is nan)."""
    first = kl[..., 0]
    return torch.where(first > 0, kl[..., 1:].sum(-1) / first.clamp_min(1e-30), torch.full_like(first, math.nan))


def precaching_metrics(kl: Tensor, groups: dict[str, list[int]], order: list[str]) -> dict[str, float]:
    """Metrics from KL [k, 2, H] of the latents of `groups` concatenated in `order` (rows in that order)."""
    s = scores(kl.double())                                                            # [k, 2]
    excess = s[:, 0].log10() - s[:, 1].log10()                                         # [k]
    m: dict[str, float] = {}
    start = 0
    for g in order:
        rows = slice(start, start + len(groups[g]))
        start += len(groups[g])
        e, lat, null = excess[rows], s[rows, 0], s[rows, 1]
        fin = torch.isfinite(e)
        m[f"{g}_log_excess"] = float(e[fin].mean()) if bool(fin.any()) else math.nan
        m[f"{g}_log_excess_sd"] = float(e[fin].std()) if int(fin.sum()) > 1 else math.nan
        m[f"{g}_log_score"] = float(lat[fin].log10().mean()) if bool(fin.any()) else math.nan
        m[f"{g}_null_log_score"] = float(null[fin].log10().mean()) if bool(fin.any()) else math.nan
        m[f"{g}_above_null_share"] = float((e[fin] > 0).double().mean()) if bool(fin.any()) else math.nan
        m[f"{g}_kl_next"] = float(kl[rows, 0, 0].double().nanmean())
        m[f"{g}_latents"] = float(fin.sum())
    a, b = order[0], order[1]
    m[f"{a}_minus_{b}_log_excess"] = m[f"{a}_log_excess"] - m[f"{b}_log_excess"]
    m[f"{a}_minus_{b}_log_score"] = m[f"{a}_log_score"] - m[f"{b}_log_score"]
    m[f"{a}_minus_{b}_spread"] = m[f"{a}_log_excess_sd"] - m[f"{b}_log_excess_sd"]
    fin = torch.isfinite(excess)
    m["above_null_share"] = float((excess[fin] > 0).double().mean()) if bool(fin.any()) else math.nan
    m["log_excess_median"] = float(excess[fin].median()) if bool(fin.any()) else math.nan
    return m


# ---------------------------------------------------------------------------------------------- one seed

def measure_precaching(ctx: Any, params: Any, seed: int, t: Any) -> Any:
    """One seed of mode "precaching" (ctx RunContext, params AblationParams, t features.target.Target): group the
    SAE's latents by the label they detect on the selection tokens, score each group's latents and their
    same-norm random directions at firing positions of the measurement windows, and plot."""
    from claimgraph.experiments.features.target import SELECT_OFFSET, selection_acts
    from claimgraph.experiments.job import SeedResult
    from claimgraph.experiments.substrate.text import is_text

    acts, labels, _ = selection_acts(t.model, t.sae, t.corpus, t.hook, seed=seed + SELECT_OFFSET,
                                     n_tokens=params.select_tokens, batch_size=params.model_batch_size)
    groups, table = group_latents(acts, labels, params.groups, size=params.group_size,
                                  min_lift=params.group_min_lift, min_freq=params.group_min_freq)
    short = [f"{g} ({len(groups[g])})" for g in params.groups if len(groups[g]) < 3]
    if short:
        raise InvalidInput(f"fewer than 3 latents detect {', '.join(short)} with precision >= "
                           f"{params.group_min_lift} x the base rate and frequency >= {params.group_min_freq} on "
                           f"{len(acts)} selection tokens; lower group_min_lift or group_min_freq, or use a wider SAE")
    order = list(params.groups)
    latents = [j for g in order for j in groups[g]]
    L = min(params.null_len, t.corpus.seq_len)
    windows = measurement_windows(t, params.null_windows, seed)[:, :L]                 # [n, L]
    sep = int(t.corpus.manifest["separator_id"]) if is_text(t.corpus) else None
    ctx.log(f"pre-caching scores of {', '.join(f'{len(groups[g])} {g}' for g in order)} latents (of "
            f"{', '.join(str(table[g]['qualifying']) for g in order)} qualifying) at up to {params.null_pairs} firing "
            f"positions each in {len(windows)} windows of {L} tokens, each against a same-norm random direction")
    res = precaching_kl(t.model, t.sae, t.hook, latents, windows, pairs=params.null_pairs, horizon=params.horizon,
                        t_min=params.null_t_min, seed=seed, separator=sep, n_vocab=t.d_corpus,
                        batch_size=min(params.model_batch_size, 8))
    metrics = precaching_metrics(res["kl"], groups, order)
    metrics["pairs_per_latent"] = float(res["n_pairs"].double().mean())
    a, b = order[0], order[1]
    ctx.log_metrics(0, metrics, condition="precaching")
    ctx.log(f"log10 excess over the random-direction null: {a} {metrics[f'{a}_log_excess']:.3f}, {b} "
            f"{metrics[f'{b}_log_excess']:.3f} ({a} - {b}: {metrics[f'{a}_minus_{b}_log_excess']:.3f}); raw log10 "
            f"scores {metrics[f'{a}_log_score']:.3f} vs {metrics[f'{b}_log_score']:.3f}")
    s = scores(res["kl"].double())                                                     # [k, 2]
    group_of = [g for g in order for _ in groups[g]]
    per_latent = [{"latent": j, "group": g, "n_pairs": int(n), "score": float(s[i, 0]), "null_score": float(s[i, 1]),
                   "kl_by_offset": [float(x) for x in res["kl"][i, 0]],
                   "null_kl_by_offset": [float(x) for x in res["kl"][i, 1]]}
                  for i, (j, g, n) in enumerate(zip(latents, group_of, res["n_pairs"].tolist()))]
    details = {"sae_folder": str(t.sae_folder), "sae_key": t.sae_key, "hook": t.hook, "mode": "precaching",
               "groups": table, "latents": per_latent, "windows": len(windows), "window_len": L,
               "horizon": params.horizon}
    plot = ctx.artifact(f"seed{seed}/precaching.png")
    plot_precaching(plot, per_latent, order, metrics, t.hook)
    details["plot"] = str(plot.relative_to(ctx.artifacts_dir))
    return SeedResult(seed=seed, metrics=metrics, details=details)


def measurement_windows(t: Any, n: int, seed: int) -> Tensor:
    """n windows [n, T] to score on. On a text corpus each seed reads its own slice of the eval split after the
    selection windows, [n_select + seed * n, n_select + (seed + 1) * n), so that the seeds' interval covers the
    text sample as well as the SAE; a synthetic corpus samples them with the seed (Target.measure_windows)."""
    from claimgraph.experiments.substrate.text import is_text

    if not is_text(t.corpus):
        return t.measure_windows(n, seed)
    start = t.n_select_windows + seed * n
    have = t.corpus.n_windows("eval")
    if start + n > have:
        raise InvalidInput(f"seed {seed}: {t.corpus.ref} has {have} eval windows; seed {seed} would read windows "
                           f"{start}..{start + n - 1} (each seed reads its own {n} after the {t.n_select_windows} "
                           "selection windows); use lower seeds or fewer null_windows")
    return t.corpus.window_slice("eval", start, start + n)


def plot_precaching(path: Any, per_latent: list[dict[str, Any]], order: list[str], metrics: dict[str, float],
                    hook: str) -> None:
    """Per group: each latent's log10 pre-caching score against its random-direction null's, and the mean KL by
    offset of the latents and of their nulls."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 3.8), layout="constrained")
    ax_s, ax_kl = fig.subplots(1, 2)
    colors = ["tab:red", "tab:blue", "tab:green", "tab:purple"]
    H = len(per_latent[0]["kl_by_offset"]) if per_latent else 0
    for gi, g in enumerate(order):
        rows = [r for r in per_latent if r["group"] == g and r["score"] > 0 and r["null_score"] > 0]
        c = colors[gi % len(colors)]
        ax_s.scatter([math.log10(r["null_score"]) for r in rows], [math.log10(r["score"]) for r in rows], color=c,
                     label=f"{g}: excess {metrics.get(f'{g}_log_excess', math.nan):.2f}", edgecolor="k", s=28)
        if rows:
            kl = torch.tensor([r["kl_by_offset"] for r in rows]).nanmean(0)
            null = torch.tensor([r["null_kl_by_offset"] for r in rows]).nanmean(0)
            ax_kl.plot(range(1, H + 1), kl.tolist(), "o-", color=c, label=f"{g} latents zeroed")
            ax_kl.plot(range(1, H + 1), null.tolist(), "o--", color=c, alpha=0.5, label=f"{g}: same-norm random")
    lo, hi = ax_s.get_xlim()
    ax_s.plot([lo, hi], [lo, hi], color="k", lw=0.8)
    ax_s.set(xlabel="log10 pre-caching score, random direction", ylabel="log10 pre-caching score, latent zeroed",
             title="each latent against its null (diagonal: no excess)")
    ax_s.legend(fontsize=8)
    ax_kl.set_yscale("log")
    ax_kl.set(xlabel="token t+d (perturbed at position t only)", ylabel="mean KL(clean || perturbed)",
              title="effect over the next tokens")
    ax_kl.legend(fontsize=7)
    fig.suptitle(f"{hook}: pre-caching scores of SAE latents by what they detect")
    fig.savefig(path, dpi=110)
