"""The model on the Triton kernels (scan, SSD scan, fused conv + SiLU; Triton's interpreter on the CPU) against the
reference path: logits and the gradients of every trainable tensor, through the mixers' real layouts (delta and B, C
channels-first, x and z views of in_proj's output), a learned conv window, and prefill in pieces through the cache."""

from __future__ import annotations

import pytest
import torch

from stateft.methods import apply_method
from stateft.models.cache import MambaCache
from stateft.models.loading import build_model
from tests.conftest import TINY, TINY2
from tests.test_generation import _model

pytest.importorskip("triton")


def _init_state_with_window(config):
    model = build_model(config, seed=0)
    apply_method("init_state", model, {"name": "init_state", "conv_state": True})
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.5 * torch.randn(p.shape, generator=g))
    return model


CASES = [(TINY, "state_offset_h"), (TINY, "lora"), (TINY, "full_s6"), (TINY, "init_state+conv"), (TINY2, "lora")]


@pytest.mark.parametrize(("config", "method"), CASES, ids=[f"{c.arch}-{m}" for c, m in CASES])
def test_triton_model_matches_reference(config, method):
    ids = torch.randint(0, config.vocab_size, (2, 19), generator=torch.Generator().manual_seed(0))
    out = {}
    for impl in ("ref", "triton"):
        # adapters moved off their identity start; LoRA dropout 0
        model = (_init_state_with_window(config) if method == "init_state+conv" else _model(config, method)).train()
        model.set_backend(impl=impl)
        names = [n for n, p in model.named_parameters() if p.requires_grad]
        logits = model(ids)
        logits.float().square().mean().backward()
        params = dict(model.named_parameters())
        out[impl] = (logits.detach(), {n: params[n].grad for n in names})
    (ref_logits, ref_grads), (logits, grads) = out["ref"], out["triton"]
    torch.testing.assert_close(logits, ref_logits, rtol=1e-4, atol=1e-5)
    for name, grad in ref_grads.items():
        torch.testing.assert_close(grads[name], grad, rtol=1e-3, atol=1e-6, msg=name)


@pytest.mark.parametrize("config", [TINY, TINY2], ids=["mamba1", "mamba2"])
def test_prefill_in_pieces_through_the_cache(config):
    # the conv window and SSM state carried in the cache between pieces (the fused conv's window path), against the
    # whole prompt at once
    model = _init_state_with_window(config).eval()
    model.set_backend(impl="triton")
    ids = torch.randint(0, config.vocab_size, (2, 13), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        whole = model(ids)
        cache = MambaCache.empty(config.n_layer)
        pieces = torch.cat([model(ids[:, :5], cache), model(ids[:, 5:6], cache), model(ids[:, 6:], cache)], dim=1)
    torch.testing.assert_close(pieces, whole, rtol=1e-4, atol=1e-5)
