"""The U(-1/sqrt fan_in, 1/sqrt fan_in) initial values (LoRA's A on linears and on the conv, the reparametrised
prompt's MLP): for a seed, the tensors drawn in the documented order from a generator seeded with the run's seed."""

from __future__ import annotations

import math

import torch

from stateft.methods import apply_method
from stateft.models.loading import build_model
from tests.conftest import TINY

SEED = 1234


def _draw(g: torch.Generator, *shape: int, fan_in: int) -> torch.Tensor:
    bound = 1 / math.sqrt(fan_in)
    return torch.empty(shape).uniform_(-bound, bound, generator=g)


def test_lora_a_is_drawn_per_layer_conv_first_then_each_target_and_row_block():
    targets = ["conv1d", "x_proj.dt", "x_proj.B", "x_proj.C", "dt_proj", "in_proj", "out_proj"]
    model = build_model(TINY, seed=0)
    torch.manual_seed(SEED)  # the run's seed, which the adapter's generator starts from
    apply_method("lora", model, {"name": "lora", "r": 3, "target_modules": targets})
    g = torch.Generator().manual_seed(SEED)
    E, R, d, K = TINY.d_inner, TINY.dt_rank, TINY.d_model, TINY.d_conv
    for mixer in model.mixers():
        conv = mixer.conv1d.parametrizations.weight[0]
        assert torch.equal(conv.lora_A, _draw(g, 3, K, fan_in=K))
        for key in ("dt", "B", "C"):  # the row blocks in their row order
            assert torch.equal(mixer.x_proj.lora_A[key], _draw(g, 3, E, fan_in=E)), key
        assert torch.equal(mixer.dt_proj.lora_A["w"], _draw(g, 3, R, fan_in=R))
        assert torch.equal(mixer.in_proj.lora_A["w"], _draw(g, 3, d, fan_in=d))
        assert torch.equal(mixer.out_proj.lora_A["w"], _draw(g, 3, E, fan_in=E))


def test_reparametrised_prompt_draws_its_rows_then_w1_b1_w2_b2():
    model = build_model(TINY, seed=0)
    torch.manual_seed(SEED)
    apply_method("prompt", model, {"name": "prompt", "num_virtual_tokens": 5, "reparam": True})
    g = torch.Generator().manual_seed(SEED)
    rows = torch.randint(0, TINY.vocab_size, (5,), generator=g)
    d = TINY.d_model
    p = model.prompt
    assert torch.equal(p.tokens, model.backbone.embedding.weight.detach()[rows])
    assert torch.equal(p.W1, _draw(g, d, d, fan_in=d))
    assert torch.equal(p.b1, _draw(g, d, fan_in=d))
    assert torch.equal(p.W2, _draw(g, d, d, fan_in=d))
    assert torch.equal(p.b2, _draw(g, d, fan_in=d))


def test_low_rank_state_offset_v_comes_from_the_run_seed_layer_after_layer():
    """V of h' = U V: drawn per layer from the run's init generator, not from the global random stream (which the
    data order reads: applying the method must not move it)."""
    model = build_model(TINY, seed=0)
    torch.manual_seed(SEED)
    apply_method("state_offset_h", model, {"name": "state_offset_h", "rank": 2})
    after = torch.rand(3)
    torch.manual_seed(SEED)
    assert torch.equal(after, torch.rand(3))  # the global stream as if nothing had drawn from it
    g = torch.Generator().manual_seed(SEED)
    N = TINY.d_state
    for mixer in model.mixers():
        assert torch.equal(mixer.state_offset.V, _draw(g, 2, N, fan_in=N))
        assert not mixer.state_offset.U.any()
