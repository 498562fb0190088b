"""``python -m stateft.export``: merged checkpoints in transformers' and mamba_ssm's layouts, read back by
transformers (its CPU path) and by stateft, and the refusals."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from omegaconf import OmegaConf
from transformers import AutoModelForCausalLM, AutoTokenizer

from stateft.adapters import save_adapter
from stateft.app.run_config import our_config
from stateft.export import RECORD_NAME, main
from stateft.methods import apply_method
from stateft.models.config import MambaConfig
from stateft.models.loading import build_model, load_pretrained, model_from_config, save_pretrained
from stateft.tokenizer import load_tokenizer
from tests.export.helpers import base_model, logits, make_adapter, rel_err

CASES = [("mamba1", "lora"), ("mamba1", "bitfit"), ("mamba1", "full_s6"), ("mamba2", "lora"), ("mamba2", "bitfit")]
CASES += [("mamba2", "full_ssd")]
UNFOLDABLE = ["state_offset_h", "state_offset_y", "init_state", "prefix", "prompt", "additional_scan"]


def run(capsys, *args) -> tuple[int, str]:
    code = main([str(a) for a in args])
    return code, capsys.readouterr().err


@pytest.fixture(scope="module", params=CASES, ids=[f"{a}-{m}" for a, m in CASES])
def exported(request, tmp_path_factory):
    """An adapter, its model's logits, and its export in both layouts."""
    arch, name = request.param
    root = tmp_path_factory.mktemp(f"{arch}-{name}")
    model = make_adapter(root / "adapter", arch, name)
    for layout in ("transformers", "mamba_ssm"):
        assert main([str(root / "adapter"), str(root / layout), "--layout", layout]) == 0
    return arch, root, logits(model)


def test_transformers_reads_the_export_with_the_adapter_models_logits(exported):
    arch, root, want = exported
    hf = AutoModelForCausalLM.from_pretrained(root / "transformers").eval()
    assert type(hf).__name__ == {"mamba1": "MambaForCausalLM", "mamba2": "Mamba2ForCausalLM"}[arch]
    got = logits(hf)
    assert got.shape == want.shape  # the padded vocabulary, stored unpadded
    assert rel_err(got, want) < 1e-4


def test_stateft_reads_both_layouts_back_with_the_same_logits(exported):
    arch, root, want = exported
    from_hf = load_pretrained(str(root / "transformers")).eval()
    from_ssm = load_pretrained(str(root / "mamba_ssm")).eval()
    assert torch.equal(logits(from_hf), logits(from_ssm))
    assert rel_err(logits(from_ssm), want) < 1e-5
    assert rel_err(logits(from_ssm), logits(base_model(arch))) > 1e-3  # the adapter is in the weights


def test_the_export_names_its_tokenizer_and_origin(exported):
    arch, root, _ = exported
    raw = json.loads((root / "transformers" / "config.json").read_text())
    assert raw["model_type"] == {"mamba1": "mamba", "mamba2": "mamba2"}[arch]
    assert raw["tokenizer"] == "EleutherAI/gpt-neox-20b"
    assert raw["eos_token_id"] == 0
    ssm = json.loads((root / "mamba_ssm" / "config.json").read_text())
    assert {"d_model", "n_layer", "vocab_size", "ssm_cfg"} <= set(ssm)
    assert "model_type" not in ssm
    # the transformers export carries the tokenizer itself: AutoTokenizer reads it offline, as stateft tokenises
    tokenizer = AutoTokenizer.from_pretrained(root / "transformers")
    text = "SELECT count(*) FROM singer -- 歌手"
    assert tokenizer(text).input_ids == load_tokenizer().encode(text)
    assert tokenizer.eos_token_id == 0
    record = json.loads((root / "mamba_ssm" / RECORD_NAME).read_text())
    assert record["tokenizer"] == "EleutherAI/gpt-neox-20b"
    assert record["layout"] == "mamba_ssm"
    assert record["base_model"] == {"mamba1": "mamba-tiny", "mamba2": "mamba2-tiny"}[arch]


def test_bfloat16_export_keeps_the_ssm_parameters_in_fp32(tmp_path):
    want = logits(make_adapter(tmp_path / "adapter", "mamba1", "lora"))
    assert main([str(tmp_path / "adapter"), str(tmp_path / "out"), "--layout", "mamba_ssm", "--dtype", "bfloat16"]) == 0
    loaded = load_pretrained(str(tmp_path / "out"), dtype=torch.bfloat16).eval()
    mixer = loaded.backbone.layers[0].mixer
    assert mixer.x_proj.weight.dtype == torch.bfloat16
    assert mixer.A_log.dtype == torch.float32
    assert rel_err(logits(loaded), want) < 5e-2


