"""Cached generation of one prompt (prefill + step, beam reordering) against the naive decoder that re-runs the whole
sequence each step (`tests.generation_reference`)."""

from __future__ import annotations

import zlib
from types import SimpleNamespace

import pytest
import torch

from stateft.generation import beam_batch, generate, greedy_batch
from stateft.methods import apply_method
from stateft.models.loading import build_model
from tests.conftest import TINY, TINY2
from tests.generation_reference import naive_beam, naive_decode, naive_greedy

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


@pytest.mark.parametrize(("config", "method"), CASES, ids=IDS)
def test_cached_decoding_matches_full_recomputation(config, method):
    model = _model(config, method)
    prompt = torch.randint(1, 64, (7,), generator=torch.Generator().manual_seed(3)).tolist()
    greedy = generate(model, prompt, max_new_tokens=6, num_beams=1, eos_id=None)
    assert greedy == naive_decode(model, prompt, 6, num_beams=1, eos_id=None)
    beam = generate(model, prompt, max_new_tokens=6, num_beams=5, eos_id=5)
    assert beam == naive_decode(model, prompt, 6, num_beams=5, eos_id=5)


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


class LookupLM:
    """A language model whose next-token logits are a fixed random function of the whole sequence (seeded by its
    checksum), with the EOS token ``0`` lifted so that it ranks near the beam width often: many searches in which
    EOS finishes beams, ranks below the width, or ends the search early, at no model cost. As a model for the naive
    decoder: ``lm(ids)`` gives the logits at the last position."""

    vocab = 12

    def __init__(self, scale: float, eos_lift: float) -> None:
        self.scale, self.eos_lift = scale, eos_lift
        self.config = SimpleNamespace(vocab_size=self.vocab)

    def logits(self, seq: list[int]) -> torch.Tensor:
        g = torch.Generator().manual_seed(zlib.crc32(bytes(seq)))
        out = torch.randn(self.vocab, generator=g) * self.scale
        out[0] += self.eos_lift
        return out

    def __call__(self, ids: torch.Tensor) -> torch.Tensor:
        return torch.stack([self.logits(row) for row in ids.tolist()])[:, None]


class LookupStep:
    """``RowStep``'s protocol over a ``LookupLM``: ``select`` keeps and reorders rows, a call appends a token to each
    row and returns its next logits."""

    def __init__(self, lm: LookupLM, prompts: list[list[int]]) -> None:
        self.lm, self.rows = lm, [list(p) for p in prompts]

    def select(self, index: torch.Tensor) -> None:
        self.rows = [list(self.rows[i]) for i in index.tolist()]

    def __call__(self, tokens: torch.Tensor) -> torch.Tensor:
        for row, token in zip(self.rows, tokens.tolist()):
            row.append(token)
        return torch.stack([self.lm.logits(row) for row in self.rows])


@pytest.mark.parametrize(("scale", "eos_lift"), [(1.0, 0.5), (3.0, 1.5)])
@pytest.mark.parametrize(("num_beams", "length_penalty"), [(1, 1.0), (2, 1.0), (3, 0.5), (4, 2.0), (3, -0.5)])
def test_search_rules_match_the_naive_decoder(scale, eos_lift, num_beams, length_penalty):
    """The batched search's bookkeeping (which beams continue, when EOS finishes one, when the search ends, which
    hypothesis wins, length penalty) against the naive decoder, over many searches of a ``LookupLM``."""
    lm = LookupLM(scale, eos_lift)
    g = torch.Generator().manual_seed(0)
    prompts = [
        torch.randint(1, lm.vocab, (int(n),), generator=g).tolist() for n in torch.randint(1, 6, (60,), generator=g)
    ]
    logits = torch.stack([lm.logits(p) for p in prompts])
    step = LookupStep(lm, prompts)
    if num_beams == 1:
        expected = [naive_greedy(lm, p, 7, 0, lm.vocab) for p in prompts]
        assert greedy_batch(step, logits, 7, 0, lm.vocab) == expected
    else:
        expected = [naive_beam(lm, p, 7, num_beams, 0, length_penalty, lm.vocab) for p in prompts]
        assert beam_batch(step, logits, 7, num_beams, 0, length_penalty, lm.vocab) == expected
    assert len({len(out) for out in expected}) > 1  # EOS ends searches at different lengths
