"""Batched decoding (`stateft.generation.generate_batch`), token for token, against the naive decoder that re-runs the
whole sequence of each prompt alone (`tests.generation_reference`) and against the same prompts decoded one at a time:
ragged prompt lengths, examples finishing at different steps, the methods that touch the state, greedy and beam
search."""

from __future__ import annotations

from collections import Counter
from functools import partial

import pytest
import torch

from stateft.decode_graph import RowStep, kept_recordings
from stateft.generation import generate, generate_batch, prefill
from stateft.ops.invariance import batch_invariant
from tests.conftest import TINY, TINY2
from tests.generation_reference import naive_decode
from tests.serve.helpers import eos_that_splits
from tests.test_generation import METHODS_1, METHODS_2, _model

CASES = [(TINY, m) for m in [None, *METHODS_1]] + [(TINY2, m) for m in [None, *METHODS_2]]
IDS = [f"{c.arch}-{m}" for c, m in CASES]
LENGTHS = [3, 7, 7, 1, 12, 5, 7, 2]


def _prompts(seed: int = 0) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(1, 64, (n,), generator=g).tolist() for n in LENGTHS]


def _eos_that_splits(model, prompts, num_beams: int) -> int:
    """An EOS token under which the examples finish at different steps (some before the limit, not all at once)."""
    return eos_that_splits([model] * len(prompts), prompts, num_beams, 8)


REFERENCE_CASES = [(TINY, None), (TINY, "state_offset_h"), (TINY, "prefix"), (TINY2, "init_state"), (TINY2, "prompt")]
BEAMS = [(3, 1.0), (4, 0.5)]  # (num_beams, length_penalty)


def _splitting_tokens(free: list[list[int]]) -> list[int]:
    """Tokens under which the greedy answers (``free``, decoded without EOS, cut at the token's first place: greedy
    never looks ahead) have different lengths, the most frequent first."""
    counts = Counter(t for out in free for t in set(out))
    return [t for t, _ in counts.most_common() if len({out.index(t) if t in out else len(out) for out in free}) > 1]


@pytest.mark.parametrize(("config", "method"), REFERENCE_CASES, ids=[f"{c.arch}-{m}" for c, m in REFERENCE_CASES])
def test_batch_equals_the_naive_decoder(config, method):
    """Ragged prompts (one of a single token, two of equal length), examples finishing at different steps."""
    model = _model(config, method)
    prompts = _prompts(4)[:5]
    free = [naive_decode(model, p, 6, num_beams=1, eos_id=None) for p in prompts]
    tokens = _splitting_tokens(free)
    eos = tokens[0]
    greedy = [out[: out.index(eos)] if eos in out else out for out in free]
    assert generate_batch(model, prompts, max_new_tokens=6, num_beams=1, eos_id=eos) == greedy
    for num_beams, length_penalty in BEAMS:
        for eos in tokens:
            expected = [naive_decode(model, p, 6, num_beams, eos, length_penalty) for p in prompts]
            if len({len(out) for out in expected}) > 1:
                break
        else:
            raise AssertionError("no token splits the beam searches' lengths")
        kw = dict(max_new_tokens=6, num_beams=num_beams, eos_id=eos, length_penalty=length_penalty)
        assert generate_batch(model, prompts, **kw) == expected, (num_beams, length_penalty)


@pytest.mark.parametrize(("config", "method"), CASES, ids=IDS)
@pytest.mark.parametrize("num_beams", [1, 3])
def test_batch_equals_one_prompt_at_a_time(config, method, num_beams):
    model = _model(config, method)
    prompts = _prompts()
    eos = _eos_that_splits(model, prompts, num_beams)
    single = [generate(model, p, max_new_tokens=8, num_beams=num_beams, eos_id=eos) for p in prompts]
    assert generate_batch(model, prompts, max_new_tokens=8, num_beams=num_beams, eos_id=eos) == single


def _prefill_against_alone(model, prompts, same) -> None:
    with torch.no_grad():
        cache, logits = prefill(model, prompts)
        for row, prompt in enumerate(prompts):
            alone = model.new_cache()
            assert same(logits[row], model(torch.tensor([prompt]), alone)[0, -1]) is not False, row
            for layer, layer_alone in zip(cache.layers, alone.layers):
                assert same(layer.conv[row], layer_alone.conv[0]) is not False, row
                assert same(layer.ssm[row], layer_alone.ssm[0]) is not False, row


@pytest.mark.parametrize(("config", "method"), CASES, ids=IDS)
def test_padded_prefill_equals_each_prompt_alone(config, method):
    """The right-padded prefill of ragged prompts leaves every row's conv window and SSM state as the prompt run
    alone (the padding never enters a state), and gives its logits at its last token; up to the rounding of
    products over other row counts (the next test removes that)."""
    close = partial(torch.testing.assert_close, rtol=1e-4, atol=1e-5)
    _prefill_against_alone(_model(config, method), _prompts(2), close)


