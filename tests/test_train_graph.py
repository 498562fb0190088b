"""The recorded training loss (`stateft.train_graph`, ``cuda_graph=true``): same loss and gradients as `lm_loss`."""

from __future__ import annotations

import pytest
import torch

from stateft.errors import UserError
from stateft.loss import IGNORE_INDEX, lm_loss
from stateft.train_graph import GraphedLoss
from tests.conftest import TINY, TINY2
from tests.test_generation import _model


def _batch(b, n, seed):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, TINY.vocab_size, (b, n), generator=g)
    labels = ids.clone()
    labels[:, : n // 2] = IGNORE_INDEX  # a prompt half without loss, as in the benchmarks
    return ids, labels


def test_padding_to_the_recorded_shape_and_its_limit():
    graphed = GraphedLoss(torch.nn.Identity(), batch_size=4, length=12, pad_id=0)
    ids, labels = graphed.pad(*_batch(3, 9, 0))
    assert ids.shape == labels.shape == (4, 12)
    assert (labels[3] == IGNORE_INDEX).all()  # the added row
    assert (labels[:, 9:] == IGNORE_INDEX).all()  # the added positions
    assert (ids[:, 9:] == 0).all()
    with pytest.raises(UserError, match="dataset.max_length"):
        graphed.pad(*_batch(2, 13, 0))


def test_bucketed_padding():
    """With buckets, a batch is padded to its length rounded up to a multiple of the bucket, never past the limit."""
    graphed = GraphedLoss(torch.nn.Identity(), batch_size=4, length=20, pad_id=0, bucket=8)
    for n, padded in ((1, 8), (8, 8), (9, 16), (17, 20), (20, 20)):
        ids, labels = graphed.pad(*_batch(2, n, n))
        assert ids.shape == labels.shape == (4, padded)
        assert (labels[:, n:] == IGNORE_INDEX).all()
    with pytest.raises(UserError, match="cuda_graph_bucket"):
        GraphedLoss(torch.nn.Identity(), batch_size=4, length=20, bucket=-1)


@pytest.mark.gpu
def test_bucketed_graphs_match_eager_gpu():
    """Shapes recorded as they come, sharing one memory pool, replayed in any order: the eager loss and gradients."""
    model = _model(TINY, "lora").cuda().train()  # LoRA without dropout (_model): deterministic
    trainable = [p for p in model.parameters() if p.requires_grad]
    graphed = GraphedLoss(model, batch_size=4, length=24, bucket=8)
    for seed, (b, n) in enumerate([(4, 24), (3, 9), (4, 5), (2, 17), (4, 12), (4, 23)]):
        ids, labels = (t.cuda() for t in _batch(b, n, seed))
        results = []
        for fn in (graphed, lambda i, y: lm_loss(model, i, y)):
            for p in trainable:
                p.grad = None
            loss = fn(ids, labels)
            loss.backward()
            results.append((loss.detach(), [p.grad.clone() for p in trainable]))
        (loss, grads), (loss_ref, grads_ref) = results
        torch.testing.assert_close(loss, loss_ref, rtol=1e-4, atol=1e-6)
        for g, g_ref in zip(grads, grads_ref, strict=True):
            torch.testing.assert_close(g, g_ref, rtol=1e-4, atol=1e-6)
    assert graphed.recorded_lengths == [8, 16, 24]


@pytest.mark.gpu
@pytest.mark.parametrize("autocast", [False, True])
@pytest.mark.parametrize(("config", "method"), [(TINY, "state_offset_h"), (TINY, "lora"), (TINY2, "state_offset_h")])
def test_graphed_loss_matches_eager_gpu(config, method, autocast):
    model = _model(config, method).cuda().train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    graphed = GraphedLoss(model, batch_size=4, length=24)
    tol = {"rtol": 2e-2, "atol": 1e-4} if autocast else {"rtol": 1e-4, "atol": 1e-6}
    for seed, (b, n) in enumerate([(4, 24), (3, 17), (4, 20)]):  # full, then padded batches: one recorded shape
        ids, labels = (t.cuda() for t in _batch(b, n, seed))
        results = []
        # recorded first, as in train.py
        for fn in (graphed, lambda i, y: lm_loss(model, i, y)):
            for p in trainable:
                p.grad = None
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
                loss = fn(ids, labels)
            loss.backward()
            results.append((loss.detach().float(), [p.grad.clone() for p in trainable]))
        (loss, grads), (loss_ref, grads_ref) = results
        torch.testing.assert_close(loss, loss_ref, **tol)
        for g, g_ref in zip(grads, grads_ref):
            torch.testing.assert_close(g, g_ref, **tol)


@pytest.mark.gpu
def test_recording_after_eager_training_work_gpu():
    # an eager lm_loss (boolean-mask selection, pinned-memory copies) before the first recording in the process
    model = _model(TINY, "state_offset_h").cuda().train()
    ids, labels = (t.cuda() for t in _batch(4, 24, 0))
    lm_loss(model, ids, labels).backward()
    torch.testing.assert_close(GraphedLoss(model, 4, 24)(ids, labels), lm_loss(model, ids, labels))
