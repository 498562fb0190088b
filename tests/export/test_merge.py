"""Merging (``stateft.merge``): every method with a fold gives a plain model with the adapter model's outputs; every
method without one is refused in one line naming the slot it fills."""

from __future__ import annotations

import pytest
import torch

from stateft.errors import UserError
from stateft.merge import SLOT_REASONS, merge
from stateft.methods import METHODS
from stateft.models.loading import build_model
from tests.export.helpers import rel_err
from tests.methods.test_methods import CASES, CONFIGS, IDS, batch, perturb, prepared

FOLDABLE = [(c, i) for c, i in zip(CASES, IDS) if METHODS[c[1]].fold is not None]
UNFOLDABLE = [(c, i) for c, i in zip(CASES, IDS) if METHODS[c[1]].fold is None]


def test_the_foldable_methods_are_those_that_change_only_weights():
    foldable = {name for name, spec in METHODS.items() if spec.fold is not None}
    assert foldable == {"lora", "bitfit", "full", "full_s6", "full_ssd", "sdt", "sdlora", "partial"}


@pytest.mark.parametrize(("arch", "name", "extra"), [c for c, _ in FOLDABLE], ids=[i for _, i in FOLDABLE])
def test_merged_model_equals_the_adapter_model(arch, name, extra):
    model, names = prepared(arch, name, extra)
    perturb(model, names)  # LoRA's B, sdt's deltas... all non-zero
    model.eval()
    ids = batch(3)["input_ids"]
    with torch.no_grad():
        adapted = model(ids)
    assert rel_err(adapted, build_model(CONFIGS[arch], seed=0).eval()(ids).detach()) > 1e-3  # the adapter matters
    merge(model)
    bare = build_model(CONFIGS[arch], device="meta")
    assert {k: v.shape for k, v in model.state_dict().items()} == {k: v.shape for k, v in bare.state_dict().items()}
    assert type(model.backbone.layers[0].mixer) is type(bare.backbone.layers[0].mixer)  # no parametrisation class
    assert not any(p.requires_grad for p in model.parameters())
    with torch.no_grad():
        merged = model(ids)
    assert rel_err(merged, adapted) < 1e-5


def test_lora_fold_is_w_plus_scaled_b_a():
    model, names = prepared("mamba1", "lora", {})
    perturb(model, names)
    x_proj = model.backbone.layers[0].mixer.x_proj
    R, N = x_proj.blocks["dt"][1], x_proj.blocks["B"][1] - x_proj.blocks["B"][0]
    W = x_proj.base.weight.detach().clone()
    want = W.clone()
    for key, (start, end) in x_proj.blocks.items():
        want[start:end] += x_proj.scaling * x_proj.lora_B[key].detach() @ x_proj.lora_A[key].detach()
    merge(model)
    folded = model.backbone.layers[0].mixer.x_proj.weight
    torch.testing.assert_close(folded, want, rtol=0, atol=1e-6)
    assert not torch.equal(folded[: R + 2 * N], W[: R + 2 * N])


@pytest.mark.parametrize(("arch", "name", "extra"), [c for c, _ in UNFOLDABLE], ids=[i for _, i in UNFOLDABLE])
def test_unfoldable_methods_are_refused_naming_their_slot(arch, name, extra):
    model, names = prepared(arch, name, extra)
    with pytest.raises(UserError) as err:
        merge(model)
    message = str(err.value)
    assert "\n" not in message
    assert f"method {name} cannot be merged" in message
    assert "share it as an adapter" in message
    assert any(f"{slot}: {why}" in message for slot, why in SLOT_REASONS.items()), message
    assert model.peft_config["name"] == name  # refused before anything changed


def test_merge_needs_an_applied_method(tiny_model):
    with pytest.raises(ValueError, match="apply_method"):
        merge(tiny_model)
