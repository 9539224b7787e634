"""Feature pages on toy:tiny: a tiny `sae` run (trained and shuffled SAEs) through the CLI and the runner, then
pages whose numbers are checked against an independent recomputation (top contexts, density, histogram,
quantile bands, logit table, label scores), the HTML and PNGs, related runs, errors, JSON round trip."""
from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from claimgraph.cli.main import app
from claimgraph.experiments.pages import FeaturePage, PageConfig, feature_page, related_run_dirs, resolve_run
from claimgraph.graph import Node, Store
from claimgraph.graph.errors import InvalidInput, NotFound

SAE_PARAMS = dict(steps=150, batch_size=128, train_tokens=4096, eval_tokens=1024, ce_tokens=512, log_every=50,
                  control="shuffled")
PAGE = PageConfig(n_tokens=2048, top_k=8, n_bands=4, per_band=3, bins=20, n_logits=6)
CLAIM = "claim:features-are-interpretable"


def _cli(db: Path, *args: str):
    return CliRunner().invoke(app, ["--db", str(db), "--json", *args])


@pytest.fixture(scope="module")
def sae_run(tmp_path_factory):
    """A completed `sae` run on toy:tiny (one seed, trained + shuffled SAEs), run through the runner."""
    db = tmp_path_factory.mktemp("pages") / "g.duckdb"
    with Store(db) as s:
        s.add_node(Node(id=CLAIM, type="claim", title="Features are interpretable"))
    params = [a for k, v in SAE_PARAMS.items() for a in ("--param", f"{k}={v}")]
    r = _cli(db, "experiment", "add", "--claim", CLAIM, "--kind", "sae", "--model", "toy:tiny", "--data",
             "synthetic:tiny", "--seeds", "1", "--device", "cpu", *params)
    assert r.exit_code == 0, r.output
    exp = json.loads(r.stdout)["experiment"]["id"]
    r = _cli(db, "run", exp)
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["status"] == "completed"
    return db, out["run_id"], Path(out["run_dir"])


@pytest.fixture(scope="module")
def recomputed(sae_run):
    """The trained SAE's latents on the page's sample, computed independently of pages.py: one forward pass
    with run_with_cache, the SAE applied to the whole [N, T, d] activation at once."""
    from claimgraph.experiments.sae import load_sae
    from claimgraph.experiments.substrate.corpus import get_corpus
    from claimgraph.experiments.substrate.load import load_model

    _, _, run_dir = sae_run
    result = json.loads((run_dir / "result.json").read_text())
    folder = run_dir / "artifacts" / result["per_seed"][0]["details"]["conditions"]["trained"]["sae_folder"]
    sae = load_sae(folder)
    model = load_model("toy:tiny", progress=False)
    corpus = get_corpus("synthetic:tiny")
    tokens = corpus.sample(PAGE.n_tokens // corpus.seq_len, PAGE.sample_seed)             # [N, T]
    hook = sae.cfg.hook_name
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, [hook])
        lat = sae.encode(cache[hook])                                                      # [N, T, d_sae]
    return dict(sae=sae, model=model, corpus=corpus, tokens=tokens, lat=lat, folder=folder, hook=hook)


@pytest.fixture(scope="module")
def feature(recomputed):
    """The latent that best detects base64 spans (F1, sklearn), so the page has planted structure to show."""
    from sklearn.metrics import f1_score

    lat, corpus, tokens = recomputed["lat"], recomputed["corpus"], recomputed["tokens"]
    y = corpus.span_labels(tokens)["base64_span"].reshape(-1).numpy()
    fires = (lat.reshape(-1, lat.shape[-1]) > 0).numpy()
    live = np.flatnonzero(fires.any(0))
    scores = [f1_score(y, fires[:, j]) for j in live]
    return int(live[int(np.argmax(scores))])


@pytest.fixture(scope="module")
def page(sae_run, feature):
    _, _, run_dir = sae_run
    return feature_page(run_dir, feature, config=PAGE)


