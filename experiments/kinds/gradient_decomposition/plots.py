"""PNG plots for the gradient-decomposition experiment (matplotlib, Agg backend)."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

PART_STYLE = {"direct": ("direct learning", "tab:green"), "precache": ("pre-caching", "tab:blue"),
              "shared": ("circuit sharing", "tab:orange")}
CONDITIONS = ("init", "normal", "myopic", "split")


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_influence(path: Path, curves: dict[str, list[float]], title: str) -> None:
    """Cumulative influence of each part over training, with the realised drop of the risk R."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    steps = curves["step"]
    for part, (label, color) in PART_STYLE.items():
        ax.plot(steps, curves[f"cum_influence_{part}"], label=label, color=color)
    total = [sum(curves[f"cum_influence_{p}"][i] for p in PART_STYLE) for i in range(len(steps))]
    ax.plot(steps, total, label="sum of parts", color="black", lw=1)
    r0 = curves["risk"][0] if curves["risk"] else 0.0
    ax.plot(steps, [r0 - r for r in curves["risk"]], label="R(start) - R(step)", color="gray", ls="--", lw=1)
    ax.axhline(0, color="lightgray", lw=0.5)
    ax.set(xlabel="training step", ylabel="cumulative influence on the feature", title=title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_probe_correlations(path: Path, by_position: dict[str, list[float]], positions: Sequence[int],
                            title: str) -> None:
    """Held-out probe correlation of the majority feature at each useless position, per condition."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    for name in CONDITIONS:
        if name in by_position:
            ax.plot(list(positions), by_position[name], marker="o", label=name)
    ax.set(xlabel="position (input segment)", ylabel="probe correlation (held out)", title=title, ylim=(0, 1.02))
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_summary(path_influence: Path, path_corr: Path, per_seed: list[dict[str, Any]],
                 corr_stats: dict[str, tuple[float, float, float]]) -> None:
    """Across seeds: cumulative influence curves (one thin line per seed, per part) and the mean probe
    correlation per condition with its confidence interval. corr_stats: name -> (mean, low, high)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    for details in per_seed:
        curves = details["influence_curves"]
        for part, (label, color) in PART_STYLE.items():
            ax.plot(curves["step"], curves[f"cum_influence_{part}"], color=color, alpha=0.7, lw=1,
                    label=label if details is per_seed[0] else None)
    ax.axhline(0, color="lightgray", lw=0.5)
    ax.set(xlabel="training step", ylabel="cumulative influence on the feature",
           title=f"influence over training ({len(per_seed)} seeds)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path_influence, dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5, 4))
    names = [n for n in CONDITIONS if n in corr_stats]
    means = [corr_stats[n][0] for n in names]
    errs = [[corr_stats[n][0] - corr_stats[n][1] for n in names], [corr_stats[n][2] - corr_stats[n][0] for n in names]]
    ax.bar(names, means, yerr=errs, capsize=4, color=["lightgray", "tab:blue", "tab:red", "tab:purple"][: len(names)])
    ax.set(ylabel="probe correlation (held out, mean over positions)", ylim=(0, 1.02),
           title="majority feature under each intervention")
    fig.tight_layout()
    fig.savefig(path_corr, dpi=100)
    plt.close(fig)
