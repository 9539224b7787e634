"""The `ablation` PNG: log-prob drops of the category and of the other tokens, and KL by offset, for the feature
and for the control latent."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from claimgraph.experiments.features.target import Target

from . import CONDITIONS, AblationParams


def plot_ablation(path: Path, details: dict[str, Any], metrics: dict[str, float], t: Target,
                  params: AblationParams) -> None:
    """Log-prob drops (category vs other) and KL by offset, feature vs control."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 3.8), layout="constrained")
    ax_drop, ax_kl = fig.subplots(1, 2)
    colors = {"feature": "tab:red", "control": "tab:gray"}
    for j, cond in enumerate(CONDITIONS):
        p = "" if cond == "feature" else "control_"
        latent = details["conditions"][cond]["latent"]
        ax_drop.bar([j - 0.2, j + 0.2], [metrics[p + "category_logprob_drop"], metrics[p + "other_logprob_drop"]],
                    width=0.38, color=[colors[cond], "tab:blue"], edgecolor="k")
        ax_kl.plot(range(1, params.horizon + 1), details["conditions"][cond]["kl_by_offset"], "o-",
                   color=colors[cond], label=f"{cond} (latent {latent})")
    ax_drop.set_xticks([-0.2, 0.2, 0.8, 1.2], [f"feature\n{t.predict}", "feature\nother",
                                               f"control\n{t.predict}", "control\nother"])
    ax_drop.axhline(0, color="k", lw=0.8)
    ax_drop.set(ylabel="mean drop in next-token log-prob (nats)", title="clamp to 0 where it fires")
    ax_kl.set_yscale("symlog", linthresh=1e-4)
    ax_kl.set(xlabel="token t+j (ablated at position t only)", ylabel="KL(clean || ablated)",
              title="effect over the next tokens")
    ax_kl.legend(fontsize=8)
    fig.suptitle(f"{t.hook}: ablating the {t.label} feature")
    fig.savefig(path, dpi=110)
