"""Cached generation (prefill + step, beam reordering) against decoding that re-runs the whole sequence each step."""

from __future__ import annotations

import pytest
import torch

from stateft.generation import generate
from stateft.methods import apply_method
from stateft.models.loading import build_model
from tests.conftest import TINY, TINY2

METHODS_1 = ["state_offset_h", "state_offset_y", "init_state", "prompt", "prefix", "lora", "additional_scan"]
METHODS_2 = ["state_offset_h", "init_state", "prompt", "lora", "additional_scan"]
CASES = [(TINY, m) for m in [None, *METHODS_1]] + [(TINY2, m) for m in [None, *METHODS_2]]
IDS = [f"{c.arch}-{m}" for c, m in CASES]


def _model(config, method):
    model = build_model(config, seed=0)
    if method is not None:
        names = apply_method(method, model, {"name": method, **({"dropout": 0.0} if method == "lora" else {})})
        params = dict(model.named_parameters())
        g = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for name in names:
                params[name].add_(0.5 * torch.randn(params[name].shape, generator=g))
    return model.eval()


def _naive_beam(model, prompt, max_new, num_beams, eos_id, vocab):
    """Textbook beam search: every step runs the full sequences through the parallel forward (no cache)."""
    beams = [(0.0, [])]
    finished = []
    for _ in range(max_new):
        seqs = torch.tensor([prompt + b for _, b in beams])
        with torch.no_grad():
            logprobs = torch.log_softmax(model(seqs)[:, -1, :vocab].float(), dim=-1)
        candidates = []
        for (score, tokens), row in zip(beams, logprobs):
            top = row.topk(2 * num_beams)
            candidates += [(score + v, tokens + [t]) for v, t in zip(top.values.tolist(), top.indices.tolist())]
        candidates.sort(key=lambda c: -c[0])
        beams = []
        for rank, (score, tokens) in enumerate(candidates):
            if tokens[-1] == eos_id:
                if rank < num_beams:
                    finished.append((score / len(tokens), tokens[:-1]))
            else:
                beams.append((score, tokens))
            if len(beams) == num_beams:
                break
        if (
            len(finished) >= num_beams
            and beams[0][0] / (len(beams[0][1])) <= sorted(f[0] for f in finished)[-num_beams]
        ):
            return max(finished)[1]
    finished += [(s / len(t), t) for s, t in beams]
    return max(finished)[1]


@pytest.mark.parametrize(("config", "method"), CASES, ids=IDS)
def test_cached_decoding_matches_full_recomputation(config, method):
    model = _model(config, method)
    prompt = torch.randint(1, 64, (7,), generator=torch.Generator().manual_seed(3)).tolist()
    greedy = generate(model, prompt, max_new_tokens=6, num_beams=1, eos_id=None)
    assert greedy == _naive_beam(model, prompt, 6, 1, None, config.vocab_size)
    beam = generate(model, prompt, max_new_tokens=6, num_beams=5, eos_id=5)
    assert beam == _naive_beam(model, prompt, 6, 5, 5, config.vocab_size)


def test_generation_stops_at_eos():
    model = _model(TINY, None)
    prompt = [3, 4, 5]
    first = generate(model, prompt, max_new_tokens=1, num_beams=1, eos_id=None)[0]
    assert generate(model, prompt, max_new_tokens=10, num_beams=1, eos_id=first) == []


def test_padded_vocabulary_rows_are_never_generated():
    config = TINY.__class__(**{**TINY.to_dict(), "vocab_size": 61})  # padded to 64
    model = build_model(config, seed=0).eval()
    with torch.no_grad():
        model.backbone.embedding.weight[61:] = 50.0  # tied head: the padding rows would win every argmax
    for num_beams in (1, 3):
        tokens = generate(model, [1, 2, 3], max_new_tokens=6, num_beams=num_beams, eos_id=None)
        assert len(tokens) == 6
        assert max(tokens) < 61
