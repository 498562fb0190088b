"""The S4 (DPLR) layer: the HiPPO-LegS normal plus low-rank init against its definition, the bilinear step of a
scalar system by hand, the Cauchy kernel against the dense twin (even L meets w = -1), recurrent step ==
convolution (fp64), and the methods on a DPLR model (s4_sdt refused in one line)."""

from __future__ import annotations

import pytest
import torch

from stateft.methods import apply_method
from stateft.s4.dplr import S4DPLR, bilinear, legs_nplr
from stateft.s4.model import DeepS4, S4ModelConfig


def test_legs_nplr_is_the_normal_part_of_hippo_legs():
    N = 8
    A = torch.zeros(N, N, dtype=torch.float64)
    for n in range(N):
        for k in range(N):
            if n > k:
                A[n, k] = -(((2 * n + 1) * (2 * k + 1)) ** 0.5)
            elif n == k:
                A[n, k] = -(n + 1)
    P = torch.tensor([(n + 0.5) ** 0.5 for n in range(N)], dtype=torch.float64)
    eig = torch.linalg.eigvals(A + torch.outer(P, P))
    Lambda, P_half, B_half = legs_nplr(N)
    torch.testing.assert_close(Lambda.real, torch.full((N // 2,), -0.5, dtype=torch.float64))
    expected = sorted(eig.imag[eig.imag > 0].tolist(), reverse=True)
    torch.testing.assert_close(Lambda.imag, torch.tensor(expected, dtype=torch.float64))
    assert P_half.shape == B_half.shape == (N // 2,)


def test_bilinear_of_a_scalar_system():
    a, b, dt = torch.tensor([[[-0.7 + 2j]]], dtype=torch.cdouble), torch.tensor([[1.5 - 1j]], dtype=torch.cdouble), 0.1
    Abar, Bbar = bilinear(a, b, torch.tensor([dt], dtype=torch.float64))
    torch.testing.assert_close(Abar[0, 0, 0], (1 + dt / 2 * a[0, 0, 0]) / (1 - dt / 2 * a[0, 0, 0]))
    torch.testing.assert_close(Bbar[0, 0], dt * b[0, 0] / (1 - dt / 2 * a[0, 0, 0]))


@pytest.mark.parametrize("L", [1, 2, 7, 16, 33])
def test_cauchy_kernel_matches_the_dense_twin(L):
    torch.manual_seed(L)
    layer = S4DPLR(3, 8).double()
    with torch.no_grad():  # away from the init: every table random
        for p in (layer.P, layer.B, layer.log_A_real, layer.A_imag):
            p.add_(0.3 * torch.randn_like(p))
    torch.testing.assert_close(layer.kernel(L), layer.kernel_dense(L), rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("style", ["glu", "relu"])
def test_step_equals_convolution_fp64(style):
    torch.manual_seed(0)
    cfg = S4ModelConfig(d_model=4, n_layers=2, d_state=8, d_input=3, d_output=2, style=style, layer="s4")
    model = DeepS4(cfg).double().eval()
    x = torch.randn(2, 20, 3, dtype=torch.float64)
    y = model(x)
    states, steps = model.initial_state(2), []
    for t in range(20):
        out, states = model.step(x[:, t], states)
        steps.append(out)
    torch.testing.assert_close(torch.stack(steps, 1), y, rtol=1e-9, atol=1e-10)


def test_methods_on_a_dplr_model():
    model = DeepS4(S4ModelConfig(d_model=4, n_layers=1, d_state=4, layer="s4"))
    assert model.config.arch == "s4"
    x = torch.randn(2, 6, 4)
    before = model(x)
    names = apply_method("s4_lora", model, {"name": "s4_lora", "rank": 1, "ssm_rank": 1})
    assert "layers.0.ssm.parametrizations.C.0.lora_A" in names
    torch.testing.assert_close(model(x), before)
    with pytest.raises(NotImplementedError, match="s4_sdt applies to s4d models, not to s4; the methods for s4: "):
        apply_method("s4_sdt", DeepS4(S4ModelConfig(d_model=4, n_layers=1, d_state=4, layer="s4")), {"name": "s4_sdt"})


def test_fp32_cauchy_kernel_at_pixel_length_is_close_to_fp64():
    torch.manual_seed(0)
    layer = S4DPLR(4, 32)
    k32 = layer.kernel(1024).double()
    k64 = layer.double().kernel(1024)
    assert (k32 - k64).abs().max() / k64.abs().max() < 1e-5
