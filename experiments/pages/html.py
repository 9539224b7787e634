"""The HTML of a feature page, in the layout of SAE dashboards (SAE-Vis, Neuronpedia): a left column with the
activation density and histogram, the positive and negative logit tables and the planted labels; a right column
with the top activating examples and quantile bands, each token shaded by its activation, the highlighted
(max-activating) token outlined; related runs at the bottom. Every string is escaped with html.escape."""
from __future__ import annotations

import base64
from html import escape
from pathlib import Path
from typing import Any

CSS = """
body { font-family: system-ui, -apple-system, Segoe UI, sans-serif; margin: 1.2em; color: #202124; }
h1 { font-size: 1.3em; margin: 0 0 .2em; } h2 { font-size: 1.02em; margin: 1.1em 0 .4em;
  border-bottom: 1px solid #dadce0; padding-bottom: .15em; } h3 { font-size: .92em; margin: .8em 0 .3em; }
.meta { color: #5f6368; font-size: .85em; } .meta code { font-size: .95em; }
.grid { display: grid; grid-template-columns: minmax(300px, 380px) 1fr; gap: 2em; align-items: start; }
table { border-collapse: collapse; font-size: .85em; } td, th { padding: 2px 8px; text-align: left; }
th { border-bottom: 1px solid #dadce0; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.logits { display: flex; gap: 1em; } .neg td.num { color: #d93025; } .pos td.num { color: #1a73e8; }
.ctx { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: .85em; margin: 3px 0; direction: ltr;
  line-height: 1.9; white-space: nowrap; overflow-x: auto; }
.ctx .val { display: inline-block; width: 4.5em; color: #5f6368; text-align: right; margin-right: .6em; }
.tok { padding: 1px 2px; border-radius: 2px; margin-right: 2px; unicode-bidi: isolate; }
.tok.max { outline: 2px solid #202124; font-weight: bold; }
.big { font-size: 1.6em; font-weight: 600; } .verdict-supported { color: #188038; }
.verdict-refuted { color: #d93025; } .verdict-inconclusive { color: #b06000; }
img { max-width: 100%; } .band { color: #5f6368; font-size: .85em; }
"""


def _tok_style(act: float, max_act: float) -> str:
    alpha = 0.0 if max_act <= 0 or act <= 0 else min(1.0, act / max_act)
    return f"background: rgba(255, 128, 0, {alpha:.3f})"


def visible(token: str) -> str:
    """A token as shown: spaces as a middle dot, newlines and tabs as arrows, so no token looks empty."""
    return token.replace(" ", "\u00b7").replace("\n", "\u21b5").replace("\t", "\u21e5") or "\u2205"


def _show(token: str) -> str:
    return escape(visible(token))


def _context(ctx: Any, max_act: float) -> str:
    spans = []
    for i, (tok, act) in enumerate(zip(ctx.tokens, ctx.acts)):
        cls = "tok max" if i == ctx.focus else "tok"
        spans.append(f'<span class="{cls}" data-act="{act:.6g}" title="{escape(tok)}: {act:.4g}" '
                     f'style="{_tok_style(act, max_act)}">{_show(tok)}</span>')
    return (f'<div class="ctx" data-seq="{ctx.seq}" data-pos="{ctx.pos}"><span class="val">{ctx.act:.3f}</span>'
            + "".join(spans) + "</div>")


def _logit_rows(entries: list[Any]) -> str:
    return "".join(f"<tr><td>{_show(e.token)}</td><td class=\"num\">{e.value:+.3f}</td>"
                   f"<td class=\"meta\">{escape(e.category or '')}</td></tr>" for e in entries)


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else escape(str(v))


