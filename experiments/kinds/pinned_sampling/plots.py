"""The `pinned_sampling` PNG: the share of sampled category tokens per condition, and by generated position."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from claimgraph.experiments.features.target import Target

from . import CONDITIONS, PinnedSamplingParams


def plot_pinned(path: Path, out: dict[str, Any], t: Target, controls: list[int], params: PinnedSamplingParams) -> None:
    """Category share per condition (the controls' mean), and by generated position."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 3.8), layout="constrained")
    ax_bar, ax_pos = fig.subplots(1, 2)
    colors = {"baseline": "tab:blue", "pinned": "tab:red", "control": "tab:gray"}
    labels = {"baseline": "no intervention", "pinned": f"feature {t.feature} pinned",
              "control": f"control latents {', '.join(map(str, controls))} pinned (mean)"}
    ax_bar.bar(range(3), [out[c]["share"] for c in CONDITIONS], color=[colors[c] for c in CONDITIONS])
    ax_bar.set_xticks(range(3), [labels[c] for c in CONDITIONS], fontsize=8)
    ax_bar.set(ylabel=f"share of sampled tokens that are {t.predict}", ylim=(0, 1),
               title=f"{params.n_prompts} prompts x {params.n_new} tokens")
    for c in CONDITIONS:
        ax_pos.plot(range(1, params.n_new + 1), out[c]["by_position"], "o-", color=colors[c], label=labels[c])
    ax_pos.set(xlabel="generated token", ylabel=f"share {t.predict}", ylim=(0, 1), title="by position")
    ax_pos.legend(fontsize=8)
    fig.suptitle(f"{t.hook}: pinned sampling of the {t.label} feature")
    fig.savefig(path, dpi=110)
