"""The `logit_weights` PNG: direct effects on the predicted category's tokens vs the other tokens, for the
feature and for one random direction of the same norm."""
from __future__ import annotations

from pathlib import Path

from torch import Tensor

from claimgraph.experiments.features.target import Target


def plot_effects(path: Path, effects: Tensor, random_effects: Tensor, mask: Tensor, t: Target, top_k: int) -> None:
    """Direct effects on the category's tokens vs the other tokens, for the feature and one random direction."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 3.8), layout="constrained")
    for ax, eff, title in zip(fig.subplots(1, 2), (effects, random_effects),
                              (f"feature {t.feature}", "random direction, same norm")):
        e = eff.float().cpu()
        lo, hi = float(e.min()), float(e.max())
        bins = [lo + (hi - lo) * i / 40 for i in range(41)] if hi > lo else 10
        ax.hist(e[~mask].numpy(), bins=bins, alpha=0.6, color="tab:gray", label=f"other tokens ({int((~mask).sum())})")
        ax.hist(e[mask].numpy(), bins=bins, alpha=0.7, color="tab:red", label=f"{t.predict} ({int(mask.sum())})")
        ax.axvline(float(e.topk(top_k).values[-1]), color="k", lw=1, ls="--", label=f"top-{top_k} cut")
        ax.set(xlabel="direct logit effect per unit activation", ylabel="tokens", title=title)
        ax.legend(fontsize=8)
    fig.suptitle(f"{t.hook}: direct logit effects ({t.label})")
    fig.savefig(path, dpi=110)