def test_base_named_on_the_command_line(tmp_path, capsys):
    want = logits(make_adapter(tmp_path / "adapter", "mamba1", "full_s6"))
    save_pretrained(base_model("mamba1"), tmp_path / "base")  # the same base as a checkpoint folder
    for base, out in (("mamba-tiny", "named"), (tmp_path / "base", "folder")):
        assert run(capsys, tmp_path / "adapter", tmp_path / out, "--layout", "mamba_ssm", "--base", base)[0] == 0
        assert rel_err(logits(load_pretrained(str(tmp_path / out))), want) < 1e-5
    code, err = run(capsys, tmp_path / "adapter", tmp_path / "other", "--layout", "mamba_ssm", "--base", "mamba2-tiny")
    assert code == 2
    assert err.startswith("error: ")
    assert err.count("\n") == 1
    assert "another base model" in err
    assert not (tmp_path / "other").exists()


@pytest.mark.parametrize("name", UNFOLDABLE)
def test_unfoldable_methods_are_refused_in_one_line(name, tmp_path, capsys):
    make_adapter(tmp_path / "adapter", "mamba1", name)
    code, err = run(capsys, tmp_path / "adapter", tmp_path / "out", "--layout", "transformers")
    assert code == 2
    assert err.startswith(f"error: method {name} cannot be merged")
    assert err.count("\n") == 1
    assert "share it as an adapter" in err
    assert not (tmp_path / "out").exists()


def test_a_model_transformers_cannot_express_is_refused(tmp_path, capsys):
    make_adapter(tmp_path / "adapter", "mamba2", "bitfit")
    config = MambaConfig(**{**base_model("mamba2").config.to_dict(), "rmsnorm": False})
    save_pretrained(build_model(config), tmp_path / "base")
    adapter, out, base = tmp_path / "adapter", tmp_path / "out", tmp_path / "base"
    code, err = run(capsys, adapter, out, "--layout", "transformers", "--base", base)
    assert code == 2
    assert "rmsnorm=False" in err
    assert "mamba_ssm layout" in err
    assert err.count("\n") == 1
    assert run(capsys, adapter, out, "--layout", "mamba_ssm", "--base", base)[0] == 0


def test_bad_folders_are_refused_in_one_line(tmp_path, capsys):
    make_adapter(tmp_path / "adapter", "mamba1", "bitfit")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("mine")
    cases = [
        ((tmp_path / "missing", tmp_path / "out"), "not found"),
        ((tmp_path, tmp_path / "out"), "not an adapter directory"),
        ((tmp_path / "adapter", tmp_path / "full"), "not empty"),
        ((tmp_path / "adapter", tmp_path / "adapter"), "holds the adapter"),
        ((tmp_path / "adapter", tmp_path / "out", "--base", "no-such-model"), "neither a model config"),
    ]
    for args, words in cases:
        code, err = run(capsys, *args[:2], "--layout", "mamba_ssm", *args[2:])
        assert code == 2, err
        assert err.startswith("error: ")
        assert err.count("\n") == 1
        assert words in err, err
    assert (tmp_path / "full" / "notes.txt").read_text() == "mine"
    assert not (tmp_path / "out").exists()


def test_an_earlier_export_is_replaced(tmp_path, capsys):
    make_adapter(tmp_path / "adapter", "mamba1", "bitfit")
    for layout in ("transformers", "mamba_ssm"):
        assert run(capsys, tmp_path / "adapter", tmp_path / "out", "--layout", layout)[0] == 0
    assert json.loads((tmp_path / "out" / RECORD_NAME).read_text())["layout"] == "mamba_ssm"
    assert "model_type" not in json.loads((tmp_path / "out" / "config.json").read_text())


def test_the_module_runs_as_a_command(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "stateft.export", str(tmp_path / "missing"), str(tmp_path / "out"), "--layout", "peft"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.startswith("error: adapter folder")
    assert done.stderr.count("\n") == 1


def test_a_transformer_adapter_is_sent_to_peft(tmp_path, capsys):
    node = {**our_config("model", "pythia-tiny"), "dtype": "float32"}
    model = model_from_config(OmegaConf.create(node))
    apply_method("lora", model, {"name": "lora", "r": 4})
    save_adapter(tmp_path / "adapter", model, base_model=node)
    code, err = run(capsys, tmp_path / "adapter", tmp_path / "out", "--layout", "transformers")
    assert code == 2
    assert err.startswith("error: a gpt_neox adapter is in peft's format already")
    assert err.count("\n") == 1


def test_a_vision_adapter_is_refused_in_one_line(tmp_path, capsys):
    node = {**our_config("model", "vim-test"), "dtype": "float32"}
    model = model_from_config(OmegaConf.create(node))
    apply_method("lora", model, {"name": "lora", "r": 4})
    save_adapter(tmp_path / "adapter", model, base_model=node)
    for layout in ("transformers", "peft"):
        code, err = run(capsys, tmp_path / "adapter", tmp_path / "out", "--layout", layout)
        assert code == 2
        assert err.startswith("error: a vim adapter (an image classifier) has no transformers, mamba_ssm or peft")
        assert err.count("\n") == 1
