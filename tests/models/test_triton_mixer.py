"""The Mamba-1 model on the Triton scan (Triton's interpreter on the CPU) against the reference scan: logits and the
gradients of every trainable tensor, through the mixer's real layouts (delta and B, C channels-first, z a view)."""

from __future__ import annotations

import pytest
import torch

from stateft.methods import apply_method
from stateft.models.loading import build_model
from tests.conftest import TINY

pytest.importorskip("triton")


@pytest.mark.parametrize("method", ["state_offset_h", "lora", "full_s6"])
def test_triton_model_matches_reference(method):
    ids = torch.randint(0, TINY.vocab_size, (2, 19), generator=torch.Generator().manual_seed(0))
    out = {}
    for impl in ("ref", "triton"):
        model = build_model(TINY, seed=0, scan_impl=impl)
        names = apply_method(method, model, {"name": method, **({"dropout": 0.0} if method == "lora" else {})})
        params = dict(model.named_parameters())
        with torch.no_grad():  # move the adapters off their identity start
            g = torch.Generator().manual_seed(1)
            for name in names:
                params[name].add_(0.1 * torch.randn(params[name].shape, generator=g))
        logits = model(ids)
        logits.float().square().mean().backward()
        out[impl] = (logits.detach(), {n: params[n].grad for n in names})
    (ref_logits, ref_grads), (logits, grads) = out["ref"], out["triton"]
    torch.testing.assert_close(logits, ref_logits, rtol=1e-4, atol=1e-5)
    for name, grad in ref_grads.items():
        torch.testing.assert_close(grads[name], grad, rtol=1e-3, atol=1e-6, msg=name)
