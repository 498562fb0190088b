"""stateft's methods on Vim: each attaches to both scan directions of every layer, trains the task head too, leaves
the output unchanged at init where its paper says so, and round-trips through an adapter."""

from __future__ import annotations

import pytest
import torch

from stateft.adapters import load_adapter, save_adapter
from stateft.methods import apply_method
from stateft.methods.configs import methods_for, validate_method_cfg
from stateft.vision.loading import build_vim
from tests.vision.conftest import tiny_config

VIM_METHODS = methods_for("vim")
MODEL_LEVEL = ("prompt",)  # the slot on the model, not on the mixers
DIRECTIONS = ("forward_scan", "backward_scan")
UNCHANGED_AT_INIT = ("lora", "additional_scan", "init_state", "state_offset_h", "state_offset_y", "full", "partial")


def _model():
    model = build_vim(tiny_config(drop_path_rate=0.0), seed=0, backend="ref")
    torch.nn.init.normal_(model.head.weight)
    return model


def test_the_vim_methods():
    expected = {"full", "partial", "lora", "prompt", "prefix", "additional_scan", "init_state"}
    expected |= {"state_offset_h", "state_offset_y"}
    assert expected <= set(VIM_METHODS)


@pytest.mark.parametrize("name", VIM_METHODS)
def test_a_method_tunes_both_directions_and_the_head(name):
    model = _model()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        before = model.eval()(x)
    names = apply_method(name, model, validate_method_cfg({"name": name}))
    assert {"head.weight", "head.bias"} <= set(names)
    groups = ["prompt."] if name in MODEL_LEVEL else [f"layers.{i}.mixer.{d}." for i in range(2) for d in DIRECTIONS]
    for group in groups:
        assert any(n.startswith(group) for n in names), group
    with torch.no_grad():
        after = model(x)
    if name in UNCHANGED_AT_INIT:
        torch.testing.assert_close(after, before)
    # every tensor of the method gets a gradient from the classification loss (zero-init factors included)
    model.train()
    loss = torch.nn.functional.cross_entropy(model(x), torch.tensor([0, 3]))
    loss.backward()
    params = dict(model.named_parameters())
    for group in groups:
        grads = [params[n].grad for n in names if n.startswith(group)]
        assert any(g is not None and g.abs().sum() > 0 for g in grads), group


@pytest.mark.parametrize("name", VIM_METHODS)
def test_an_adapter_round_trips(tmp_path, name):
    model = _model()
    names = apply_method(name, model, validate_method_cfg({"name": name}))
    with torch.no_grad():
        params = dict(model.named_parameters())
        for n in names:
            params[n].add_(0.1 * torch.randn_like(params[n]))
    save_adapter(tmp_path / "adapter", model, model.peft_config, names, {"name": "vim-test"})
    fresh = _model()
    assert sorted(load_adapter(tmp_path / "adapter", fresh)) == sorted(names)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(fresh.eval()(x), model.eval()(x))


def test_prefix_leads_each_directions_own_scan():
    """Affix on a bidirectional block: the forward direction's prefix precedes the first patch, the backward
    direction's the last one, so each reaches only the positions its own scan visits after it: a forward-only
    prefix leaves the backward scan's output unchanged and the other way round."""
    model = _model().eval()
    apply_method("prefix", model, validate_method_cfg({"name": "prefix"}))
    mixer = model.layers[0].mixer
    xz = torch.randn(1, 17, 2 * mixer.forward_scan.d_inner)
    with torch.no_grad():
        y_b = mixer.backward_scan(xz.flip(1))
        y_f = mixer.forward_scan(xz)
        prefix_f = mixer.forward_scan.prefix
        mixer.forward_scan.prefix = None
        torch.testing.assert_close(mixer.backward_scan(xz.flip(1)), y_b)
        assert not torch.allclose(mixer.forward_scan(xz), y_f)
        mixer.forward_scan.prefix = prefix_f


def test_a_composition_trains_its_parts_at_their_rates_and_the_head_at_the_default():
    from stateft.methods.compose import lr_groups

    model = _model()
    cfg = validate_method_cfg(
        {"name": "compose", "parts": ["lora", "prefix"], "lora": {"lr": 1e-3}, "prefix": {"lr": None}}
    )
    names = apply_method("compose", model, cfg)
    groups = lr_groups(model, names, 5e-4)
    assert [lr for lr, _ in groups] == [1e-3, 5e-4, 5e-4]  # lora, prefix (its lr null: the default), the head
    assert groups[-1][1] == ["head.bias", "head.weight"]
    assert sorted(n for _, group in groups for n in group) == sorted(names)
    assert all(".lora_A." in n or ".lora_B." in n for n in groups[0][1])


@pytest.mark.parametrize("targets", [["in_proj", "out_proj"], ["in_proj.x"], ["in_proj.z", "x_proj", "conv1d"]])
def test_lora_on_the_shared_projections(targets):
    """MambaPEFT's LoRA on Vim's in_proj / out_proj (shared by both directions) and on their row blocks: one update
    per block, the output unchanged at init, every factor reached by the loss, the x half being in_proj's first rows."""
    model = _model()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        before = model.eval()(x)
    names = apply_method("lora", model, validate_method_cfg({"name": "lora", "r": 4, "target_modules": targets}))
    for i in range(2):
        for target in targets:
            linear = target.partition(".")[0]
            where = (
                [f"layers.{i}.mixer.{linear}."]
                if linear in ("in_proj", "out_proj")
                else [f"layers.{i}.mixer.{d}.{linear}" for d in DIRECTIONS]
            )
            for prefix in where:
                assert any(n.startswith(prefix) for n in names), prefix
    with torch.no_grad():
        torch.testing.assert_close(model(x), before)
    model.train()
    torch.nn.functional.cross_entropy(model(x), torch.tensor([0, 3])).backward()
    params = dict(model.named_parameters())
    assert all(params[n].grad is not None for n in names if "lora_" in n)
    if targets == ["in_proj.x"]:
        layer = model.layers[0].mixer.in_proj
        assert list(layer.blocks.values()) == [(0, model.layers[0].mixer.d_inner)]
