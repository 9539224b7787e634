"""`claimgraph feature RUN FEATURE`: a feature page in the terminal (rich) or as JSON. Torch is not imported
here; the command computes the page with claimgraph.experiments.pages.page.feature_page and renders it with
`render_feature`."""
from __future__ import annotations

from typing import Any

from .render import _console, emit_json, table


def _shade(act: float, max_act: float) -> str:
    """A rich style: orange background whose strength follows the activation (none at 0)."""
    if max_act <= 0 or act <= 0:
        return ""
    a = min(1.0, act / max_act)
    r, g, b = 255, int(255 - 127 * a), int(255 - 255 * a)  # white -> orange (255, 128, 0)
    return f"black on #{r:02x}{g:02x}{b:02x}"


def context_text(ctx: Any, max_act: float):
    """One context as rich Text: its value, then the tokens shaded by activation, the highlighted one bold and
    underlined between brackets."""
    from rich.text import Text

    from claimgraph.experiments.pages.html import visible

    t = Text(f"{ctx.act:8.3f}  ", style="dim")
    for i, (tok, act) in enumerate(zip(ctx.tokens, ctx.acts)):
        shown = visible(tok)
        if i == ctx.focus:
            t.append(f"[{shown}]", style=(_shade(act, max_act) + " bold underline").strip())
        else:
            t.append(shown, style=_shade(act, max_act))
        t.append(" ")
    return t


def render_feature(page: Any, json_out: bool) -> None:
    """Print a FeaturePage: JSON (`model_dump(mode="json")`) or a terminal view of its sections."""
    if json_out:
        emit_json(page)
        return
    from rich.text import Text

    from claimgraph.experiments.pages.html import visible

    con = _console()
    s = page.sample
    con.print(Text(f"Feature {page.feature}", style="bold"))
    con.print(Text(f"{page.model} · {page.hook} · {page.architecture} SAE, {page.d_sae} latents · run {page.run_id} "
                   f"({page.kind}, seed {page.seed}{', ' + page.condition if page.condition else ''})", style="dim"))
    con.print(Text(f"density {page.density:.3%} ({page.n_firing} of {s.n_tokens} tokens of {s.data}, sample seed "
                   f"{s.seed}) · max {page.max_act:.3f} · mean of non-zero {page.mean_act:.3f}"))
    n = max(len(page.logits.top), len(page.logits.bottom))
    pad = lambda xs, i: (visible(xs[i].token), f"{xs[i].value:+.3f}") if i < len(xs) else ("", "")
    table("logit effects", ["negative", "", "positive", " "],
          [(*pad(page.logits.bottom, i), *pad(page.logits.top, i)) for i in range(n)])
    if page.labels:
        table("planted labels it detects", ["label", "F1", "precision", "recall", "AUROC"],
              [(r.label, f"{r.f1:.3f}", f"{r.precision:.3f}", f"{r.recall:.3f}", f"{r.auroc:.3f}")
               for r in page.labels])
    con.print(Text("Top activations", style="bold underline"))
    if not page.top_contexts:
        con.print(Text("the feature never fires on this sample", style="dim"))
    for c in page.top_contexts:
        con.print(context_text(c, page.max_act), soft_wrap=True)
    for b in page.bands:
        con.print(Text(f"Quantile {b.q_lo:.0%}-{b.q_hi:.0%}: activations {b.act_lo:.3f}-{b.act_hi:.3f}, "
                       f"{b.n_tokens} tokens", style="bold"))
        for c in b.examples:
            con.print(context_text(c, page.max_act), soft_wrap=True)
    if page.related:
        table("related runs", ["kind", "verdict", "decision", "run"],
              [(r.kind, r.verdict, r.reason, r.run_id) for r in page.related], wrap=("decision",))
    if page.html:
        con.print(Text(f"page: {page.html}"), soft_wrap=True)
