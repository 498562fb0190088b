"""The recorded decoding step (`stateft.decode_graph`): same tokens as the eager step, buffers updated in place."""

from __future__ import annotations

import pytest
import torch

from stateft.decode_graph import RowStep
from stateft.generation import generate
from tests.conftest import TINY, TINY2
from tests.test_generation import _model

PROMPT = [3, 17, 5, 42, 8, 1]


def test_cpu_decoding_uses_the_eager_step():
    model = _model(TINY, "state_offset_h")
    cache = model.new_cache()
    model(torch.tensor([PROMPT]), cache)
    step = RowStep(model, cache, 1, cuda_graph=True)
    assert not step.graphs_on
    ref = model.new_cache()
    model(torch.tensor([PROMPT]), ref)
    token = torch.tensor([7])
    assert torch.equal(step(token), model.step(token, ref))


def test_reorder_keeps_the_buffers_when_the_row_count_stays():
    model = _model(TINY, None)
    cache = model.new_cache()
    model(torch.tensor([PROMPT, PROMPT[::-1]]), cache)
    before = [(layer.conv, layer.ssm.clone()) for layer in cache.layers]
    cache.reorder(torch.tensor([1, 1]))
    for layer, (conv, ssm) in zip(cache.layers, before):
        assert layer.conv is conv  # same tensor, new contents
        assert torch.equal(layer.ssm, ssm[[1, 1]])
    cache.reorder(torch.tensor([0, 0, 1]))  # more rows: new tensors
    assert cache.layers[0].ssm.shape[0] == 3


@pytest.mark.gpu
@pytest.mark.parametrize("autocast", [False, True])
@pytest.mark.parametrize(("config", "method"), [(TINY, "state_offset_h"), (TINY, "lora"), (TINY2, "init_state")])
def test_graphed_decoding_matches_eager_gpu(config, method, autocast):
    model = _model(config, method).cuda()
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
        for beams in (1, 3):
            kw = dict(max_new_tokens=24, num_beams=beams, eos_id=None)
            assert generate(model, PROMPT, cuda_graph=True, **kw) == generate(model, PROMPT, cuda_graph=False, **kw)