def _related(page: Any, out_dir: Path) -> str:
    if not page.related:
        return "<p class=\"meta\">No logit_weights, ablation or pinned_sampling run on this SAE and feature yet.</p>"
    parts = []
    for r in page.related:
        parts.append(f'<h3>{escape(r.kind)} · <span class="verdict-{escape(r.verdict)}">{escape(r.verdict)}</span>'
                     f' <span class="meta">run {escape(r.run_id)} · {escape(r.experiment_id)}</span></h3>')
        parts.append(f'<p class="meta">{escape(r.criterion)}<br>{escape(r.reason)}</p>')
        for s in r.seeds:
            rows = "".join(f"<tr><td>{escape(k)}</td><td class=\"num\">{_fmt(v)}</td></tr>"
                           for k, v in sorted(s.metrics.items()))
            extra = ", ".join(f"{escape(k)} = {_fmt(v)}" for k, v in sorted(s.details.items()))
            parts.append(f"<p class=\"meta\">seed {s.seed}{' · ' + extra if extra else ''}</p>"
                         f"<table class=\"metrics\"><tr><th>metric</th><th>value</th></tr>{rows}</table>")
        for img in r.images:  # embedded: the page links nothing outside its own folder, so it can be moved
            try:
                data = base64.b64encode(Path(img).read_bytes()).decode("ascii")
            except OSError:
                continue
            parts.append(f'<img src="data:image/png;base64,{data}" alt="{escape(r.run_id)}: {escape(Path(img).name)}" '
                         'loading="lazy">')
    return "".join(parts)


def render_html(page: Any, out_dir: Path) -> str:
    """The page as one HTML document: its own PNGs by name, beside it in `out_dir`; the related runs' plots
    embedded (data: URIs), so nothing links outside the page's folder."""
    m = page.max_act
    title = f"Feature {page.feature} · {page.hook} · {page.model}"
    head = (f"<h1>Feature {page.feature}</h1><div class=\"meta\">model <code>{escape(page.model)}</code> · hook "
            f"<code>{escape(page.hook)}</code> · {escape(page.architecture)} SAE, {page.d_sae} latents · run "
            f"<code>{escape(page.run_id)}</code> ({escape(page.kind)}, seed {page.seed}"
            f"{', ' + escape(page.condition) if page.condition else ''}) · SAE <code>{escape(page.sae_folder)}</code>"
            f"<br>computed on {page.sample.n_seqs} held-out sequences × {page.sample.seq_len} tokens of "
            f"<code>{escape(page.sample.data)}</code> (sample seed {page.sample.seed})</div>")
    left = [
        "<h2>Activation density</h2>",
        f'<div class="big">{page.density:.3%}</div><div class="meta">{page.n_firing} of {page.sample.n_tokens} '
        f"tokens fire · max {page.max_act:.3f} · mean of non-zero {page.mean_act:.3f}</div>",
    ]
    if "acts" in page.images:
        left.append(f'<img src="{escape(page.images["acts"])}" alt="activation histogram">')
    left.append("<h2>Logit effects</h2><div class=\"logits\">"
                f"<table class=\"neg\"><tr><th colspan=3>Negative logits</th></tr>{_logit_rows(page.logits.bottom)}"
                f"</table><table class=\"pos\"><tr><th colspan=3>Positive logits</th></tr>"
                f"{_logit_rows(page.logits.top)}</table></div>")
    if "logits" in page.images:
        left.append(f'<img src="{escape(page.images["logits"])}" alt="logit effect histogram">')
    if page.labels:
        rows = "".join(f"<tr><td>{escape(s.label)}</td><td class=\"num\">{s.f1:.3f}</td><td class=\"num\">"
                       f"{s.precision:.3f}</td><td class=\"num\">{s.recall:.3f}</td><td class=\"num\">{s.auroc:.3f}"
                       f"</td></tr>" for s in page.labels)
        left.append("<h2>Planted labels it detects</h2><table class=\"labels\"><tr><th>label</th><th>F1</th>"
                    f"<th>precision</th><th>recall</th><th>AUROC</th></tr>{rows}</table>")
    right = ["<h2>Top activations</h2>"]
    if not page.top_contexts:
        right.append("<p class=\"meta\">The feature never fires on this sample.</p>")
    right += [_context(c, m) for c in page.top_contexts]
    for b in page.bands:
        right.append(f"<h3>Quantile {b.q_lo:.0%}–{b.q_hi:.0%} <span class=\"band\">activations "
                     f"{b.act_lo:.3f}–{b.act_hi:.3f} · {b.n_tokens} tokens</span></h3>")
        right += [_context(c, m) for c in b.examples]
    return (f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{escape(title)}</title>"
            f"<style>{CSS}</style></head><body>{head}<div class=\"grid\"><div class=\"left\">{''.join(left)}</div>"
            f"<div class=\"right\">{''.join(right)}</div></div><h2>Related runs</h2>{_related(page, out_dir)}"
            "</body></html>\n")
