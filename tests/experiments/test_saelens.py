"""SAELens both ways, with the real sae-lens: SAEs claimgraph trains and saves load with
`sae_lens.SAE.load_from_disk` and encode/decode as claimgraph's do; SAEs SAELens trains (its own SAETrainer, a few
steps on planted data) and saves load into claimgraph's classes and encode/decode as SAELens's do; provenance
digests are those of the files read."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import sae_lens  # in the test extras (scripts/env.sh installs it); a missing install fails here, it does not skip
import torch

from claimgraph.experiments.sae import (
    JumpReluSAE,
    ReluSAE,
    SaeConfig,
    SaeRecipe,
    TopKSAE,
    load_sae,
    make_trainer,
    sae_from_path,
    save_sae,
    train_sae,
)
from claimgraph.experiments.sae.train import batch_indices
from claimgraph.graph.errors import InvalidDocument, InvalidInput

D_IN, D_SAE = 16, 48
HOOK = "blocks.0.mlp.hook_post"


def config(d_in: int = D_IN, **fields) -> SaeConfig:
    """A trainer config from the one SAE recipe (its defaults, these fields), with provenance fields set."""
    prov = {k: fields.pop(k) for k in ("model_name", "dataset_path", "context_size") if k in fields}
    return SaeRecipe(hook=HOOK, **fields).config(d_in, 0, **prov)


def planted(n: int, seed: int) -> torch.Tensor:
    """Sums of a few of 32 unit directions with positive weights, shifted and scaled off the unit sphere."""
    g = torch.Generator().manual_seed(seed)
    D = torch.randn(32, D_IN, generator=g)
    D = D / D.norm(dim=1, keepdim=True)
    coef = (torch.rand(n, 32, generator=g) < 0.1) * (torch.rand(n, 32, generator=g) + 0.5)  # [n, 32]
    return (coef @ D) * 4.0 + 1.5  # [n, D_IN]


@pytest.fixture(scope="module")
def acts() -> torch.Tensor:
    return planted(6000, seed=7)


def same(a: torch.Tensor, b: torch.Tensor) -> None:
    """Equal to float32 precision at the scale of the values."""
    assert a.shape == b.shape and a.dtype == b.dtype, (a.shape, b.shape, a.dtype, b.dtype)
    tol = 1e-5 * max(1.0, float(b.abs().max()))
    err = float((a - b).abs().max())
    assert err <= tol, f"max |difference| {err:.3g} > {tol:.3g}"


def assert_same_maps(ours, theirs, x: torch.Tensor) -> None:
    """claimgraph's and SAELens's encode, decode and forward agree on x; the latents are not trivial."""
    with torch.no_grad():
        f_ours, f_theirs = ours.encode(x), theirs.encode(x)
        same(f_ours, f_theirs)
        assert torch.equal(f_ours != 0, f_theirs != 0), "the two disagree on which latents fire"
        l0 = float((f_theirs != 0).sum(dim=1).float().mean())
        assert 0 < l0 < ours.d_sae, f"degenerate latents (L0 {l0})"
        same(ours.decode(f_theirs), theirs.decode(f_theirs))
        same(ours(x), theirs(x))


# ------------------------------------------------------------------------------------------------ export

@pytest.mark.parametrize("arch", ["relu", "topk"])
def test_claimgraph_sae_loads_in_saelens(arch, acts, tmp_path):
    cfg = config(architecture=arch, d_sae=D_SAE, k=4, l1_coefficient=1.0, steps=150, batch_size=128, lr=3e-3,
                 model_name="toy:tiny", dataset_path="synthetic:tiny", context_size=32)
    sae, _ = train_sae(cfg, acts)  # normalisation on: the folded scale must reach SAELens too
    assert sae.activation_scale != pytest.approx(1.0, abs=0.05)
    folder = save_sae(sae, tmp_path / "sae")
    theirs = sae_lens.SAE.load_from_disk(str(folder))
    expected = {"relu": sae_lens.StandardSAE, "topk": sae_lens.TopKSAE}[arch]
    assert type(theirs) is expected
    c = theirs.cfg
    assert (c.d_in, c.d_sae, c.dtype, c.normalize_activations, c.apply_b_dec_to_input) == (
        D_IN, D_SAE, "float32", "none", True)
    assert c.metadata.hook_name == HOOK and c.metadata.model_name == "toy:tiny"
    assert c.metadata.context_size == 32 and c.metadata.dataset_path == "synthetic:tiny"
    if arch == "topk":
        assert c.k == 4 and c.rescale_acts_by_decoder_norm is False
    assert_same_maps(sae, theirs, acts[:500])


def test_pre6_reader_fields_agree_with_the_6x_fields(acts, tmp_path):
    """The same file read through SAELens's pre-6 path (no metadata.sae_lens_version) gives the same SAE."""
    cfg = config(architecture="topk", d_sae=D_SAE, k=4, steps=40, batch_size=128, model_name="toy:tiny")
    sae, _ = train_sae(cfg, acts)
    folder = save_sae(sae, tmp_path / "sae")
    raw = json.loads((folder / "cfg.json").read_text())
    raw.pop("metadata")
    raw.pop("k")
    (folder / "cfg.json").write_text(json.dumps(raw))
    theirs = sae_lens.SAE.load_from_disk(str(folder))
    assert type(theirs) is sae_lens.TopKSAE and theirs.cfg.k == 4 and theirs.cfg.metadata.hook_name == HOOK
    assert_same_maps(sae, theirs, acts[:300])


