"""Gradients by finite differences (torch.autograd.gradcheck, fp64) on tiny deep S4 models: every parameter of the
plain model (both block styles, S4D and DPLR layers), and the trainable deltas of the methods (sparse SDT entries,
LoRA on the SSM, soft mode's dense deltas)."""

from __future__ import annotations

import pytest
import torch
from torch.func import functional_call

from stateft.methods.configs import validate_method_cfg
from stateft.s4.model import DeepS4, S4ModelConfig, theory_config
from stateft.s4.peft import apply
from stateft.s4.selection import LayerSelection


def _check(model: DeepS4, x: torch.Tensor) -> None:
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    params = tuple(dict(model.named_parameters())[n].detach().clone().requires_grad_(True) for n in names)

    def f(*values):
        return functional_call(model, dict(zip(names, values)), (x,))

    assert torch.autograd.gradcheck(f, params, eps=1e-6, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize(
    "cfg",
    [
        theory_config(3, 2, 4),
        S4ModelConfig(d_model=3, n_layers=1, d_state=4, d_input=2, d_output=2, head="classification"),
        S4ModelConfig(d_model=2, n_layers=1, d_state=4, layer="s4"),
    ],
)
def test_model_gradients_match_finite_differences(cfg):
    torch.manual_seed(0)
    model = DeepS4(cfg).double().eval()
    x = torch.rand(2, 5, cfg.d_input or cfg.d_model, dtype=torch.float64)
    _check(model, x)


@pytest.mark.parametrize(
    "options",
    [
        {"name": "s4_sdt", "select_channels": 2, "update_channels": 1, "select_states": 2, "update_states": 1},
        {"name": "s4_lora", "rank": 1, "ssm_rank": 1},
        {"name": "s4_sdlora", "rank": 1, "mode": "soft"},
    ],
)
def test_delta_gradients_match_finite_differences(options):
    torch.manual_seed(0)
    model = DeepS4(theory_config(3, 1, 4))
    selection = [LayerSelection([0, 2], [[0, 1], [1, 0]], [2], [[1]])]
    apply(model, validate_method_cfg(options), selection)
    for p in model.parameters():  # zero-initialised factors would hide the other factor's gradient
        if p.requires_grad:
            p.data.normal_(0, 0.3)
    model.double().eval()
    _check(model, torch.rand(2, 5, 3, dtype=torch.float64))
