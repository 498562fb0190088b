"""MambaPEFT's variants of the existing methods, each against an independent computation: LoRA on in_proj's x or z
half, prompt tuning through its MLP, the outer prefix, partial tuning."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from stateft.errors import UserError
from stateft.methods import apply_method
from stateft.methods.lora import merged_weight
from stateft.methods.prefix import Prefix
from stateft.methods.prompt import PromptEmbedding
from stateft.models.loading import build_model
from tests.methods.test_methods import CONFIGS, batch, method_cfg, perturb

# in_proj's rows: Mamba-1 [x, z]; Mamba-2 [z, x, B, C, dt]
HALVES = {("mamba1", "x"): 0, ("mamba1", "z"): 1, ("mamba2", "z"): 0, ("mamba2", "x"): 1}


@pytest.mark.parametrize(("arch", "half"), list(HALVES), ids=[f"{a}-{h}" for a, h in HALVES])
def test_lora_on_one_half_of_in_proj_changes_only_its_rows(arch, half):
    model = build_model(CONFIGS[arch], seed=0)
    names = apply_method("lora", model, method_cfg("lora", target_modules=[f"in_proj.{half}"]))
    perturb(model, names)
    layer = model.backbone.layers[0].mixer.in_proj
    E = model.backbone.layers[0].mixer.d_inner
    start = HALVES[arch, half] * E
    changed = (merged_weight(layer) != layer.base.weight).any(dim=1).nonzero().flatten()
    assert changed.min() >= start
    assert changed.max() < start + E
    assert len(changed) == E  # every row of the half moves (B perturbed everywhere)


@pytest.mark.parametrize("arch", list(CONFIGS))
def test_lora_on_the_conv_is_a_low_rank_delta_of_its_kernel(arch):
    model = build_model(CONFIGS[arch], seed=0)
    conv = model.backbone.layers[0].mixer.conv1d
    W = conv.weight.detach().clone()  # (C, 1, K)
    names = apply_method("lora", model, method_cfg("lora", target_modules=["conv1d"], r=2, alpha=3.0))
    perturb(model, names)
    delta = conv.parametrizations.weight[0]
    assert tuple(delta.lora_A.shape) == (2, W.shape[2])
    assert tuple(delta.lora_B.shape) == (W.shape[0], 2)
    want = W[:, 0, :] + 1.5 * delta.lora_B.detach() @ delta.lora_A.detach()
    torch.testing.assert_close(conv.weight.detach()[:, 0, :], want, rtol=0, atol=1e-6)
    assert torch.equal(conv.parametrizations.weight.original, W)  # the pretrained kernel stays frozen as it was


def test_lora_half_and_whole_in_proj_overlap_is_refused():
    model = build_model(CONFIGS["mamba1"], seed=0)
    with pytest.raises(UserError, match="lora targets overlap: in_proj"):
        apply_method("lora", model, method_cfg("lora", target_modules=["in_proj", "in_proj.x"]))


@pytest.mark.parametrize("arch", list(CONFIGS))
def test_reparametrised_prompt_is_its_mlp_output(arch):
    model = build_model(CONFIGS[arch], seed=0).eval()
    names = apply_method("prompt", model, method_cfg("prompt", reparam=True))
    perturb(model, names)
    p = model.prompt
    d = model.config.d_model
    assert sorted(names) == sorted(f"prompt.{n}" for n in ("tokens", "W1", "b1", "W2", "b2"))
    assert tuple(p.W1.shape) == tuple(p.W2.shape) == (d, d)
    with torch.no_grad():
        hidden = torch.tanh(p.tokens @ p.W1.T + p.b1)
        virtual = hidden @ p.W2.T + p.b2
        plain = build_model(CONFIGS[arch], seed=0).eval()
        plain.prompt = PromptEmbedding(virtual)
        ids = batch(1)["input_ids"]
        torch.testing.assert_close(model(ids), plain(ids), rtol=1e-5, atol=1e-5)


def test_outer_prefix_is_an_inner_prefix_of_in_proj_of_it():
    """MambaPEFT's outer_single_prefix: P vectors at the mixer input = an inner prefix xz = in_proj(h); with a LoRA on
    in_proj in the same model (compose), through the LoRA too."""
    model = build_model(CONFIGS["mamba1"], seed=0).eval()
    cfg = method_cfg("compose", parts=["lora", "prefix"])
    cfg["lora"]["target_modules"] = ["in_proj"]
    cfg["prefix"]["position"] = "outer"
    names = apply_method("compose", model, cfg)
    perturb(model, names)
    inner = build_model(CONFIGS["mamba1"], seed=0).eval()
    apply_method("lora", inner, {**cfg["lora"]})
    with torch.no_grad():
        for mixer, twin in zip(model.mixers(), inner.mixers()):
            assert tuple(mixer.prefix.h.shape) == (3, model.config.d_model)
            twin.in_proj.load_state_dict(mixer.in_proj.state_dict())
            layer = mixer.in_proj
            A, B = layer.update_factors()
            xz = F.linear(mixer.prefix.h, layer.base.weight) + layer.scaling * mixer.prefix.h @ A.T @ B.T
            twin.prefix = Prefix(3, 2 * mixer.d_inner, torch.Generator())
            twin.prefix.xz.copy_(xz)
        ids = batch(2)["input_ids"]
        torch.testing.assert_close(model(ids), inner(ids), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("arch", list(CONFIGS))
def test_partial_trains_the_chosen_ssm_parameters(arch):
    model = build_model(CONFIGS[arch], seed=0)
    mixer = model.backbone.layers[0].mixer
    dt_bias = "dt_proj.bias" if arch == "mamba1" else "dt_bias"
    expected = {"A": ["A_log"], "D": ["D"], "conv1d": ["conv1d.bias", "conv1d.weight"], "dt_bias": [dt_bias]}
    for choice, suffixes in expected.items():
        fresh = build_model(CONFIGS[arch], seed=0)
        names = apply_method("partial", fresh, method_cfg("partial", learnable=[choice]))
        layers = range(model.config.n_layer)
        assert names == sorted(f"backbone.layers.{i}.mixer.{s}" for i in layers for s in suffixes)
    names = apply_method("partial", model, method_cfg("partial"))
    params = dict(model.named_parameters())
    per_layer = mixer.A_log.numel() + mixer.D.numel() + mixer.conv1d.weight.numel() + mixer.conv1d.bias.numel()
    per_layer += (mixer.dt_proj.bias if arch == "mamba1" else mixer.dt_bias).numel()
    assert sum(params[n].numel() for n in names) == per_layer * model.config.n_layer


@pytest.mark.parametrize(
    ("method", "options", "wanted"),
    [
        ("partial", {"learnable": ["B"]}, "partial: learnable=['B'] must name distinct parameters among A, D"),
        ("partial", {"learnable": []}, "partial: learnable=[] must name distinct parameters"),
        ("prefix", {"position": "middle"}, "prefix: unknown position 'middle'; choose one of: inner, outer"),
    ],
)
def test_bad_variant_options_are_one_line(method, options, wanted):
    from stateft.methods.configs import validate_method_cfg

    with pytest.raises(UserError) as err:
        validate_method_cfg(method_cfg(method, **options))
    assert str(err.value).startswith(wanted)
