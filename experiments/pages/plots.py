"""PNGs of a feature page, drawn from the page's own numbers (so the picture and the JSON agree)."""
from __future__ import annotations

from pathlib import Path
from typing import Any


def plot_histogram(path: Path, hist: Any, *, title: str, xlabel: str, subtitle: str = "", color: str = "#e8710a",
                   signed: bool = False) -> Path:
    """Bars of `hist` (a pages.Histogram: edges and counts) as drawn; with `signed`, bins left of 0 in red."""
    from matplotlib.figure import Figure

    edges, counts = hist.edges, hist.counts
    assert len(edges) == len(counts) + 1, f"{len(edges)} edges for {len(counts)} counts"
    fig = Figure(figsize=(5.2, 2.6), layout="constrained")
    ax = fig.subplots()
    lefts = edges[:-1]
    widths = [b - a for a, b in zip(edges[:-1], edges[1:])]
    colors = [("#d93025" if signed and (a + w / 2) < 0 else color) for a, w in zip(lefts, widths)]
    ax.bar(lefts, counts, width=widths, align="edge", color=colors, edgecolor="white", linewidth=0.4)
    if signed:
        ax.axvline(0.0, color="k", lw=0.8)
    ax.set(xlabel=xlabel, ylabel="count")
    ax.set_title(title + (f"\n{subtitle}" if subtitle else ""), fontsize=9)
    ax.tick_params(labelsize=8)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    fig.savefig(path, dpi=100)
    return path