# ------------------------------------------------------------------------------------------------ import

def saelens_train(sae, acts: torch.Tensor, steps: int, batch_size: int = 128, lr: float = 3e-3):
    """Train a SAELens training SAE with SAELens's own SAETrainer, fed batches of `acts` by its data-provider
    interface (an iterator of [batch, d_in] tensors)."""
    from sae_lens.config import LoggingConfig, SAETrainerConfig

    gen = torch.Generator().manual_seed(0)
    provider = (acts[idx] for idx in batch_indices(len(acts), batch_size, 10**9, gen))
    cfg = SAETrainerConfig(total_training_samples=steps * batch_size, train_batch_size_samples=batch_size, lr=lr,
                           lr_end=lr, dead_feature_window=50, n_batches_for_norm_estimate=10,
                           logger=LoggingConfig(log_to_wandb=False))
    return sae_lens.SAETrainer(cfg, sae, provider).fit()


def saelens_sae(arch: str, acts: torch.Tensor, **kw):
    """A SAELens training SAE of `arch`, trained 60 steps with activation normalisation (folded at the end)."""
    common = dict(d_in=D_IN, d_sae=D_SAE, normalize_activations="expected_average_only_in")
    if arch == "standard":
        sae = sae_lens.StandardTrainingSAE(sae_lens.StandardTrainingSAEConfig(l1_coefficient=0.5, **common, **kw))
    elif arch == "topk":
        sae = sae_lens.TopKTrainingSAE(sae_lens.TopKTrainingSAEConfig(k=5, **common, **kw))
    else:
        sae = sae_lens.JumpReLUTrainingSAE(sae_lens.JumpReLUTrainingSAEConfig(
            jumprelu_init_threshold=0.3, l0_coefficient=0.1, **common, **kw))
    torch.manual_seed(0)
    return saelens_train(sae, acts, steps=60)


CASES = {  # name: (SAELens architecture, config extras, how it is saved, our class)
    "standard": ("standard", {}, "inference", ReluSAE),
    "standard_no_bdec_in": ("standard", {"apply_b_dec_to_input": False}, "inference", ReluSAE),
    "topk": ("topk", {}, "inference", TopKSAE),
    "topk_training_checkpoint": ("topk", {}, "checkpoint", TopKSAE),  # unfolded decoder norms, rescale on
    "jumprelu": ("jumprelu", {}, "inference", JumpReluSAE),
}


