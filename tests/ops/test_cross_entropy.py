"""Chunked linear cross-entropy == full-logit cross-entropy (value and gradients)."""

from __future__ import annotations

import importlib.util

import pytest
import torch
import torch.nn.functional as F

from stateft.ops.backend import Backend
from stateft.ops.cross_entropy import chunked_cross_entropy
from stateft.ops.settings import DEFAULT_SETTINGS, CrossEntropySettings

IMPLS = ["ref", pytest.param("triton", marks=pytest.mark.skipif(
    importlib.util.find_spec("triton") is None, reason="needs triton"))]  # fmt: skip
# vocabulary tiles of 16 under the interpreter, so that the test vocabularies span several (the online log-sum-exp)
SMALL = CrossEntropySettings(BLOCK_V=16) if not torch.cuda.is_available() else DEFAULT_SETTINGS.cross_entropy


def _backend(impl: str, device: str = "cpu") -> Backend:
    return Backend(impl=impl, device=device, settings=DEFAULT_SETTINGS.with_(cross_entropy={"BLOCK_V": SMALL.BLOCK_V}))


@pytest.mark.parametrize(("dtype", "tol"), [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
@pytest.mark.parametrize("weight_grad", [False, True])
@pytest.mark.parametrize("impl", IMPLS)
def test_matches_full_logits(dtype, tol, weight_grad, impl):
    g = torch.Generator().manual_seed(0)
    b, length, d, vocab = 2, 7, 8, 50
    hidden = torch.randn(b, length, d, generator=g, requires_grad=True)
    weight = (torch.randn(vocab, d, generator=g) * 0.5).to(dtype).requires_grad_(weight_grad)
    labels = torch.randint(0, vocab, (b, length), generator=g)
    labels[0, :3] = -100
    loss = chunked_cross_entropy(hidden=hidden, weight=weight, labels=labels, chunk_size=3, backend=_backend(impl))
    loss.backward()
    h2 = hidden.detach().clone().requires_grad_(True)
    w2 = weight.detach().float().requires_grad_(weight_grad)
    ref = F.cross_entropy((h2.to(dtype).float() @ w2.t()).reshape(-1, vocab), labels.reshape(-1), ignore_index=-100)
    ref.backward()
    assert loss.dtype == torch.float32
    assert abs(loss.item() - ref.item()) <= tol * abs(ref.item())
    assert torch.allclose(hidden.grad, h2.grad, rtol=tol, atol=tol * h2.grad.abs().max().item())
    if weight_grad:
        assert weight.grad.dtype == dtype
        assert torch.allclose(weight.grad.float(), w2.grad, rtol=tol, atol=tol * w2.grad.abs().max().item())


@pytest.mark.parametrize("impl", IMPLS)
def test_all_ignored_and_no_grad(impl):
    hidden = torch.randn(1, 4, 3)
    weight = torch.randn(5, 3)
    ignored = torch.full((1, 4), -100)
    assert chunked_cross_entropy(hidden=hidden, weight=weight, labels=ignored, backend=_backend(impl)).item() == 0.0
    labels = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        loss = chunked_cross_entropy(hidden=hidden, weight=weight, labels=labels, chunk_size=2, backend=_backend(impl))
    assert torch.isclose(loss, F.cross_entropy(hidden[0] @ weight.t(), labels[0]))


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="needs triton")
@pytest.mark.parametrize("vocab", [16, 37, 100])
def test_kernel_rows_match_softmax(vocab):
    """The kernel alone on extreme logits: loss rows == F.cross_entropy, the rows overwritten with softmax - onehot
    (zero where the label is ignored), with vocabularies one tile, a partial tile and several tiles wide."""
    from stateft.ops.cross_entropy_triton import ce_rows_

    g = torch.Generator().manual_seed(vocab)
    logits = torch.randn(6, vocab, generator=g) * 30  # large spread: exp overflows without the running max
    logits[1] -= 1e4  # a row far below zero
    labels = torch.randint(0, vocab, (6,), generator=g)
    labels[3] = -100
    ref_loss = F.cross_entropy(logits, labels, ignore_index=-100, reduction="none")
    ref_grad = torch.softmax(logits, -1) - F.one_hot(labels.clamp_min(0), vocab)
    ref_grad[3] = 0
    out = logits.clone()
    loss = ce_rows_(out, labels, -100, write_grad=True, settings=SMALL)
    assert torch.allclose(loss, ref_loss, rtol=1e-5, atol=1e-4)
    assert torch.allclose(out, ref_grad, atol=1e-6)
    kept = logits.clone()
    assert torch.allclose(
        ce_rows_(kept, labels, -100, write_grad=False, settings=SMALL), ref_loss, rtol=1e-5, atol=1e-4
    )
    assert torch.equal(kept, logits)  # without write_grad the logits are left alone


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="needs triton")
def test_kernel_label_outside_the_vocabulary_is_nan():
    """The torch path raises on such a label; the kernel must not read past the row and must not return a number."""
    from stateft.ops.cross_entropy_triton import ce_rows_

    logits = torch.randn(3, 20)
    grad = logits.clone()
    loss = ce_rows_(grad, torch.tensor([5, 20, -7]), -100, write_grad=True, settings=SMALL)
    assert torch.isfinite(loss[0])
    assert torch.isfinite(grad[0]).all()
    assert torch.isnan(loss[1:]).all()
    assert torch.isnan(grad[1:]).all()


def test_unknown_impl_is_one_clear_error():
    with pytest.raises(ValueError, match="choose one of auto, ref, triton, mamba_ssm"):
        chunked_cross_entropy(
            hidden=torch.randn(2, 3), weight=torch.randn(5, 3), labels=torch.tensor([0, 1]), backend="cuda"
        )


@pytest.mark.gpu
def test_triton_matches_torch_full_size_gpu():
    """130m's head (50,280 x 768, bf16), 2 x 1024 tokens with some ignored: the kernel path == the torch path."""
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(2, 1024, 768, generator=g).cuda().requires_grad_()
    weight = (torch.randn(50280, 768, generator=g) * 0.02).cuda().bfloat16().requires_grad_()
    labels = torch.randint(0, 50280, (2, 1024), generator=g).cuda()
    labels[:, :100] = -100
    grads = []
    for impl in ("ref", "triton"):
        hidden.grad = weight.grad = None
        loss = chunked_cross_entropy(hidden=hidden, weight=weight, labels=labels, backend=_backend(impl, "cuda"))
        loss.backward()
        grads.append((loss.detach(), hidden.grad.clone(), weight.grad.float()))
    (l0, h0, w0), (l1, h1, w1) = grads
    assert abs(l0.item() - l1.item()) < 1e-4 * abs(l0.item())
    assert ((h1 - h0).norm() / h0.norm()).item() < 1e-2
    assert ((w1 - w0).norm() / w0.norm()).item() < 1e-2
