"""The label-only loss equals plain cross-entropy over full logits, value and gradients (tied head included)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from stateft.loss import lm_loss
from stateft.models.loading import build_model
from tests.conftest import TINY


def test_lm_loss_matches_full_logits_cross_entropy():
    model = build_model(TINY, seed=1)
    ids = torch.randint(0, 64, (3, 11), generator=torch.Generator().manual_seed(0))
    labels = ids.clone()
    labels[:, :5] = -100
    labels[0, 8:] = -100
    loss = lm_loss(model, ids, labels, chunk_size=4)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    logits = model(ids)[:, :-1]
    ref = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=-100)
    ref_grads = torch.autograd.grad(ref, list(model.parameters()))
    torch.testing.assert_close(loss, ref, rtol=1e-6, atol=1e-6)
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