@pytest.mark.parametrize("method", [None, "init_state", "prefix", "additional_scan"])
@pytest.mark.parametrize("impl", ["ref", "triton"])
def test_padded_prefill_bit_for_bit_with_invariant_products(method, impl):
    """With batch-invariant products (`stateft.ops.invariance`) nothing else in a Mamba-1 prefill depends on the
    batch: every row's state, conv window and logits are the prompt's alone, bit for bit, on the reference ops and
    on the Triton kernels (whose delta is -inf past a row's end). Mamba-2's step sizes go through the CPU's
    vectorised softplus, which rounds a tensor's tail elements differently, so on the CPU it is not bit-exact (a GPU
    computes every element alike: the GPU tests below)."""
    model = _model(TINY, method)
    model.set_backend(impl=impl)
    with batch_invariant():
        _prefill_against_alone(model, _prompts(2)[:5], torch.equal)


@pytest.mark.parametrize("num_beams", [1, 2])
def test_padded_buckets_give_the_same_tokens(num_beams, monkeypatch):
    """The recorded path's row padding (buckets of rows_per_group x 2^j), run eagerly on the CPU: padding rows never
    change a real row's tokens."""
    model = _model(TINY, "state_offset_h")
    prompts = _prompts(1)[:7]
    seen: list[tuple[int, int]] = []  # (rows kept, rows in the cache) at every select
    real_init, real_select = RowStep.__init__, RowStep.select

    def init(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        self.graphs_on, self.eager_steps = True, 10**9  # bucket sizes as on a GPU, the eager step for every size

    def select(self, index):
        real_select(self, index)
        seen.append((len(index), self.cache.layers[0].ssm.shape[0]))

    monkeypatch.setattr(RowStep, "__init__", init)
    monkeypatch.setattr(RowStep, "select", select)
    for eos in range(1, 64):  # an EOS under which some examples leave the batch early
        seen.clear()
        out = generate_batch(model, prompts, max_new_tokens=24, num_beams=num_beams, eos_id=eos)
        if any(size > rows for rows, size in seen):
            break
    else:
        raise AssertionError("no EOS token made a padded step")
    assert all(size % num_beams == 0 and size >= rows for rows, size in seen)
    assert out == [generate(model, p, max_new_tokens=24, num_beams=num_beams, eos_id=eos) for p in prompts]


def test_bucket_sizes():
    model = _model(TINY, None)
    cache = model.new_cache()
    model(torch.tensor([[1, 2]] * 40), cache)
    step = RowStep(model, cache, 5)
    step.graphs_on = True
    assert [step._bucket(r) for r in (40, 36, 20, 16, 11, 10, 5, 3, 1)] == [40, 40, 20, 20, 20, 10, 5, 5, 5]


def test_empty_and_zero_length_requests():
    model = _model(TINY, None)
    assert generate_batch(model, [], max_new_tokens=4) == []
    assert generate_batch(model, [[1, 2], [3]], max_new_tokens=0) == [[], []]


def test_kept_recordings_are_dropped_when_a_parameter_moves():
    model = _model(TINY, "state_offset_h")
    kept = kept_recordings(model)
    kept[5] = "a recording"
    assert kept_recordings(model) is kept  # the next batch finds it
    with torch.no_grad():
        next(model.parameters()).add_(1.0)  # in place: the recording reads the new values
    assert kept_recordings(model) is kept
    model.to(torch.float64)  # reallocated: the recording would read freed memory
    assert kept_recordings(model) == {}


@pytest.mark.gpu
def test_recordings_kept_across_batches_gpu():
    model = _model(TINY, "state_offset_h").cuda()
    kw = dict(max_new_tokens=20, num_beams=3, eos_id=None)
    for seed in (3, 4):  # the second batch replays the first one's recordings with its own states
        prompts = _prompts(seed)
        assert generate_batch(model, prompts, **kw) == [generate(model, p, cuda_graph=False, **kw) for p in prompts]
    assert kept_recordings(model)


@pytest.mark.gpu
@pytest.mark.parametrize(("config", "method"), [(TINY, "state_offset_h"), (TINY, "prefix"), (TINY2, "init_state")])
@pytest.mark.parametrize("num_beams", [1, 3])
def test_batch_with_recorded_steps_equals_one_prompt_gpu(config, method, num_beams):
    model = _model(config, method).cuda()
    prompts = _prompts(2)
    eos = _eos_that_splits(model, prompts, num_beams)
    kw = dict(max_new_tokens=24, num_beams=num_beams, eos_id=eos)
    single = [generate(model, p, cuda_graph=False, **kw) for p in prompts]
    assert generate_batch(model, prompts, cuda_graph=True, **kw) == single


MID = dict(d_model=256, n_layer=4, vocab_size=1024)  # shapes at which cuBLAS's kernel choice varies with the rows


BF16_CASES = [("mamba1", "state_offset_h"), ("mamba1", "lora"), ("mamba2", "init_state")]


@pytest.mark.gpu
@pytest.mark.parametrize(("arch", "method"), BF16_CASES)
def test_bf16_batch_equals_one_prompt_at_a_time_gpu(arch, method):
    """The GPU's evaluation setting (bf16 frozen base under bf16 autocast, recorded steps) with batch-invariant
    products (``dataset.batch_invariant=true``): batched beam search gives each example the tokens it gets alone;
    near-uniform random logits make ties common, so rounding that depended on the batch would show."""
    from dataclasses import replace

    config = replace(TINY if arch == "mamba1" else TINY2, **MID, **({"headdim": 32} if arch == "mamba2" else {}))
    model = _model(config, method).cuda()
    for p in model.parameters():
        if not p.requires_grad:
            p.data = p.data.bfloat16()
    g = torch.Generator().manual_seed(5)
    lengths = torch.randint(20, 90, (12,), generator=g).tolist()
    prompts = [torch.randint(1, 1024, (n,), generator=g).tolist() for n in lengths]
    kw = dict(max_new_tokens=24, num_beams=4, eos_id=None, batch_invariant=True)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        single = [generate(model, p, **kw) for p in prompts]
        assert generate_batch(model, prompts, **kw) == single


@pytest.mark.gpu
def test_invariant_matmul_rows_do_not_depend_on_the_batch_gpu():
    """On the GPU's matrix units: a row's bits are the same alone and among any number of rows (the LM head's and
    a projection's shapes), and the product agrees with cuBLAS's to bf16 rounding."""
    from stateft.ops.invariant_matmul import invariant_matmul

    g = torch.Generator(device="cuda").manual_seed(0)
    for n, k in ((50280, 768), (4096, 2048)):
        a = torch.randn(200, k, device="cuda", generator=g).bfloat16()
        w = torch.randn(n, k, device="cuda", generator=g).bfloat16() / k**0.5
        full = invariant_matmul(a, w.t())
        for rows in ([0], [5, 6, 7], list(range(80)), list(range(3, 200, 2))):
            assert torch.equal(invariant_matmul(a[rows], w.t()), full[rows]), (n, rows[:3])
        torch.testing.assert_close(full.float(), (a @ w.t()).float(), rtol=2e-2, atol=2e-2)


def test_greedy_copies_the_cache_only_when_rows_leave(monkeypatch):
    """Greedy decoding reorders (copies) the cache only at steps where an example finished: with no EOS, never."""
    model = _model(TINY, "state_offset_h")
    prompts = _prompts(3)[:5]
    selects: list[int] = []
    real_select = RowStep.select

    def select(self, index):
        selects.append(len(index))
        real_select(self, index)

    monkeypatch.setattr(RowStep, "select", select)
    free = generate_batch(model, prompts, max_new_tokens=8, eos_id=None)
    assert selects == []
    assert all(len(out) == 8 for out in free)
    eos = _splitting_tokens(free)[0]
    out = generate_batch(model, prompts, max_new_tokens=8, eos_id=eos)
    # an example of n tokens met its EOS at step n; a select there keeps the examples still going (longer ones)
    stops = sorted({len(o) for o in out if len(o) < 8 - 1})  # at the last step (7) it stops without a select
    expected = [sum(len(o) > n for o in out) for n in stops]
    assert selects == [k for k in expected if k > 0]
    assert selects
    assert out == [naive_decode(model, p, 8, num_beams=1, eos_id=eos) for p in prompts]


@pytest.mark.parametrize(("config", "method"), [(TINY, "lora"), (TINY2, "lora"), (TINY2, None)])
def test_batch_invariant_without_triton_gives_each_prompt_its_own_tokens(config, method, monkeypatch):
    """``batch_invariant`` on a CPU without Triton's interpreter (products row by row): beam search over a batch
    gives each prompt the tokens it gets alone, and no Triton kernel is launched."""
    import stateft.ops.invariance as invariance

    monkeypatch.setattr(invariance, "interpreting", lambda: False)
    monkeypatch.setattr("stateft.ops.invariant_matmul.invariant_matmul", None)  # would fail if called
    model = _model(config, method)
    prompts = _prompts(6)[:5]
    kw = dict(max_new_tokens=6, num_beams=3, eos_id=None, batch_invariant=True)
    assert generate_batch(model, prompts, **kw) == [generate(model, p, **kw) for p in prompts]
