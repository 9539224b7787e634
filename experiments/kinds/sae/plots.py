"""The `sae` job's PNG: each live latent's top-token share (pooled over seeds) per condition, and the
single-token fraction per seed."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from claimgraph.experiments.job import SeedResult

COLORS = {"trained": "tab:blue", "shuffled": "tab:orange"}


def plot_single_token_share(path: Path, results: list[SeedResult], conds: Sequence[str], *, title: str) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4), layout="constrained")
    ax_hist, ax_seed = fig.subplots(1, 2)
    bins = [i / 20 for i in range(21)]
    for c in conds:
        shares = [s for r in results for s in r.details["conditions"][c]["top_token_share"]]
        ax_hist.hist(shares, bins=bins, alpha=0.55, color=COLORS[c], label=f"{c} ({len(shares)} latents)",
                     density=True)
    ax_hist.axvline(0.5, color="k", lw=1, ls="--")
    ax_hist.set(xlabel="share of a latent's top-20 activations on its most common token", ylabel="density",
                title=title)
    ax_hist.legend()
    width = 0.8 / len(conds)
    for j, c in enumerate(conds):
        xs = [i + j * width for i in range(len(results))]
        ax_seed.bar(xs, [r.metrics[f"{c}_single_token_frac"] for r in results], width=width, color=COLORS[c],
                    label=c)
    ax_seed.set_xticks([i + width * (len(conds) - 1) / 2 for i in range(len(results))],
                       [f"seed {r.seed}" for r in results])
    ax_seed.set(ylabel="single-token fraction of live latents", ylim=(0, 1), title="per seed")
    ax_seed.legend()
    fig.savefig(path, dpi=110)
