"""SAELens both ways, with the real sae-lens: SAEs claimgraph trains and saves load with
`sae_lens.SAE.load_from_disk` and encode/decode as claimgraph's do; SAEs SAELens trains (its own SAETrainer, a few
steps on planted data) and saves load into claimgraph's classes and encode/decode as SAELens's do; provenance
digests are those of the files read."""
from __future__ import annotations

import hashlib
import json

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
