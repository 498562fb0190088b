"""Batch-invariant matrix products: every output row computed the same way, whatever the number of rows.

cuBLAS picks its kernel (tile shape, split of the reduction) by the problem's shape, so a row multiplied as one of
80 rows and the same row multiplied alone are summed in different orders; in bf16 the logits differ in their last
bits and beam search, where two candidates often score within rounding, can part. Decoding a batch then gives other
predictions than decoding each example alone.

``invariant_matmul`` is a Triton kernel with one fixed configuration: each output element is the sum over K in
blocks of ``BLOCK_K``, in order, accumulated in fp32 by the same instructions whichever tile the row falls in and
however many rows there are (``M`` is never specialised on). Its reference twin is ``invariant_matmul_ref``
(torch's product). `stateft.ops.invariance` routes a block's products to it.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl
from torch import Tensor

# one configuration for every shape: changing it per shape would bring back the variance
BLOCKS_16BIT = {"BLOCK_M": 64, "BLOCK_N": 128, "BLOCK_K": 64, "num_warps": 4, "num_stages": 3}
BLOCKS_FP32 = {"BLOCK_M": 32, "BLOCK_N": 64, "BLOCK_K": 32, "num_warps": 4, "num_stages": 2}
_INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"


@triton.jit(do_not_specialize=["M", "N", "K"])
def _matmul_kernel(
    a_ptr, b_ptr, c_ptr, bias_ptr,
    M, N, K,
    s_ab, s_am, s_ak, s_bb, s_bk, s_bn, s_cb, s_cm, s_cn, s_xb, s_xm, s_xn,
    alpha, beta,
    HAS_BIAS: tl.constexpr, IEEE: tl.constexpr, INTERPRETED: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    pid_m, pid_n, batch = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    ks = tl.arange(0, BLOCK_K)
    a_ptr += batch * s_ab
    b_ptr += batch * s_bb
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        k = k0 + ks
        a_mask = (rows[:, None] < M) & (k[None, :] < K)
        b_mask = (k[:, None] < K) & (cols[None, :] < N)
        a = tl.load(a_ptr + rows[:, None] * s_am + k[None, :] * s_ak, mask=a_mask, other=0.0)
        b = tl.load(b_ptr + k[:, None] * s_bk + cols[None, :] * s_bn, mask=b_mask, other=0.0)
        if INTERPRETED:
            # Triton's CPU interpreter hands tl.dot to the CPU's BLAS, whose result for a row depends on its place in
            # the tile (and it multiplies 16-bit floats wrongly): the same fp32 sum of exact products, written out
            acc += tl.sum(a.to(tl.float32)[:, :, None] * b.to(tl.float32)[None, :, :], axis=1)
        elif IEEE:
            acc = tl.dot(a, b, acc, input_precision="ieee")
        else:
            acc = tl.dot(a, b, acc)
    acc = acc * alpha
    inside = (rows[:, None] < M) & (cols[None, :] < N)
    if HAS_BIAS:
        x = tl.load(bias_ptr + batch * s_xb + rows[:, None] * s_xm + cols[None, :] * s_xn, mask=inside, other=0.0)
        acc += beta * x.to(tl.float32)
    c = acc.to(c_ptr.dtype.element_ty)
    tl.store(c_ptr + batch * s_cb + rows[:, None] * s_cm + cols[None, :] * s_cn, c, mask=inside)


def invariant_matmul(
    a: Tensor, b: Tensor, *, bias: Tensor | None = None, alpha: float = 1.0, beta: float = 1.0
) -> Tensor:
    """alpha * a @ b + beta * bias for a (M K) or (B M K), b (K N) or (B K N), bias broadcastable to the output;
    the output in a's dtype, the sums in fp32 (fp32 inputs multiplied at full fp32 precision)."""
    batched = a.dim() == 3
    a3 = (a if batched else a[None]).contiguous()  # one layout for every call: the same loads whatever the caller
    b3 = b if b.dim() == 3 else b[None].expand(a3.shape[0], -1, -1)
    nb, m, k = a3.shape
    n = b3.shape[2]
    out = torch.empty(nb, m, n, dtype=a.dtype, device=a.device)
    x = out if bias is None else bias.expand(*((nb,) if batched else ()), m, n)
    x3 = x if x.dim() == 3 else x[None]
    blocks = BLOCKS_FP32 if a.dtype == torch.float32 else BLOCKS_16BIT
    grid = (triton.cdiv(m, blocks["BLOCK_M"]), triton.cdiv(n, blocks["BLOCK_N"]), nb)
    if m and n:
        _matmul_kernel[grid](
            a3, b3.to(a.dtype), out, x3, m, n, k,
            *a3.stride(), *b3.stride(), *out.stride(), *x3.stride(),
            alpha, beta, HAS_BIAS=bias is not None, IEEE=a.dtype == torch.float32, INTERPRETED=_INTERPRETED,
            **blocks,
        )  # fmt: skip
    return out if batched else out[0]


def invariant_matmul_ref(
    a: Tensor, b: Tensor, *, bias: Tensor | None = None, alpha: float = 1.0, beta: float = 1.0
) -> Tensor:
    """The reference twin: the same product with torch (fp32 sums), rounded to a's dtype."""
    out = alpha * torch.matmul(a.float(), b.float())
    if bias is not None:
        out = out + beta * bias.float()
    return out.to(a.dtype)
