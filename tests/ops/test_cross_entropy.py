"""Chunked linear cross-entropy == full-logit cross-entropy (value and gradients)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from stateft.ops.cross_entropy import chunked_cross_entropy


@pytest.mark.parametrize(("dtype", "tol"), [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
@pytest.mark.parametrize("weight_grad", [False, True])
def test_matches_full_logits(dtype, tol, weight_grad):
    g = torch.Generator().manual_seed(0)
    b, length, d, vocab = 2, 7, 8, 50
    hidden = torch.randn(b, length, d, generator=g, requires_grad=True)
    weight = (torch.randn(vocab, d, generator=g) * 0.5).to(dtype).requires_grad_(weight_grad)
    labels = torch.randint(0, vocab, (b, length), generator=g)
    labels[0, :3] = -100
    loss = chunked_cross_entropy(hidden, weight, labels, chunk_size=3)
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


def test_all_ignored_and_no_grad():
    hidden = torch.randn(1, 4, 3)
    weight = torch.randn(5, 3)
    assert chunked_cross_entropy(hidden, weight, torch.full((1, 4), -100)).item() == 0.0
    labels = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        loss = chunked_cross_entropy(hidden, weight, labels, chunk_size=2)
    assert torch.isclose(loss, F.cross_entropy(hidden[0] @ weight.t(), labels[0]))
