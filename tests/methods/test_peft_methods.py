"""HF peft's LoRA, prefix and prompt tuning on Pythia behind stateft's method names: counts, option mapping,
refusals of the Mamba-only methods, and adapters in peft's format (save -> load -> identical logits)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from stateft.app.checks import compose_checked, validate_cfg
from stateft.app.training import dry_run
from stateft.errors import UserError
from stateft.methods import METHODS, apply_method
from stateft.methods.configs import methods_for, validate_method_cfg
from stateft.methods.peft_adapters import (
    CONFIG_NAME,
    RECORD_NAME,
    WEIGHTS_NAME,
    load_peft_adapter,
    read_peft_adapter_config,
    save_peft_adapter,
)
from stateft.methods.peft_methods import peft_config_for
from stateft.models.pythia import PythiaConfig
from tests.models.tiny_pythia import PEFT, TINY_PYTHIA, tiny_pythia

# pythia-160m: lora r 8 on query_key_value: 12 x (768 x 8 + 8 x 2304); prefix P=3: 12 x 2 x 768 x 3; prompt 16 x 768
COUNTS_160M = {"lora": 294_912, "prefix": 55_296, "prompt": 12_288}
STATE_METHODS = [m for m in METHODS if "gpt_neox" not in METHODS[m].archs]


def minimal_cfg(method: str) -> dict:
    """The smallest valid config of ``method`` (a composition needs its parts)."""
    return {"name": method, "parts": ["lora"]} if method == "compose" else {"name": method}


@pytest.mark.parametrize("method", PEFT)
def test_dry_run_prints_peft_own_count(method, capsys):
    """``train.py model=pythia-160m method=<m> dry_run=true`` prints what peft's print_trainable_parameters prints for
    the same model and method (both on the meta device: no download)."""
    from peft import get_peft_model
    from transformers import GPTNeoXForCausalLM

    cfg = compose_checked("train", ["model=pythia-160m", f"method={method}", "dataset=spider", "dry_run=true"])
    counts = dry_run(cfg)
    ours = capsys.readouterr().out.strip().splitlines()[-1]
    config = PythiaConfig(d_model=768, n_layer=12, n_head=12)
    with torch.device("meta"):
        peft_model = get_peft_model(
            GPTNeoXForCausalLM(config.to_hf()), peft_config_for(validate_method_cfg(cfg.method))
        )
    peft_model.print_trainable_parameters()
    assert ours == capsys.readouterr().out.strip()
    assert (counts["params/trainable"], counts["params/total"]) == peft_model.get_nb_trainable_parameters()
    assert counts["params/trainable"] == COUNTS_160M[method]


def test_options_map_to_peft_configs():
    lora = peft_config_for(validate_method_cfg({"name": "lora"}))
    assert (lora.r, lora.lora_alpha, lora.lora_dropout, set(lora.target_modules)) == (8, 8, 0.1, {"query_key_value"})
    lora = peft_config_for(
        validate_method_cfg({"name": "lora", "r": 4, "alpha": 16, "dropout": 0.0, "target_modules": ["dense"]})
    )
    assert (lora.r, lora.lora_alpha, lora.lora_dropout, set(lora.target_modules)) == (4, 16, 0.0, {"dense"})
    prefix = peft_config_for(validate_method_cfg({"name": "prefix", "num_virtual_tokens": 5}))
    assert (prefix.peft_type.value, prefix.num_virtual_tokens, prefix.prefix_projection) == ("PREFIX_TUNING", 5, False)
    for init, peft_init in (("vocab", "SAMPLE_VOCAB"), ("normal", "RANDOM")):
        prompt = peft_config_for(validate_method_cfg({"name": "prompt", "num_virtual_tokens": 7, "init": init}))
        assert (prompt.num_virtual_tokens, prompt.prompt_tuning_init) == (7, peft_init)


def test_lora_targets_must_be_gpt_neox_linears():
    with pytest.raises(NotImplementedError, match="query_key_value, dense, dense_h_to_4h, dense_4h_to_h"):
        apply_method("lora", tiny_pythia(), {"name": "lora", "target_modules": ["x_proj"]})


@pytest.mark.parametrize("method", STATE_METHODS)
def test_state_methods_are_refused_in_one_line(method):
    with pytest.raises(NotImplementedError) as info:
        apply_method(method, tiny_pythia(), minimal_cfg(method))
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{method} applies to ")
    assert message.endswith(f"the methods for gpt_neox: {', '.join(PEFT)}")


def test_every_method_for_a_transformer_maps_to_peft():
    """The registry's Transformer methods are exactly the ones peft_methods can map (and the README's three)."""
    assert sorted(PEFT) == ["lora", "prefix", "prompt"]
    for method in PEFT:
        assert peft_config_for(validate_method_cfg({"name": method})) is not None
    for method in STATE_METHODS:
        with pytest.raises(NotImplementedError, match="no HF peft counterpart"):
            peft_config_for(validate_method_cfg(minimal_cfg(method)))


def test_the_app_refuses_a_state_method_on_pythia_with_one_error_line():
    cfg = compose_checked("train", ["model=pythia-160m", "method=state_offset_h", "dry_run=true"])
    for check in (validate_cfg, dry_run):  # at start-up, and where the method is applied
        with pytest.raises(UserError) as info:
            check(cfg)
        assert str(info.value).startswith("method state_offset_h on pythia-160m: ")
        assert str(info.value).endswith(f"the methods for gpt_neox: {', '.join(methods_for('gpt_neox'))}")
        assert "\n" not in str(info.value)


@pytest.mark.parametrize("method", PEFT)
def test_save_then_load_gives_identical_logits_in_peft_format(method, tmp_path):
    """The adapter directory holds peft's files (only the adapter tensors) and stateft's record; loading it into a
    fresh base gives the same logits, and so does peft's own PeftModel.from_pretrained."""
    from peft import PeftModel

    model = tiny_pythia(method)
    ids = torch.tensor([[5, 6, 7, 8, 9, 10]])
    with torch.no_grad():
        reference = model(ids)
    directory = save_peft_adapter(tmp_path / "adapter", model, base_model={"name": "tiny"}, extra_files={"x.json": 1})
    assert sorted(p.name for p in directory.iterdir()) == sorted([CONFIG_NAME, WEIGHTS_NAME, RECORD_NAME, "x.json"])
    tensors = load_file(directory / WEIGHTS_NAME)
    assert sum(t.numel() for t in tensors.values()) == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert json.loads((directory / CONFIG_NAME).read_text())["peft_type"] in ("LORA", "PREFIX_TUNING", "PROMPT_TUNING")
    assert read_peft_adapter_config(directory)["method"]["name"] == method

    fresh = tiny_pythia()
    names = load_peft_adapter(directory, fresh)
    assert names == model.peft_trainable
    with torch.no_grad():
        assert torch.equal(fresh.eval()(ids), reference)
        theirs = PeftModel.from_pretrained(tiny_pythia().hf_model, str(directory)).eval()(input_ids=ids).logits
    torch.testing.assert_close(theirs[:, -ids.shape[1] :], reference)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("flip_weights", "not the file saved with it"),
        ("edit_config", "not the file saved with it"),
        ("state_method", "not one of the peft methods"),
        ("other_model", "trained on another base model"),
    ],
)
def test_a_damaged_or_foreign_adapter_is_refused(damage, message, tmp_path):
    directory = save_peft_adapter(tmp_path / "adapter", tiny_pythia("lora"))
    record = json.loads((directory / RECORD_NAME).read_text())
    if damage == "flip_weights":
        data = bytearray((directory / WEIGHTS_NAME).read_bytes())
        data[-1] ^= 0x01
        (directory / WEIGHTS_NAME).write_bytes(bytes(data))
    elif damage == "edit_config":
        config = json.loads((directory / CONFIG_NAME).read_text())
        config["target_modules"] = ["dense"]
        (directory / CONFIG_NAME).write_text(json.dumps(config))
    elif damage == "state_method":
        record["method"] = {"name": "state_offset_h"}
        (directory / RECORD_NAME).write_text(json.dumps(record))
    else:
        record["architecture"]["n_layer"] = 3
        (directory / RECORD_NAME).write_text(json.dumps(record))
    with pytest.raises(UserError, match=message):
        load_peft_adapter(directory, tiny_pythia())


def test_saving_needs_an_applied_method(tmp_path):
    with pytest.raises(ValueError, match="apply_method"):
        save_peft_adapter(tmp_path / "adapter", tiny_pythia())


def test_tiny_config_is_the_test_models():
    assert tiny_pythia().config == TINY_PYTHIA