def test_top_contexts_are_the_top_activations(page, recomputed, feature):
    acts = recomputed["lat"][..., feature]                                                  # [N, T]
    seq_max = acts.max(1).values                                                            # [N]
    expected = seq_max.sort(descending=True).values[:PAGE.top_k]
    got = torch.tensor([c.act for c in page.top_contexts])
    assert len(page.top_contexts) == PAGE.top_k
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    assert len({c.seq for c in page.top_contexts}) == PAGE.top_k, "one context per sequence"
    tokens, decode = recomputed["tokens"], recomputed["model"].decode
    T = tokens.shape[1]
    for c in page.top_contexts:
        assert c.act == pytest.approx(float(seq_max[c.seq]), rel=1e-5)
        assert c.start == max(0, c.pos - PAGE.before) and c.start + len(c.tokens) == min(T, c.pos + PAGE.after + 1)
        assert c.tokens == decode(tokens[c.seq, c.start:c.start + len(c.tokens)])
        torch.testing.assert_close(torch.tensor(c.acts), acts[c.seq, c.start:c.start + len(c.acts)],
                                   rtol=1e-5, atol=1e-6)
        assert c.acts[c.focus] == max(c.acts) or c.acts[c.focus] == pytest.approx(max(c.acts))


def test_density_histogram_and_bands(page, recomputed, feature):
    acts = recomputed["lat"][..., feature].reshape(-1)
    nz = acts[acts > 0].double().numpy()
    assert page.sample.n_tokens == acts.numel() == PAGE.n_tokens
    assert page.n_firing == len(nz) > 0
    assert page.density == pytest.approx(len(nz) / acts.numel())
    assert page.max_act == pytest.approx(float(acts.max()), rel=1e-5)
    assert page.mean_act == pytest.approx(float(nz.mean()), rel=1e-5)
    edges = np.asarray(page.histogram.edges)
    assert len(edges) == PAGE.bins + 1 and edges[0] == 0.0 and edges[-1] == pytest.approx(nz.max(), rel=1e-5)
    counts, _ = np.histogram(nz, bins=edges)
    assert page.histogram.counts == counts.tolist() and sum(page.histogram.counts) == page.n_firing
    # bands: edges at the quantiles of the non-zero activations, every non-zero token in exactly one band
    assert len(page.bands) == PAGE.n_bands and sum(b.n_tokens for b in page.bands) == page.n_firing
    qs = np.quantile(nz, np.linspace(0, 1, PAGE.n_bands + 1))
    for b in page.bands:
        assert b.act_lo == pytest.approx(qs[round(b.q_lo * PAGE.n_bands)], rel=1e-4)
        assert b.act_hi == pytest.approx(qs[round(b.q_hi * PAGE.n_bands)], rel=1e-4)
        assert 0 < len(b.examples) <= PAGE.per_band
        for c in b.examples:
            assert b.act_lo - 1e-5 <= c.act <= b.act_hi + 1e-5
    assert [b.q_hi for b in page.bands] == sorted((b.q_hi for b in page.bands), reverse=True)


