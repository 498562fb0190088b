"""Cross-entropy over rows of logits in one Triton kernel: per-row loss, and softmax - onehot written over the logits.

For the chunked LM loss (`stateft.ops.cross_entropy`; `chunk_loss_triton` is its Triton chunk). The torch version of
the same step (fp32 copy of the logits, logsumexp, subtract, exp, scatter) makes about seven full-vocabulary passes
over memory; this kernel reads a row twice (the second time from L2) and writes it once.

One program per row: an online log-sum-exp over vocabulary tiles in fp32 (running max and rescaled sum), then
``exp(logit - lse)`` written back in the logits' dtype with 1 subtracted at the label. Rows whose label is ignored
get loss 0 and a zero gradient row.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from stateft.ops.settings import DEFAULT_SETTINGS, CrossEntropySettings
from stateft.ops.triton_math import LN2, LOG2E


@triton.jit
def ce_rows_kernel(logits_ptr, labels_ptr, loss_ptr, V, stride, ignore_index,
                   WRITE_GRAD: tl.constexpr, BLOCK_V: tl.constexpr):  # fmt: skip
    row = tl.program_id(0).to(tl.int64)
    base = logits_ptr + row * stride
    label = tl.load(labels_ptr + row)
    valid = label != ignore_index
    offs = tl.arange(0, BLOCK_V)
    # running max (per lane) and sum of exp relative to it; differences are taken before scaling to log2 units (a
    # logit of -1e4 times log2 e has an ulp of 1e-3)
    m = tl.full((BLOCK_V,), float("-inf"), dtype=tl.float32)
    s = tl.zeros((BLOCK_V,), dtype=tl.float32)
    for v0 in range(0, V, BLOCK_V):
        x = tl.load(base + v0 + offs, mask=v0 + offs < V, other=float("-inf")).to(tl.float32)
        m_new = tl.maximum(m, x)
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # lanes that have seen only padding
        s = s * tl.exp2((m - m_safe) * LOG2E) + tl.exp2((x - m_safe) * LOG2E)
        m = m_new
    m_row = tl.max(m, axis=0)
    s_row = tl.sum(s * tl.exp2(tl.where(m == float("-inf"), float("-inf"), (m - m_row) * LOG2E)), axis=0)
    log_s = tl.log2(s_row) * LN2  # lse = m_row + log_s, kept apart: x - m_row is exact, x - lse would not be
    in_vocab = (label >= 0) & (label < V)
    target = tl.where(valid & in_vocab, label, 0)  # never read outside the row
    picked = tl.load(base + target).to(tl.float32)
    loss = tl.where(valid, (m_row - picked) + log_s, 0.0)
    loss = tl.where(valid & ~in_vocab, float("nan"), loss)  # a label outside the vocabulary: NaN, not a wrong number
    tl.store(loss_ptr + row, loss)
    if WRITE_GRAD:
        for v0 in range(0, V, BLOCK_V):
            idx = v0 + offs
            mask = idx < V
            x = tl.load(base + idx, mask=mask, other=0.0).to(tl.float32)
            p = tl.exp2(((x - m_row) - log_s) * LOG2E) - tl.where(idx == target, 1.0, 0.0)
            p = tl.where(valid, p, 0.0)
            p = tl.where(valid & ~in_vocab, float("nan"), p)
            tl.store(base + idx, p.to(logits_ptr.dtype.element_ty), mask=mask)


def ce_rows_(
    logits: Tensor,
    labels: Tensor,
    ignore_index: int,
    write_grad: bool,
    settings: CrossEntropySettings = DEFAULT_SETTINGS.cross_entropy,
) -> Tensor:
    """Per-row cross-entropy of ``logits`` (t V), fp32 (t,), 0 where ``labels`` == ``ignore_index``.

    With ``write_grad`` the logits are overwritten with d(loss_row)/d(logits) = softmax - onehot (0 on ignored rows),
    in their own dtype. ``logits`` must have unit stride along the vocabulary. Tiles and warps: ``settings``.
    """
    t, vocab = logits.shape
    if logits.stride(1) != 1:
        raise ValueError("ce_rows_: logits need unit stride along the vocabulary")
    loss = torch.empty(t, device=logits.device, dtype=torch.float32)
    if t:
        block = min(settings.BLOCK_V, triton.next_power_of_2(vocab))
        ce_rows_kernel[(t,)](logits, labels.contiguous(), loss, vocab, logits.stride(0), ignore_index,
                             WRITE_GRAD=write_grad, BLOCK_V=block, num_warps=settings.num_warps)  # fmt: skip
    return loss


def chunk_loss_triton(
    *,
    h: Tensor,
    weight: Tensor,
    labels: Tensor,
    ignore_index: int,
    want_grad: bool,
    settings: CrossEntropySettings = DEFAULT_SETTINGS.cross_entropy,
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """One chunk of the LM loss (`interfaces.ChunkLoss`) with one kernel: per-row loss, and softmax - onehot over the
    logits (0 on ignored rows), which the two products of the gradient then read."""
    h = h.to(weight.dtype)
    logits = h @ weight.t()  # (t V) in the head's dtype
    loss = ce_rows_(logits, labels, ignore_index, want_grad, settings).sum()
    if not want_grad:
        return loss, None, None
    grad_w = logits.t() @ h if weight.requires_grad else None
    return loss, logits @ weight, grad_w
