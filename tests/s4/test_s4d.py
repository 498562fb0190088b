"""The S4D layer: recurrent steps equal the convolution mode, shapes, gradients, one-line errors."""

from __future__ import annotations

import pytest
import torch

from stateft.errors import UserError
from stateft.s4.s4d import S4D


def run_steps(layer: S4D, u: torch.Tensor) -> torch.Tensor:
    state = layer.initial_state(u.shape[0])
    outputs = []
    for t in range(u.shape[-1]):
        y, state = layer.step(u[..., t], state)
        outputs.append(y)
    return torch.stack(outputs, dim=-1)


@pytest.mark.parametrize("A_init", ["s4d_lin", "random"])
def test_step_equals_convolution_fp64(A_init):
    torch.manual_seed(0)
    layer = S4D(5, d_state=8, A_init=A_init).double()
    u = torch.randn(2, 5, 64, dtype=torch.float64)
    torch.testing.assert_close(run_steps(layer, u), layer(u), rtol=1e-9, atol=1e-9)


def test_step_equals_convolution_fp32():
    torch.manual_seed(1)
    layer = S4D(4, d_state=16)
    u = torch.randn(3, 4, 100)
    torch.testing.assert_close(run_steps(layer, u), layer(u), rtol=1e-5, atol=1e-5)


def test_shapes_and_state():
    layer = S4D(6, d_state=10)
    assert layer.C.shape == (6, 5, 2)
    assert layer.log_A_real.shape == (6, 5)
    assert layer.log_dt.shape == (6,)
    assert layer.kernel(7).shape == (6, 7)
    assert layer(torch.randn(2, 6, 7)).shape == (2, 6, 7)
    state = layer.initial_state(2)
    assert state.shape == (2, 6, 5)
    assert state.is_complex()
    y, state = layer.step(torch.randn(2, 6), state)
    assert y.shape == (2, 6)
    assert state.shape == (2, 6, 5)


def test_s4d_lin_init():
    layer = S4D(2, d_state=6)
    A = torch.complex(-layer.log_A_real.exp(), layer.A_imag)
    torch.testing.assert_close(A.real, torch.full((2, 3), -0.5))
    torch.testing.assert_close(A.imag, torch.pi * torch.arange(3.0).expand(2, 3))
    dt = layer.log_dt.exp()
    assert bool(((dt >= 0.001) & (dt <= 0.1)).all())


def test_gradients_reach_every_parameter():
    torch.manual_seed(2)
    layer = S4D(3, d_state=4)
    layer(torch.randn(2, 3, 20)).pow(2).sum().backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"d_model": 4, "d_state": 7}, "d_state must be an even integer"),
        ({"d_model": 0, "d_state": 8}, "d_model must be an integer >= 1"),
        ({"d_model": 4, "d_state": 8, "A_init": "hippo"}, "unknown S4D A_init 'hippo'; choose one of"),
        ({"d_model": 4, "d_state": 8, "dt_min": 0.2, "dt_max": 0.1}, "dt_min <= dt_max"),
    ],
)
def test_bad_sizes_are_one_line_errors(kwargs, message):
    with pytest.raises(UserError, match=message) as err:
        S4D(**kwargs)
    assert "\n" not in str(err.value)


def test_wrong_input_shape():
    with pytest.raises(ValueError, match=r"S4D expects input \(batch, 4, length\)"):
        S4D(4, 8)(torch.randn(2, 5, 10))
