"""``--layout peft``: a stateft LoRA in peft's format, loaded by peft onto transformers' Mamba of the same base."""

from __future__ import annotations

import json

import pytest
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM

from stateft.export import main, write_transformers
from tests.export.helpers import base_model, logits, make_adapter, rel_err


def export_peft(tmp_path, capsys, arch: str, scale: float = 0.3, **extra) -> tuple:
    """(stateft's adapter-model logits, peft's model on transformers' base, export's stderr)."""
    want = logits(make_adapter(tmp_path / "adapter", arch, "lora", scale, **extra))
    assert main([str(tmp_path / "adapter"), str(tmp_path / "peft"), "--layout", "peft"]) == 0
    err = capsys.readouterr().err
    write_transformers(base_model(arch), tmp_path / "base")
    base = AutoModelForCausalLM.from_pretrained(tmp_path / "base").eval()
    assert rel_err(logits(base), want) > 1e-3  # the LoRA matters
    return want, PeftModel.from_pretrained(base, tmp_path / "peft").eval(), err


@pytest.mark.parametrize(
    ("arch", "targets"),
    [("mamba1", ["x_proj.dt", "x_proj.B", "x_proj.C", "in_proj"]), ("mamba1", ["x_proj.B"]), ("mamba2", ["in_proj"])],
    ids=["mamba1-x_proj-blocks-in_proj", "mamba1-one-block", "mamba2-in_proj"],
)
def test_peft_gives_the_adapter_models_logits(arch, targets, tmp_path, capsys):
    want, peft_model, err = export_peft(tmp_path, capsys, arch, target_modules=targets)
    assert "warning" not in err
    assert rel_err(logits(peft_model), want) < 1e-4
    assert rel_err(logits(peft_model.merge_and_unload()), want) < 1e-4
    config = json.loads((tmp_path / "peft" / "adapter_config.json").read_text())
    if len(targets) > 1 and arch == "mamba1":  # x_proj's three blocks: one LoRA of rank 3 r, alpha 3 alpha
        assert config["rank_pattern"] == {"x_proj": 3 * config["r"]}
        assert config["alpha_pattern"] == {"x_proj": 3 * config["lora_alpha"]}


def test_dt_proj_takes_effect_in_transformers_once_merged(tmp_path, capsys):
    """transformers' MambaMixer multiplies by dt_proj.weight itself: the reason for the export's warning line."""
    want, peft_model, err = export_peft(tmp_path, capsys, "mamba1", scale=2.0, target_modules=["dt_proj"])
    assert err.count("\n") == 1
    assert err.startswith("warning: ")
    assert "merge_and_unload" in err
    assert rel_err(logits(peft_model), want) > 1e-4
    assert rel_err(logits(peft_model.merge_and_unload()), want) < 1e-4


def test_out_proj_is_refused_as_peft_refuses_it(tmp_path, capsys):
    make_adapter(tmp_path / "adapter", "mamba2", "lora")  # Mamba-2's default targets: in_proj and out_proj
    assert main([str(tmp_path / "adapter"), str(tmp_path / "peft"), "--layout", "peft"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: peft refuses LoRA on out_proj")
    assert err.count("\n") == 1
    assert not (tmp_path / "peft").exists()
    write_transformers(base_model("mamba2"), tmp_path / "base")
    base = AutoModelForCausalLM.from_pretrained(tmp_path / "base")
    with pytest.raises(ValueError, match="out_proj"):  # what the refusal stands for
        get_peft_model(base, LoraConfig(r=4, target_modules=["out_proj"]))


def test_other_methods_are_not_exported_as_peft(tmp_path, capsys):
    make_adapter(tmp_path / "adapter", "mamba1", "bitfit")
    assert main([str(tmp_path / "adapter"), str(tmp_path / "peft"), "--layout", "peft"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --layout peft exports LoRA adapters")
    assert err.count("\n") == 1
