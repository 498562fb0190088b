"""The Mamba-1 model on the Triton scan (Triton's interpreter on the CPU) against the reference scan: logits and the
gradients of every trainable tensor, through the mixer's real layouts (delta and B, C channels-first, z a view)."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import TINY
from tests.test_generation import _model

pytest.importorskip("triton")


@pytest.mark.parametrize("method", ["state_offset_h", "lora", "full_s6"])
def test_triton_model_matches_reference(method):
    ids = torch.randint(0, TINY.vocab_size, (2, 19), generator=torch.Generator().manual_seed(0))
    out = {}
    for impl in ("ref", "triton"):
        model = _model(TINY, method).train()  # adapters moved off their identity start; LoRA dropout 0
        model.scan_impl = impl
        names = [n for n, p in model.named_parameters() if p.requires_grad]
        logits = model(ids)
        logits.float().square().mean().backward()
        params = dict(model.named_parameters())
        out[impl] = (logits.detach(), {n: params[n].grad for n in names})
    (ref_logits, ref_grads), (logits, grads) = out["ref"], out["triton"]
    torch.testing.assert_close(logits, ref_logits, rtol=1e-4, atol=1e-5)
    for name, grad in ref_grads.items():
        torch.testing.assert_close(grads[name], grad, rtol=1e-3, atol=1e-6, msg=name)
