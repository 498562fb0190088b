"""Every method over a frozen base stored in bf16 (``model.dtype: auto`` on a GPU, `stateft.app.fast_path`): its
trainable tensors are fp32 and a bf16-autocast step gives them finite gradients, the loss close to the fp32 base's."""

from __future__ import annotations

import pytest
import torch

from stateft.loss import lm_loss
from stateft.methods import apply_method
from stateft.methods.registry import METHODS
from stateft.models.loading import build_model
from tests.conftest import TINY, TINY2

CASES = [(c, m) for c in (TINY, TINY2) for m, spec in METHODS.items() if c.arch in spec.archs]


@pytest.mark.parametrize(("config", "method"), CASES, ids=[f"{c.arch}-{m}" for c, m in CASES])
def test_method_trains_over_a_bf16_base(config, method):
    ids = torch.randint(1, 60, (2, 12), generator=torch.Generator().manual_seed(0))
    losses = {}
    for dtype in (torch.float32, torch.bfloat16):
        model = build_model(config, seed=0, dtype=dtype)
        batches = [{"input_ids": ids, "labels": ids}]
        spec = METHODS[method]
        cfg = {"name": method, "parts": ["lora", "additional_scan"]} if method == "compose" else {"name": method}
        names = apply_method(method, model, cfg, train_batches=batches if spec.needs_data else None)
        params = dict(model.named_parameters())
        assert {params[n].dtype for n in names} == {torch.float32}
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = lm_loss(model, ids, ids)
        loss.backward()
        assert all(params[n].grad is not None and torch.isfinite(params[n].grad).all() for n in names)
        losses[dtype] = float(loss.detach())
    assert losses[torch.bfloat16] == pytest.approx(losses[torch.float32], rel=0.02)
