"""fp32 elementwise math for the Triton kernels, on the GPU's fast units (MUFU ex2 / lg2 / rcp) instead of the
precise library routines Triton otherwise calls.

Triton lowers ``tl.log``, ``tl.log2`` and ``tl.sigmoid``'s division to libdevice's IEEE-accurate versions, ~20-35
instructions each, where the scan's kernels evaluate them on every (t d) value of a block (``benchmarks/sass_report.py``
counts them). Here the same formulas run on the approximate hardware instructions (relative error ~1e-7
each), with the one place where that loses accuracy, log(1 + e) for small e, taken from its series instead.

Triton's interpreter (``TRITON_INTERPRET=1``, the CPU tests) has no libdevice: there ``FAST`` is off and the same
formulas use the portable functions, so the tests check the formulas and the GPU tests the approximations.
"""

from __future__ import annotations

import os

import triton
import triton.language as tl
from triton.language.extra import libdevice

# Triton decides at import time whether @triton.jit interprets; this follows the same switch
FAST = tl.constexpr(os.environ.get("TRITON_INTERPRET", "0") != "1")
LOG2E = tl.constexpr(1.4426950408889634)
LN2 = tl.constexpr(0.6931471805599453)


@triton.jit
def log2(x):
    if FAST:
        return libdevice.fast_log2f(x)
    else:
        return tl.log2(x)


@triton.jit
def reciprocal(x):
    if FAST:
        return libdevice.fast_dividef(1.0, x)
    else:
        return 1.0 / x


@triton.jit
def sigmoid(x):
    # 1 / (1 + exp(-x)): exp2 overflows to inf for x << 0, and 1 / inf = 0
    return reciprocal(1.0 + tl.exp2(-x * LOG2E))


@triton.jit
def softplus(x):
    """log(1 + exp(x)); x itself above 20, where the two agree to fp32 precision (and exp would overflow later)."""
    e = tl.exp2(tl.minimum(x, 20.0) * LOG2E)
    # log(1 + e) from the rounded 1 + e loses e's low bits when e is small: there the series, error < e^5 / 5
    series = e * (1.0 - e * (0.5 - e * (0.3333333333333333 - e * 0.25)))
    return tl.where(x > 20.0, x, tl.where(e < 0.03125, series, log2(1.0 + e) * LN2))