@pytest.mark.parametrize("case", list(CASES))
def test_saelens_sae_loads_into_claimgraph(case, acts, tmp_path):
    arch, extra, how, cls = CASES[case]
    trained = saelens_sae(arch, acts, **extra)
    folder = tmp_path / case
    (trained.save_inference_model if how == "inference" else trained.save_model)(str(folder))
    if case == "topk_training_checkpoint":  # the fold of decoder norms is exercised only if they are not 1
        norms = trained.W_dec.norm(dim=1)
        assert trained.cfg.rescale_acts_by_decoder_norm and (norms - 1).abs().max() > 0.1
    theirs = sae_lens.SAE.load_from_disk(str(folder))
    ours, source = sae_from_path(folder, d_in=D_IN)
    assert type(ours) is cls and ours.d_in == D_IN and ours.d_sae == D_SAE
    x = planted(500, seed=99)  # held out
    assert_same_maps(ours, theirs, x)
    if arch == "jumprelu":  # the thresholds matter: plain ReLU of the same pre-activations would fire more
        pre = ours.pre_acts(x)
        assert bool(((pre > 0) & (pre <= ours.threshold)).any())
    assert source.origin == "saelens" and source.architecture == cls.architecture
    assert source.saelens_architecture == arch


def test_saelens_jumprelu_round_trips_through_claimgraph(acts, tmp_path):
    """A JumpReLU SAE read from SAELens, saved by claimgraph, loads again in both libraries unchanged."""
    saelens_sae("jumprelu", acts).save_inference_model(str(tmp_path / "orig"))
    ours = load_sae(tmp_path / "orig")
    folder = save_sae(ours, tmp_path / "again")
    again, theirs = load_sae(folder), sae_lens.SAE.load_from_disk(str(folder))
    assert type(theirs) is sae_lens.JumpReLUSAE and torch.equal(again.threshold, ours.threshold)
    x = planted(300, seed=5)
    assert_same_maps(again, theirs, x)
    assert_same_maps(again, sae_lens.SAE.load_from_disk(str(tmp_path / "orig")), x)


def test_provenance_digests_are_the_files_read(acts, tmp_path):
    cfg = config(d_sae=D_SAE, steps=5, batch_size=128)
    sae, _ = train_sae(cfg, acts)
    folder = save_sae(sae, tmp_path / "sae")
    _, source = sae_from_path(folder, d_in=D_IN, hook_name=HOOK)
    rec = source.record()
    assert json.loads(json.dumps(rec)) == rec
    assert rec["path"] == str(folder.resolve()) and rec["origin"] == "claimgraph" and rec["hook_name"] == HOOK
    assert rec["weights_sha256"] == hashlib.sha256((folder / "sae_weights.safetensors").read_bytes()).hexdigest()
    assert rec["cfg_sha256"] == hashlib.sha256((folder / "cfg.json").read_bytes()).hexdigest()
    # a changed file gives another digest
    retrained, _ = train_sae(cfg.model_copy(update={"seed": 1}), acts)
    save_sae(retrained, folder)
    _, changed = sae_from_path(folder)
    assert changed.weights_sha256 != source.weights_sha256


def test_mismatched_or_unsupported_saes_are_refused(acts, tmp_path):
    trained = saelens_sae("standard", acts)
    folder = tmp_path / "sae"
    trained.save_inference_model(str(folder))
    with pytest.raises(InvalidInput, match="d_in"):
        sae_from_path(folder, d_in=D_IN + 1)
    raw = json.loads((folder / "cfg.json").read_text())
    (folder / "cfg.json").write_text(json.dumps({**raw, "metadata": {**raw["metadata"], "hook_name": HOOK}}))
    with pytest.raises(InvalidInput, match="blocks.0.mlp.hook_post"):
        sae_from_path(folder, hook_name="blocks.1.hook_resid_post")
    for field, value in (("normalize_activations", "layer_norm"), ("architecture", "gated")):
        (folder / "cfg.json").write_text(json.dumps({**raw, field: value}))
        with pytest.raises(InvalidDocument, match=field) as err:
            sae_from_path(folder)
        assert str(folder / "cfg.json") in str(err.value)


