"""The emergence heatmap: one panel per (model size, depth), categories down, checkpoints across, the colour
the best latent's detection score. Panel rows are sizes (ascending), panel columns depths (embedding first);
a size with fewer layers leaves its last panels empty. A sweep with one checkpoint per size (a pretrained model)
draws one panel per size instead: categories down, depths across. Cells are drawn with imshow from exactly the table's
numbers (no interpolation, fixed colour scale), so the picture can be checked against the table."""
from __future__ import annotations

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.image import AxesImage

from .analysis import ScoreTable

CMAP = "viridis"
DPI = 100  # the figure's dpi, and the PNG's (savefig dpi="figure"), so pixel positions match the figure's


def score_range(table: ScoreTable) -> tuple[float, float]:
    """The fixed colour scale: [0, 1] for F1, [0.5, 1] for AUROC (0.5 is chance)."""
    return (0.0, 1.0) if table.score_name == "f1" else (0.5, 1.0)


def panel_matrix(table: ScoreTable, size: int, depth: int) -> np.ndarray:
    """The matrix drawn in panel (size, depth): [categories, checkpoints]."""
    return np.asarray(table.sizes[size].score, dtype=float)[:, depth, :].T  # [C, n_ckpt]


def depth_matrix(table: ScoreTable, size: int) -> np.ndarray:
    """The matrix drawn in a one-checkpoint size's panel: [categories, depths] at its (only) checkpoint."""
    return np.asarray(table.sizes[size].score, dtype=float)[-1].T  # [C, n_depths]


def heatmap(table: ScoreTable, threshold: float) -> Figure:
    """The figure; `axes_for(fig)` maps each drawn panel back to its (size, depth), or, with one checkpoint per
    size, to (size, None)."""
    if all(len(s.checkpoints) == 1 for s in table.sizes):
        return _depth_heatmap(table, threshold)
    n_rows = len(table.sizes)
    n_cols = max(len(s.hooks) for s in table.sizes)
    n_cat = len(table.categories)
    width = 1.6 + n_cols * max(1.6, 0.32 * max(len(s.checkpoints) for s in table.sizes))
    height = 0.9 + n_rows * (0.6 + 0.22 * n_cat)
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    axes = np.atleast_2d(fig.subplots(n_rows, n_cols, squeeze=False))
    vmin, vmax = score_range(table)
    image = None
    for si, size in enumerate(table.sizes):
        for d in range(n_cols):
            ax = axes[si, d]
            if d >= len(size.hooks):
                ax.set_axis_off()
                continue
            image = ax.imshow(panel_matrix(table, si, d), cmap=CMAP, vmin=vmin, vmax=vmax, aspect="auto",
                              interpolation="nearest", origin="upper")
            ax.set_gid(f"panel:{si}:{d}")
            ax.set_xticks(range(len(size.checkpoints)), size.checkpoints, rotation=90, fontsize=7)
            ax.set_yticks(range(n_cat), table.categories if d == 0 else [""] * n_cat, fontsize=7)
            ax.set_title(f"{size.model} · depth {d}\n{size.hooks[d]}", fontsize=8)
            if si == n_rows - 1:
                ax.set_xlabel("checkpoint (training step)", fontsize=7)
    _finish(fig, axes, image, table, threshold)
    return fig


def _depth_heatmap(table: ScoreTable, threshold: float) -> Figure:
    from .analysis import depth_of

    n_cat = len(table.categories)
    n_depth = max(len(s.hooks) for s in table.sizes)
    fig = Figure(figsize=(2.4 + 0.42 * n_depth, 0.9 + len(table.sizes) * (0.8 + 0.24 * n_cat)), dpi=DPI,
                 layout="constrained")
    axes = np.atleast_2d(fig.subplots(len(table.sizes), 1, squeeze=False))
    vmin, vmax = score_range(table)
    image = None
    for si, size in enumerate(table.sizes):
        ax = axes[si, 0]
        image = ax.imshow(depth_matrix(table, si), cmap=CMAP, vmin=vmin, vmax=vmax, aspect="auto",
                          interpolation="nearest", origin="upper")
        ax.set_gid(f"depths:{si}")
        ax.set_xticks(range(len(size.hooks)), [str(depth_of(h)) for h in size.hooks], fontsize=7)
        ax.set_yticks(range(n_cat), table.categories, fontsize=7)
        ax.set_title(f"{size.model} · checkpoint {size.checkpoints[0]}", fontsize=8)
        ax.set_xlabel("depth (0: embedding output; d: output of block d-1)", fontsize=7)
    _finish(fig, axes, image, table, threshold)
    return fig


def _finish(fig: Figure, axes: np.ndarray, image: AxesImage | None, table: ScoreTable, threshold: float) -> None:
    if image is not None:
        bar = fig.colorbar(image, ax=axes, shrink=0.8, pad=0.01)
        bar.set_label(f"best latent's {table.score_name}", fontsize=8)
        bar.ax.axhline(threshold, color="red", lw=2.0)
    fig.suptitle(f"Category detection by the best SAE latent (present: {table.score_name} >= {threshold:g}, red line)",
                 fontsize=9)


def axes_for(fig: Figure) -> dict[tuple[int, int | None], Axes]:
    """(size index, depth) -> the Axes drawing that panel; (size index, None) for a one-checkpoint size's panel."""
    out: dict[tuple[int, int | None], Axes] = {}
    for ax in fig.axes:
        gid = ax.get_gid() or ""
        if gid.startswith("panel:"):
            _, si, d = gid.split(":")
            out[(int(si), int(d))] = ax
        elif gid.startswith("depths:"):
            out[(int(gid.split(":")[1]), None)] = ax
    return out
