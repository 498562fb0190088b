"""Loading an adapter onto the wrong base, or from a damaged directory, fails with a clear message."""

from __future__ import annotations

import json

import pytest
import torch

from stateft.adapters import CONFIG_NAME, WEIGHTS_NAME, load_adapter, save_adapter
from stateft.errors import UserError
from stateft.methods import apply_method
from stateft.models.loading import build_model
from tests.conftest import TINY


@pytest.fixture
def adapter_dir(tmp_path):
    model = build_model(TINY)
    names = apply_method("state_offset_h", model, {"name": "state_offset_h"})
    return save_adapter(tmp_path / "adapter", model, {"name": "state_offset_h"}, names)


def test_other_size_is_refused(adapter_dir):
    other = build_model(TINY.__class__(**{**TINY.to_dict(), "d_model": 24}))
    with pytest.raises(UserError, match="another base model.*d_model"):
        load_adapter(adapter_dir, other)


def test_other_architecture_is_refused(adapter_dir):
    other = build_model(TINY.__class__(**{**TINY.to_dict(), "arch": "mamba2", "headdim": 8}))
    with pytest.raises(UserError, match="arch"):
        load_adapter(adapter_dir, other)


def test_truncated_weights_are_refused(adapter_dir):
    data = (adapter_dir / WEIGHTS_NAME).read_bytes()
    (adapter_dir / WEIGHTS_NAME).write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="corrupt"):
        load_adapter(adapter_dir, build_model(TINY))


def test_corrupt_config_is_refused(adapter_dir):
    (adapter_dir / CONFIG_NAME).write_text("{not json")
    with pytest.raises(UserError, match="corrupt"):
        load_adapter(adapter_dir, build_model(TINY))


def test_mismatched_keys_are_never_ignored(adapter_dir):
    meta = json.loads((adapter_dir / CONFIG_NAME).read_text())
    meta["method"] = {"name": "state_offset_y", "lr": 1e-3}  # the file holds h', the config says y'
    (adapter_dir / CONFIG_NAME).write_text(json.dumps(meta))
    with pytest.raises(UserError, match="does not match method state_offset_y"):
        load_adapter(adapter_dir, build_model(TINY))


def test_not_an_adapter_directory(tmp_path):
    with pytest.raises(UserError, match="not an adapter directory"):
        load_adapter(tmp_path, build_model(TINY))


def test_save_is_atomic_and_replaces(adapter_dir):
    model = build_model(TINY)
    names = apply_method("state_offset_y", model, {"name": "state_offset_y"})
    save_adapter(adapter_dir, model, None, names)
    assert json.loads((adapter_dir / CONFIG_NAME).read_text())["method"]["name"] == "state_offset_y"
    leftovers = [p.name for p in adapter_dir.parent.iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_a_refused_adapter_leaves_the_model_untouched(adapter_dir):
    data = bytearray((adapter_dir / WEIGHTS_NAME).read_bytes())
    data[-1] ^= 0xFF
    (adapter_dir / WEIGHTS_NAME).write_bytes(bytes(data))
    model = build_model(TINY)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(UserError, match="digest"):
        load_adapter(adapter_dir, model)
    assert not hasattr(model, "peft_config")  # the method was never applied
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_read_adapter_checks_everything_without_a_model(adapter_dir):
    from stateft.adapters import read_adapter

    verified = read_adapter(adapter_dir, TINY)
    assert sorted(verified.tensors) == sorted(json.loads((adapter_dir / CONFIG_NAME).read_text())["trainable"])
    model = build_model(TINY)
    assert verified.apply(model) == sorted(verified.tensors)
    with pytest.raises(UserError, match="another base model"):
        read_adapter(adapter_dir, TINY.__class__(**{**TINY.to_dict(), "d_state": 8}))


def test_edited_method_without_digest_still_mismatches(adapter_dir):
    """An old adapter (no digest) whose config names another method: the tensors do not fit it."""
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(adapter_dir / WEIGHTS_NAME))
    save_file(tensors, str(adapter_dir / WEIGHTS_NAME), metadata={"format": "pt"})
    meta = json.loads((adapter_dir / CONFIG_NAME).read_text())
    meta["method"] = {"name": "state_offset_h", "rank": 2}  # U, V instead of h
    meta.pop("trainable")
    (adapter_dir / CONFIG_NAME).write_text(json.dumps(meta))
    with pytest.raises(UserError, match="does not match method state_offset_h"):
        load_adapter(adapter_dir, build_model(TINY))
