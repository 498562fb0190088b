"""Vim on the Triton kernels (scan, fused conv + SiLU, add + RMSNorm; Triton's interpreter on the CPU) against the
reference path: logits and every parameter's gradient, through both scan directions."""

from __future__ import annotations

import pytest
import torch

from stateft.methods import apply_method
from stateft.methods.configs import validate_method_cfg
from stateft.vision.loading import build_vim
from tests.vision.conftest import tiny_config

pytest.importorskip("triton")


@pytest.mark.slow  # ~50 s of Triton's interpreter on the CPU (a second on a GPU)
@pytest.mark.parametrize("method", ["full", "prefix"])
def test_triton_vim_matches_reference(method):
    images = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    out = {}
    for impl in ("ref", "triton"):
        model = build_vim(tiny_config(drop_path_rate=0.0), seed=0, backend=impl).train()
        torch.nn.init.normal_(model.head.weight, generator=torch.Generator().manual_seed(1))
        names = apply_method(method, model, validate_method_cfg({"name": method}))
        logits = model(images)
        logits.square().mean().backward()
        params = dict(model.named_parameters())
        out[impl] = (logits.detach(), {n: params[n].grad for n in names})
    (ref_logits, ref_grads), (logits, grads) = out["ref"], out["triton"]
    assert model.backend.scan == "triton"
    torch.testing.assert_close(logits, ref_logits, rtol=1e-4, atol=1e-5)
    for name, grad in ref_grads.items():
        torch.testing.assert_close(grads[name], grad, rtol=1e-3, atol=1e-6, msg=name)
