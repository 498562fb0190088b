"""Loading an adapter onto the wrong base, or from a damaged directory, fails with a clear message."""

from __future__ import annotations

import json

import pytest

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