def test_jumprelu_is_not_trained_here():
    cfg = SaeConfig.model_validate({**config(4, d_sae=8).model_dump(), "architecture": "jumprelu"})
    with pytest.raises(InvalidInput, match="trains relu and topk"):
        make_trainer(cfg, torch.randn(10, 4))


@pytest.mark.slow
def test_trainer_benchmark_runs_on_a_cached_activation_file(tmp_path, monkeypatch, capsys):
    """bench/bench_saelens.py end to end on a small activation file in the format it documents (not a timing)."""
    import importlib.util
    import sys
    from pathlib import Path

    from safetensors.torch import save_file

    path = Path(__file__).resolve().parents[2] / "bench" / "bench_saelens.py"
    spec = importlib.util.spec_from_file_location("bench_saelens", path)
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "bench_saelens", bench)  # dataclasses look their module up there
    spec.loader.exec_module(bench)
    save_file({"acts": planted(5000, seed=3)}, str(tmp_path / "acts.safetensors"))
    out = tmp_path / "rows.json"
    monkeypatch.setattr(sys, "argv", ["bench_saelens.py", "--acts", str(tmp_path / "acts.safetensors"), "--steps", "40",
                                      "--batch", "128", "--l1", "0.5,2", "--k", "4", "--expansion", "2",
                                      "--json", str(out)])
    bench.main()
    rows = json.loads(out.read_text())["rows"]
    assert [(r["arch"], r["knob"], r["trainer"]) for r in rows] == [
        ("relu", "l1=0.5", "claimgraph"), ("relu", "l1=0.5", "saelens"), ("relu", "l1=2", "claimgraph"),
        ("relu", "l1=2", "saelens"), ("topk", "k=4", "claimgraph"), ("topk", "k=4", "saelens")]
    for r in rows:
        assert r["vec_per_s"] > 0 and -1 < r["metrics"]["fve"] <= 1 and 0 <= r["metrics"]["dead_frac"] <= 1, r
    assert all(r["metrics"]["l0"] <= 4 + 1e-6 for r in rows if r["arch"] == "topk")
    assert "throughput claimgraph / SAELens" in capsys.readouterr().out


# ------------------------------------------------------------------------- feature jobs on an SAE given by path

TOY_HOOK = "blocks.0.mlp.hook_post"  # toy:tiny: 128 wide
CLAIM = "claim:a-shared-sae-has-a-base64-feature"
SMALL = {"logit_weights": ["n_random=100", "scale_tokens=2048"], "ablation": ["measure_tokens=2048", "kl_positions=32"]}


def _cli(db, *args: str):
    from typer.testing import CliRunner

    from claimgraph.cli.main import app

    return CliRunner().invoke(app, ["--json", "--db", str(db), *args])


