"""PNG plots for the leading-terms job: cosine with the leading term over training, and the projection check.
matplotlib (Agg) is imported inside each function."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

COLORS = {"output": "tab:blue", "value": "tab:orange", "attention": "tab:green", "position": "tab:gray"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_cosines(path: Path, curves: Sequence[dict], *, terms: Sequence[str], marks: dict[str, int] | None = None,
                 control: Sequence[dict] | None = None, title: str = "") -> Path:
    """Cosine of each learned tensor with its leading term against SGD step (log scale), one line per term and
    curve; `curves` are lists of checkpoint rows ({"step", "cos_<term>", "loss_eval"}) wrapped as
    {"label": str, "rows": [...]}. The held-out loss is drawn on a second axis when there is one curve, with the
    output cosine's sampling-noise floor (rows' `noise_floor_output`) as a dotted line; `control` (the checkpoint
    rows of full-batch gradient descent, the paper's setting) is drawn as starred dashed lines per term."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for ci, curve in enumerate(curves):
        rows = curve["rows"]
        for term in terms:
            pts = [(r["step"], r[f"cos_{term}"]) for r in rows if r.get(f"cos_{term}") is not None]
            if not pts:
                continue
            xs, ys = zip(*pts)
            ax.plot(xs, ys, color=COLORS.get(term), alpha=0.9 if len(curves) == 1 else 0.6, marker=".",
                    label=term if ci == 0 else None)
    if control:
        for term in terms:
            pts = [(r["step"], r[f"cos_{term}"]) for r in control if r.get(f"cos_{term}") is not None]
            if pts:
                xs, ys = zip(*pts)
                ax.plot(xs, ys, color=COLORS.get(term), ls="--", marker="*", ms=8, mec="black", mew=0.4, zorder=4,
                        label="full-batch GD" if term == terms[0] else None)
    if len(curves) == 1:
        pts = [(r["step"], r["noise_floor_output"]) for r in curves[0]["rows"] if r.get("noise_floor_output") is not None]
        if pts:
            xs, ys = zip(*pts)
            ax.plot(xs, ys, color=COLORS["output"], ls=":", lw=1.2, label="output: SGD noise floor")
    ax.set_xscale("log")
    ax.set_xlabel("SGD step")
    ax.set_ylabel("cosine(learned, leading term)")
    ax.set_ylim(min(0.0, ax.get_ylim()[0]), 1.02)
    ax.axhline(1.0, color="black", lw=0.5)
    for name, step in (marks or {}).items():
        ax.axvline(step, color="black", ls=":", lw=0.8)
        ax.text(step, 0.02, f" {name}", rotation=90, va="bottom", fontsize=8, transform=ax.get_xaxis_transform())
    if len(curves) == 1:
        ax2 = ax.twinx()
        rows = curves[0]["rows"]
        ax2.plot([r["step"] for r in rows], [r["loss_eval"] for r in rows], color="black", lw=1, ls="--",
                 label="held-out loss")
        ax2.set_ylabel("held-out loss (nats)")
        ax2.legend(loc="lower right", fontsize=8)
    ax.legend(loc="lower left", fontsize=8)
    ax.set_title(title or "Learned weights vs gradient leading terms")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_loss_increase(path: Path, increases: dict[str, list[float]], *, controls: dict[str, list[float]] | None = None,
                       title: str = "") -> Path:
    """Bar per term: held-out loss increase when its leading term is projected out of the trained weights
    (mean over the given values, with their spread as error bars and each value as a dot); `controls` (the
    random-direction control of each term) as grey crosses. Non-finite values (a diverged run) are left out."""
    plt = _pyplot()
    import numpy as np

    def finite(vals: Sequence[float]) -> list[float]:
        return [float(v) for v in vals if np.isfinite(v)]

    names = list(increases)
    vals = {n: finite(increases[n]) for n in names}
    fig, ax = plt.subplots(figsize=(6, 3.8))
    means = [float(np.mean(vals[n])) if vals[n] else 0.0 for n in names]
    sds = [float(np.std(vals[n], ddof=1)) if len(vals[n]) > 1 else 0.0 for n in names]
    ax.bar(names, means, yerr=sds, color=[COLORS.get(n, "tab:purple") for n in names], alpha=0.8, capsize=4)
    for i, n in enumerate(names):
        ax.scatter([i] * len(vals[n]), vals[n], color="black", s=10, zorder=3)
        ctrl = finite((controls or {}).get(n, []))
        ax.scatter([i + 0.25] * len(ctrl), ctrl, color="grey", marker="x", s=18, zorder=3,
                   label="random direction, same norm" if i == 0 and ctrl else None)
    if controls:
        ax.legend(fontsize=8)
    ax.set_yscale("symlog", linthresh=1e-4)
    ax.set_ylabel("loss increase (nats, symlog)")
    ax.set_title(title or "Projecting each leading term out of the trained weights")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_toy_path(path: Path, toys: Sequence[dict], seeds: Sequence[int]) -> Path:
    """Cosine of a toy model's centred embedding->unembedding path with B (and the B^T control), and of its change
    since step 0 with B, per checkpoint."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    for i, (toy, _seed) in enumerate(zip(toys, seeds)):
        rows = toy["checkpoints"]
        steps = [max(r["step"], 1) for r in rows]  # step 0 drawn at 1 on the log axis
        ax.plot(steps, [r["cos_bigram"] for r in rows], color="tab:blue", marker=".", alpha=0.7,
                label="vs B" if i == 0 else None)
        ax.plot(steps, [r["cos_bigram_transposed"] for r in rows], color="tab:red", ls="--", alpha=0.7,
                label="vs B^T (control)" if i == 0 else None)
        change = [(s, r["cos_bigram_change"]) for s, r in zip(steps, rows) if r["cos_bigram_change"] is not None]
        if change:
            ax.plot(*zip(*change), color="tab:green", marker=".", alpha=0.7,
                    label="change since step 0 vs B" if i == 0 else None)
    ax.set_xscale("log")
    ax.set_xlabel("toy training step (0 drawn at 1)")
    ax.set_ylabel("cosine")
    ax.axhline(0.0, color="black", lw=0.5)
    ax.legend(fontsize=8)
    ax.set_title(f"{toys[0].get('model')}: W_E diag(ln_f) W_U (rows centred) vs bigram B")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