def test_logit_table_matches_the_direct_path(page, recomputed, feature):
    """Recomputed by hand: decoder row -> W_out(0) -> centred, times the final LayerNorm weight, divided by the
    final residual's typical scale -> W_U."""
    model, sae, tokens = recomputed["model"], recomputed["sae"], recomputed["tokens"]
    assert recomputed["hook"] == "blocks.0.mlp.hook_post"
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, [f"blocks.{model.n_layers - 1}.hook_resid_post"])
        resid = cache[f"blocks.{model.n_layers - 1}.hook_resid_post"]                       # [N, T, d_model]
        scale = (resid.var(-1, unbiased=False) + 1e-5).sqrt().mean()
        r = sae.W_dec[feature] @ model.W_out(0)                                             # [d_model]
        r = (r - r.mean()) * model.ln_final_weight() / scale
        effects = r @ model.W_U                                                             # [d_vocab]
    top = effects.topk(PAGE.n_logits)
    bottom = effects.topk(PAGE.n_logits, largest=False)
    assert [e.token for e in page.logits.top] == model.decode(top.indices)
    assert [e.token for e in page.logits.bottom] == model.decode(bottom.indices)
    np.testing.assert_allclose([e.value for e in page.logits.top], top.values.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose([e.value for e in page.logits.bottom], bottom.values.numpy(), rtol=1e-4, atol=1e-5)
    vocab = model.vocab
    assert all(e.category == vocab.category_of(int(i)) for e, i in zip(page.logits.top, top.indices))
    assert sum(page.logits.histogram.counts) == model.d_vocab


def test_label_scores_agree_with_sklearn(page, recomputed, feature):
    from sklearn.metrics import f1_score, roc_auc_score

    acts = recomputed["lat"][..., feature].reshape(-1).numpy()
    labels = recomputed["corpus"].span_labels(recomputed["tokens"])
    best = page.labels[0]
    assert best.label == "base64_span", "the feature was chosen as the best base64-span detector"
    for s in page.labels:
        y = labels[s.label].reshape(-1).numpy()
        assert s.f1 == pytest.approx(f1_score(y, acts > 0), abs=1e-6)
        assert s.auroc == pytest.approx(roc_auc_score(y, acts), abs=1e-5)
    assert [s.f1 for s in page.labels] == sorted((s.f1 for s in page.labels), reverse=True)


def test_html_and_pngs(page, sae_run):
    _, _, run_dir = sae_run
    html_path = Path(page.html)
    assert html_path == run_dir / "features" / f"feature-{page.feature}.html"
    html = html_path.read_text()
    for name in ("acts", "logits"):
        png = html_path.parent / page.images[name]
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 2000
        assert f'src="{page.images[name]}"' in html
    top = page.top_contexts[0]
    from html import escape

    from claimgraph.experiments.pages.html import visible

    assert f'class="tok max" data-act="{top.act:.6g}"' in html
    assert f'>{escape(visible(top.tokens[top.focus]))}</span>' in html
    assert html.count('class="tok max"') == len(page.top_contexts) + sum(len(b.examples) for b in page.bands)
    for e in page.logits.top + page.logits.bottom:
        assert f"<td>{escape(visible(e.token))}</td><td class=\"num\">{e.value:+.3f}</td>" in html
    assert "Negative logits" in html and "Positive logits" in html and f"{page.density:.3%}" in html
    # every context row, parsed back: its tokens, their activations and shading, the one highlighted token
    rows = _context_rows(html)
    shown = page.top_contexts + [c for b in page.bands for c in b.examples]
    assert len(rows) == len(shown)
    for row, c in zip(rows, shown):
        assert [t for t, _, _, _ in row] == [visible(t) for t in c.tokens]
        np.testing.assert_allclose([a for _, a, _, _ in row], c.acts, rtol=1e-5, atol=1e-6)
        assert [i for i, (_, _, _, is_max) in enumerate(row) if is_max] == [c.focus]
        alphas = [alpha for _, _, alpha, _ in row]
        assert alphas == pytest.approx([min(1.0, max(a, 0.0) / page.max_act) for a in c.acts], abs=1e-3)
    assert "<script" not in html


def _context_rows(html: str) -> list[list[tuple[str, float, float, bool]]]:
    """(shown token, data-act, background alpha, highlighted?) of each token span, per context row."""
    import re
    from html.parser import HTMLParser

    rows: list[list] = []

    class P(HTMLParser):
        tok: dict | None = None

        def handle_starttag(self, tag, attrs):
            a = dict(attrs)
            if tag == "div" and a.get("class") == "ctx":
                rows.append([])
            elif tag == "span" and a.get("class", "").startswith("tok"):
                alpha = float(re.search(r"rgba\(255, 128, 0, ([0-9.]+)\)", a["style"]).group(1))
                self.tok = dict(act=float(a["data-act"]), alpha=alpha, is_max="max" in a["class"].split(), text="")

        def handle_data(self, data):
            if self.tok is not None:
                self.tok["text"] += data

        def handle_endtag(self, tag):
            if tag == "span" and self.tok is not None:
                rows[-1].append((self.tok["text"], self.tok["act"], self.tok["alpha"], self.tok["is_max"]))
                self.tok = None

    P().feed(html)
    return rows


def test_shuffled_condition_uses_the_shuffled_model(sae_run, recomputed):
    """The sae job's control SAE was trained on a weight-shuffled copy of the model; its page must read
    activations of that copy (the trained model's activations would give other numbers)."""
    from claimgraph.experiments.sae import load_sae
    from claimgraph.experiments.substrate.load import shuffled_copy

    _, _, run_dir = sae_run
    result = json.loads((run_dir / "result.json").read_text())
    folder = run_dir / "artifacts" / result["per_seed"][0]["details"]["conditions"]["shuffled"]["sae_folder"]
    sae = load_sae(folder)
    shuffled = shuffled_copy(recomputed["model"], 0)
    with torch.no_grad():
        _, cache = shuffled.run_with_cache(recomputed["tokens"], [sae.cfg.hook_name])
        lat = sae.encode(cache[sae.cfg.hook_name])                                          # [N, T, d_sae]
    f = int((lat > 0).float().mean((0, 1)).argmax())  # its densest latent
    pg = feature_page(run_dir, f, condition="shuffled", config=PAGE.model_copy(update={"n_bands": 1}))
    assert pg.condition == "shuffled" and Path(pg.sae_folder) == folder.resolve()
    assert pg.density == pytest.approx(float((lat[..., f] > 0).double().mean()))
    assert pg.max_act == pytest.approx(float(lat[..., f].max()), rel=1e-5)
    assert Path(pg.html).name == f"feature-{f}-shuffled-seed0.html"


def test_errors(sae_run, page, tmp_path):
    db, run_id, run_dir = sae_run
    with pytest.raises(InvalidInput, match=r"out of range.*256 latents \(0\.\.255\)"):
        feature_page(run_dir, 256, config=PAGE, write=False)
    with pytest.raises(InvalidInput, match="out of range"):
        feature_page(run_dir, -1, config=PAGE, write=False)
    with pytest.raises(InvalidInput, match="no seed 5; its seeds: 0"):
        feature_page(run_dir, 0, seed=5, config=PAGE, write=False)
    with pytest.raises(InvalidInput, match="no SAE for condition .random.; its conditions: (shuffled, trained|trained, shuffled)"):
        feature_page(run_dir, 0, condition="random", config=PAGE, write=False)
    with pytest.raises(NotFound, match="not a run folder"):
        feature_page(tmp_path, 0, config=PAGE)
    with Store(db) as s:
        assert resolve_run(s, run_id) == run_dir
        assert resolve_run(s, str(run_dir)) == run_dir
        with pytest.raises(NotFound, match="no run 'nope'.*claimgraph runs"):
            resolve_run(s, "nope")
        assert related_run_dirs(s) == []  # only an sae run so far


def _fake_feature_run(root: Path, name: str, kind: str, sae_folder: str, feature: int, metric: float) -> Path:
    """A run folder as a feature job leaves it (config.json, result.json, a PNG artifact), written with the
    runner's own record models. A fake at a seam: it stands in for logit_weights runs so the matching rules
    are tested apart from that job's run time; test_related_real_run runs the real job."""
    from claimgraph.experiments.records import MetricSummary, RunConfig, RunResult
    from claimgraph.experiments.spec import Criterion, JobSpec

    d = root / name
    # seed 0 studied `feature` of this SAE; seed 1's SAE chose another feature; one plot spans the whole run
    pngs = {"artifacts/seed0/hist.png": b"\x89PNG\r\n\x1a\nseed0", "artifacts/seed1/hist.png": b"\x89PNG\r\n\x1a\nseed1",
            "artifacts/all-seeds.png": b"\x89PNG\r\n\x1a\nall"}
    for rel, data in pngs.items():
        (d / rel).parent.mkdir(parents=True, exist_ok=True)
        (d / rel).write_bytes(data)
    crit = Criterion(metric="enrichment_ratio", op=">", threshold=2.0, band=0.5)
    cfg = RunConfig(run_id=name, experiment_id=f"experiment:{name}", targets=[CLAIM],
                    spec=JobSpec(kind=kind, model="toy:tiny", data="synthetic:tiny", seeds=[0, 1], criterion=crit),
                    device="cpu", config_hash="x", code_version="y")
    res = RunResult(run_id=name, experiment_id=cfg.experiment_id, kind=kind, seeds=[0, 1],
                    per_seed=[{"seed": 0, "metrics": {"enrichment_ratio": metric},
                               "details": {"sae_folder": sae_folder, "feature": feature, "category": "base64"}},
                              {"seed": 1, "metrics": {"enrichment_ratio": metric},
                               "details": {"sae_folder": sae_folder, "feature": feature + 7, "category": "base64"}}],
                    metrics={"enrichment_ratio": MetricSummary(mean=metric, sd=0.0, values=[metric, metric])},
                    decision=crit.decide([metric, metric]), effect_size=metric,
                    artifacts={rel: "0" for rel in pngs}, wall_s=1.0)
    (d / "config.json").write_text(cfg.model_dump_json())
    (d / "result.json").write_text(res.model_dump_json())
    return d


def test_related_runs_name_the_same_sae_and_feature(sae_run, page, tmp_path):
    _, _, run_dir = sae_run
    same = _fake_feature_run(tmp_path, "same", "logit_weights", page.sae_folder, page.feature, 4.0)
    other_feature = _fake_feature_run(tmp_path, "other-feature", "logit_weights", page.sae_folder,
                                      page.feature + 1, 1.0)
    other_sae = _fake_feature_run(tmp_path, "other-sae", "logit_weights", str(tmp_path), page.feature, 1.0)
    out = tmp_path / "pages"
    pg = feature_page(run_dir, page.feature, related=[same, other_feature, other_sae, same], config=PAGE,
                      out_dir=out)
    assert [r.run_id for r in pg.related] == ["same"]
    rel = pg.related[0]
    assert rel.verdict == "supported" and rel.kind == "logit_weights" and "enrichment_ratio > 2" in rel.criterion
    assert rel.seeds[0].metrics == {"enrichment_ratio": 4.0} and rel.seeds[0].details == {
        "feature": page.feature, "category": "base64"}
    html = Path(pg.html).read_text()
    assert Path(pg.html).parent == out
    assert "verdict-supported" in html and "enrichment_ratio" in html
    # only the page's own images: its PNGs beside it by name, and the related run's plot of the seed that
    # studied this feature (embedded); nothing from the other seed's SAE, no link that leaves the folder
    assert rel.images == [str((same / "artifacts/seed0/hist.png").resolve())]
    srcs = re.findall(r'<img src="([^"]+)"', html)
    own = [x for x in srcs if not x.startswith("data:")]
    assert sorted(own) == sorted(pg.images.values()) and all("/" not in x and (out / x).is_file() for x in own)
    embedded = [base64.b64decode(x.split(",", 1)[1]) for x in srcs if x.startswith("data:image/png;base64,")]
    assert embedded == [b"\x89PNG\r\n\x1a\nseed0"]
    moved = tmp_path / "moved"  # the page moved elsewhere still shows everything it shows
    shutil.copytree(out, moved)
    assert all((moved / x).is_file() for x in own)


def test_json_round_trip_and_terminal_view(page, capsys):
    from claimgraph.cli.feature import render_feature
    from claimgraph.experiments.pages.html import visible

    render_feature(page, json_out=True)
    out = capsys.readouterr().out
    assert FeaturePage.model_validate_json(out) == page
    assert json.loads(out)["feature"] == page.feature
    render_feature(page, json_out=False)
    text = capsys.readouterr().out
    top = page.top_contexts[0]
    assert f"Feature {page.feature}" in text and f"[{visible(top.tokens[top.focus])}]" in text
    assert f"{top.act:8.3f}" in text and visible(page.logits.top[0].token) in text and f"page: {page.html}" in text


def test_modules_import_without_torch():
    code = ("import sys, claimgraph.cli.feature, claimgraph.experiments.pages, "
            "claimgraph.experiments.pages.html; "
            "assert 'torch' not in sys.modules, 'torch imported at module level'")
    subprocess.run([sys.executable, "-c", code], check=True)



def test_helpers_on_hand_set_activations():
    """Known activations: maxima planted at the sequence edges, a never-firing sequence, values 1..100 for the
    quantile bands, and a dead feature."""
    from claimgraph.experiments.pages.page import histogram, quantile_bands, top_contexts

    N, T = 4, 10
    tokens = torch.arange(N * T).view(N, T)
    decode = lambda ids: [f"t{int(i)}" for i in ids]
    acts = torch.zeros(N, T)
    acts[0, 0], acts[0, 5] = 3.0, 1.0  # max at the first position
    acts[1, T - 1] = 5.0  # max at the last position
    acts[3, 4] = 2.0  # sequence 2 never fires
    ctx = top_contexts(tokens, acts, 10, before=2, after=1, decode=decode)
    assert [(c.seq, c.pos, c.act) for c in ctx] == [(1, 9, 5.0), (0, 0, 3.0), (3, 4, 2.0)]
    assert ctx[0].start == 7 and ctx[0].tokens == ["t17", "t18", "t19"] and ctx[0].focus == 2
    assert ctx[1].start == 0 and ctx[1].tokens == ["t0", "t1"] and ctx[1].acts == [3.0, 0.0] and ctx[1].focus == 0
    assert ctx[2].tokens == ["t32", "t33", "t34", "t35"] and ctx[2].acts == [0.0, 0.0, 2.0, 0.0]
    assert [c.seq for c in top_contexts(tokens, acts, 2, before=2, after=1, decode=decode)] == [1, 0]

    vals = torch.arange(1, 101, dtype=torch.float32).view(10, 10)  # every token fires, values 1..100
    bands = quantile_bands(torch.zeros(10, 10, dtype=torch.long), vals, 4, 3, before=0, after=0,
                           decode=decode, seed=0)
    assert [(b.q_lo, b.q_hi) for b in bands] == [(0.75, 1.0), (0.5, 0.75), (0.25, 0.5), (0.0, 0.25)]
    assert [(b.act_lo, b.act_hi) for b in bands] == [(75.25, 100.0), (50.5, 75.25), (25.75, 50.5), (1.0, 25.75)]
    assert [b.n_tokens for b in bands] == [25, 25, 25, 25]
    for b in bands:
        assert len(b.examples) == 3 and all(b.act_lo <= c.act <= b.act_hi for c in b.examples)
        assert [c.act for c in b.examples] == sorted((c.act for c in b.examples), reverse=True)
        assert all(c.act == vals.view(-1)[c.seq * 10 + c.pos] for c in b.examples)

    h = histogram(torch.tensor([0.5, 1.0, 1.0, 2.0]), 4)
    assert h.edges == [0.0, 0.5, 1.0, 1.5, 2.0] and h.counts == [0, 1, 2, 1]  # right edges belong to the next bin
    dead = torch.zeros(N, T)
    assert top_contexts(tokens, dead, 5, before=2, after=1, decode=decode) == []
    assert quantile_bands(tokens, dead, 4, 3, before=2, after=1, decode=decode, seed=0) == []
    assert histogram(dead[dead > 0], 10).counts == [0]