@pytest.fixture(scope="module")
def shared_sae(tmp_path_factory):
    """A standard SAE that SAELens itself trains (its SAETrainer) on toy:tiny's activations at TOY_HOOK and saves;
    cfg.json's metadata names the hook and model, as an SAE shared for a model does."""
    from claimgraph.experiments.substrate.load import activations, load_model, model_corpus

    model, corpus = load_model("toy:tiny", progress=False), model_corpus("toy:tiny")
    x = activations(model, corpus.sample(8192 // corpus.seq_len, 0), TOY_HOOK, out_device="cpu")  # [8192, 128]
    sae = sae_lens.StandardTrainingSAE(sae_lens.StandardTrainingSAEConfig(
        d_in=x.shape[1], d_sae=256, l1_coefficient=1.0, normalize_activations="expected_average_only_in"))
    torch.manual_seed(0)
    trained = saelens_train(sae, x, steps=300)
    folder = tmp_path_factory.mktemp("shared") / "sae"
    trained.save_inference_model(str(folder))
    raw = json.loads((folder / "cfg.json").read_text())
    raw["metadata"] = {**raw["metadata"], "hook_name": TOY_HOOK, "model_name": "toy:tiny"}
    (folder / "cfg.json").write_text(json.dumps(raw))
    return folder


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    from claimgraph.graph import Node, Store

    path = tmp_path_factory.mktemp("sae_path_db") / "g.duckdb"
    with Store(path) as s:
        s.add_node(Node(id=CLAIM, type="claim", title="A shared SAE has a base64 feature that promotes base64"))
    return path


def _add(db, kind: str, folder, *extra: str, seeds: str = "2"):
    params = [f"sae_path={folder}", "select_tokens=4096", *SMALL.get(kind, []), *extra]
    return _cli(db, "experiment", "add", "--claim", CLAIM, "--kind", kind, "--model", "toy:tiny", "--data",
                "synthetic:tiny", "--seeds", seeds, "--device", "cpu", *[a for p in params for a in ("--param", p)])


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("kind", ["logit_weights", "ablation"])
def test_feature_job_reads_the_given_sae(kind, shared_sae, db):
    from claimgraph.experiments.context import cache_dir

    r = _add(db, kind, shared_sae, seeds="2" if kind == "logit_weights" else "1")
    assert r.exit_code == 0, r.output
    exp = json.loads(r.stdout)["experiment"]
    params = exp["attrs"]["spec"]["params"]
    assert params["sae_path"] == str(shared_sae.resolve())
    assert params["sae_sha256"] == _sha(shared_sae / "sae_weights.safetensors")
    assert params["sae_cfg_sha256"] == _sha(shared_sae / "cfg.json")
    provisioned = set((cache_dir() / "saes").glob("*")) if (cache_dir() / "saes").is_dir() else set()
    r = _cli(db, "run", exp["id"])
    assert r.exit_code == 0, r.output
    run = json.loads(r.stdout)
    assert run["status"] == "completed" and run["evidence_id"], run
    run_dir = Path(run["run_dir"])
    result = json.loads((run_dir / "result.json").read_text())
    config = json.loads((run_dir / "config.json").read_text())
    assert config["spec"]["params"]["sae_sha256"] == params["sae_sha256"]  # in what the config hash covers
    for seed in result["per_seed"]:
        d = seed["details"]
        assert d["sae_folder"] == str(shared_sae.resolve()) and d["sae_key"] is None
        assert d["sae_source"]["weights_sha256"] == params["sae_sha256"] and d["sae_source"]["origin"] == "saelens"
        assert d["d_sae"] == 256 and d["hook"] == TOY_HOOK
    env = json.loads((run_dir / "environment.json").read_text())
    assert env["model_provenance"]["sae"]["weights_sha256"] == params["sae_sha256"]
    now = set((cache_dir() / "saes").glob("*")) if (cache_dir() / "saes").is_dir() else set()
    assert now == provisioned, "a given SAE must not train one"
    ev = next(e for e in json.loads(_cli(db, "evidence", CLAIM).stdout)["evidence"] if e["run_id"] == run["run_id"])
    assert ev["verdict"] == result["decision"]["verdict"]
    assert "does not cover SAE seeds" in ev["text"] and params["sae_sha256"][:12] in ev["text"]
    if kind == "logit_weights":  # the page of the run's feature reads the same SAE
        feature = result["per_seed"][0]["details"]["feature"]
        r = _cli(db, "feature", run["run_id"], str(feature))
        assert r.exit_code == 0, r.output
        page = json.loads(r.stdout)
        assert page["sae_folder"] == str(shared_sae.resolve()) and page["sae_sha256"] == params["sae_sha256"]


def test_a_changed_sae_is_a_new_experiment(shared_sae, db, tmp_path):
    import shutil

    folder = tmp_path / "sae"
    shutil.copytree(shared_sae, folder)
    r = _add(db, "logit_weights", folder, seeds="1")
    assert r.exit_code == 0, r.output
    first = json.loads(r.stdout)["experiment"]
    assert _cli(db, "run", first["id"]).exit_code == 0
    runs_root = db.parent / "g.duckdb.d" / "runs"
    runs_before = sorted(runs_root.rglob("config.json"))
    assert runs_before
    from safetensors.torch import load_file, save_file

    w = load_file(str(folder / "sae_weights.safetensors"))
    save_file({**w, "b_enc": w["b_enc"] - 0.1}, str(folder / "sae_weights.safetensors"))
    r = _cli(db, "run", first["id"])
    assert r.exit_code == 2 and "Error:" in r.output and "sae_sha256" in r.output, r.output
    assert "not the one this experiment registered" in r.output
    assert sorted(runs_root.rglob("config.json")) == runs_before  # refused before anything was written
    r = _add(db, "logit_weights", folder, seeds="1")
    assert r.exit_code == 0, r.output
    second = json.loads(r.stdout)["experiment"]
    assert second["id"] != first["id"]
    assert second["attrs"]["spec"]["params"]["sae_sha256"] == _sha(folder / "sae_weights.safetensors") \
        != first["attrs"]["spec"]["params"]["sae_sha256"]


def test_mismatched_saes_are_refused_at_add(shared_sae, db, tmp_path):
    for extra, field in ((["sae.hook=blocks.1.hook_resid_post"], "sae.hook"), (["sae_seed=3"], "sae_seed"),
                         (["sae.steps=50"], "sae.steps")):
        r = _add(db, "logit_weights", shared_sae, *extra)
        assert r.exit_code == 2 and r.output.startswith("Error:") and f"param {field}" in r.output, r.output
    r = _add(db, "logit_weights", tmp_path / "nowhere")
    assert r.exit_code == 2 and "Error: param sae_path" in r.output and "nowhere" in r.output, r.output
    # a model whose width at the hook its config says: refused at add, without loading anything
    llama = tmp_path / "llama"
    llama.mkdir()
    (llama / "config.json").write_text(json.dumps({"model_type": "llama", "num_hidden_layers": 2, "hidden_size": 64,
                                                   "vocab_size": 100}))
    narrow = tmp_path / "narrow"
    import shutil

    shutil.copytree(shared_sae, narrow)
    raw = json.loads((narrow / "cfg.json").read_text())
    raw["metadata"]["hook_name"] = "blocks.0.hook_resid_post"
    (narrow / "cfg.json").write_text(json.dumps(raw))
    r = _cli(db, "experiment", "add", "--claim", CLAIM, "--kind", "ablation", "--model", f"hf:{llama}",
             "--param", f"sae_path={narrow}", "--param", "sae.hook=blocks.0.hook_resid_post")
    assert r.exit_code == 2 and "param sae_path" in r.output and "128-wide" in r.output and "gives 64" in r.output, \
        r.output


def test_width_mismatch_on_a_toy_model_is_refused_at_run_start(shared_sae, db, tmp_path):
    """toy: models' hook widths are known once built, so the run refuses a wrong-width SAE before measuring."""
    import shutil

    folder = tmp_path / "nohook"
    shutil.copytree(shared_sae, folder)
    raw = json.loads((folder / "cfg.json").read_text())
    raw["metadata"]["hook_name"] = None  # no hook named: only the width can tell
    (folder / "cfg.json").write_text(json.dumps(raw))
    r = _add(db, "logit_weights", folder, "sae.hook=blocks.0.hook_resid_post", seeds="1")
    assert r.exit_code == 0, r.output
    r = _cli(db, "run", json.loads(r.stdout)["experiment"]["id"])
    assert r.exit_code != 0
    assert "128-wide" in r.output and "gives 32" in r.output, r.output


def test_adding_with_an_sae_path_does_not_import_torch(shared_sae):
    import subprocess
    import sys

    code = ("import sys; from claimgraph.experiments.api import build_spec; "
            f"s = build_spec('logit_weights', params={{'sae_path': {str(shared_sae)!r}}}, model='toy:tiny'); "
            "assert s.params['sae_sha256'], s.params; assert 'torch' not in sys.modules, 'torch imported'")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
