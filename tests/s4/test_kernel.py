"""The S4D kernel and the FFT convolution against their twins (powers one step at a time; the direct sum)."""

from __future__ import annotations

import pytest
import torch

from stateft.s4.fftconv import causal_conv_direct, causal_conv_fft
from stateft.s4.kernel import discretize_zoh, vandermonde_kernel, vandermonde_kernel_ref


def random_ssm(H: int, M: int, dtype=torch.float64, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    log_dt = torch.empty(H, dtype=dtype).uniform_(-6, -1, generator=g)
    log_A_real = torch.randn(H, M, dtype=dtype, generator=g)
    A_imag = 3 * torch.randn(H, M, dtype=dtype, generator=g)
    C = torch.complex(torch.randn(H, M, dtype=dtype, generator=g), torch.randn(H, M, dtype=dtype, generator=g))
    return log_dt, log_A_real, A_imag, C


@pytest.mark.parametrize(("H", "M", "L"), [(3, 4, 37), (1, 1, 1), (5, 8, 128)])
def test_vandermonde_kernel_matches_powers(H, M, L):
    log_dt, log_A_real, A_imag, C = random_ssm(H, M)
    dtA, Bbar = discretize_zoh(log_dt, log_A_real, A_imag)
    fast = vandermonde_kernel(C, dtA, Bbar, L)
    assert fast.shape == (H, L)
    assert fast.dtype == torch.float64
    torch.testing.assert_close(fast, vandermonde_kernel_ref(C, dtA, Bbar, L), rtol=1e-10, atol=1e-12)


def test_zoh_of_a_real_mode_is_the_textbook_formula():
    """One real mode a = -1/2, dt = 0.1: Abar = e^{-0.05}, Bbar = (1 - e^{-0.05}) / (1/2), K_l = 2 C Bbar Abar^l."""
    log_dt = torch.tensor([0.1], dtype=torch.float64).log()
    log_A_real = torch.tensor([[0.5]], dtype=torch.float64).log()
    dtA, Bbar = discretize_zoh(log_dt, log_A_real, torch.zeros(1, 1, dtype=torch.float64))
    K = vandermonde_kernel(torch.ones(1, 1, dtype=torch.complex128), dtA, Bbar, 3)
    a_bar, b_bar = torch.exp(torch.tensor(-0.05, dtype=torch.float64)), (1 - torch.exp(torch.tensor(-0.05))) / 0.5
    expected = torch.stack([2 * b_bar * a_bar**l for l in range(3)]).to(torch.float64).reshape(1, 3)
    torch.testing.assert_close(K, expected, rtol=1e-6, atol=0)


@pytest.mark.parametrize(("B", "H", "L"), [(2, 3, 50), (1, 1, 1), (3, 4, 257)])
def test_fft_convolution_matches_direct(B, H, L):
    g = torch.Generator().manual_seed(1)
    u = torch.randn(B, H, L, dtype=torch.float64, generator=g)
    k = torch.randn(H, L, dtype=torch.float64, generator=g)
    fast = causal_conv_fft(u, k)
    assert fast.shape == (B, H, L)
    torch.testing.assert_close(fast, causal_conv_direct(u, k), rtol=1e-9, atol=1e-10)


def test_fft_convolution_is_causal():
    """Changing u at position t changes no output before t."""
    g = torch.Generator().manual_seed(2)
    u, k = torch.randn(1, 2, 40, generator=g), torch.randn(2, 40, generator=g)
    v = u.clone()
    v[..., 25:] += 1.0
    torch.testing.assert_close(causal_conv_fft(u, k)[..., :25], causal_conv_fft(v, k)[..., :25], rtol=0, atol=1e-5)
    assert not torch.allclose(causal_conv_fft(u, k)[..., 25:], causal_conv_fft(v, k)[..., 25:])


def test_fft_convolution_fp32_within_1e5():
    g = torch.Generator().manual_seed(3)
    u, k = torch.randn(2, 3, 200, generator=g), 0.1 * torch.randn(3, 200, generator=g)
    torch.testing.assert_close(causal_conv_fft(u, k), causal_conv_direct(u, k), rtol=1e-5, atol=1e-5)
