"""Continuous batching: rows joining a running greedy batch at different steps (and leaving at their EOS or limit)
each decode what their adapter gives alone, Mamba-1 and Mamba-2, state and LoRA adapters mixed."""

from __future__ import annotations

import pytest

from stateft.generation import generate
from stateft.models.loading import build_model
from stateft.serve import AdapterBank
from stateft.serve.running import RunningBatch
from stateft.serve.running_beams import RunningBeams
from tests.conftest import TINY, TINY2
from tests.serve.helpers import alone, count_steps, prompts, save_random_adapter


def _bank(config, tmp_path) -> tuple[AdapterBank, dict[str, object]]:
    """A bank over the tiny base holding a LoRA adapter ("L") and a state-offset one ("S"), and their folders."""
    directories = {
        "L": save_random_adapter(config, "lora", {"dropout": 0.0}, 1, tmp_path / "L"),
        "S": save_random_adapter(config, "state_offset_h", {}, 2, tmp_path / "S"),
    }
    bank = AdapterBank(build_model(config, seed=0).eval())
    for name, directory in directories.items():
        bank.load(name, directory)
    return bank, directories


# (adapter, limit) per request; requests join in waves: before the first step, after one, after three
JOBS = [("L", 9), (None, 2), ("S", 4), ("L", 1), ("S", 6), ("L", 3), (None, 5), ("S", 2)]
WAVES = {0: [0, 1, 2], 1: [3, 4], 3: [5, 6, 7]}


@pytest.mark.parametrize("config", [TINY, TINY2], ids=["mamba1", "mamba2"])
def test_rows_joining_a_running_batch_decode_as_alone(config, tmp_path):
    bank, directories = _bank(config, tmp_path)
    rows = prompts([5, 3, 7, 1, 6, 4, 5, 2], seed=3)
    references = {name: alone(config, directories.get(name)) for name in (None, "L", "S")}
    models = [references[a] for a, _ in JOBS]
    eos = generate(models[4], rows[4], max_new_tokens=JOBS[4][1], eos_id=None)[-1]  # request 4 stops at an EOS
    batch = RunningBatch(bank.model, bank.routing, eos_id=eos)
    outputs: dict[int, list[int]] = {}
    held = []  # the requests in the batch at every step
    for step in range(40):
        wave = WAVES.get(step, [])
        batch.join(wave, [rows[i] for i in wave], [bank.index(JOBS[i][0]) for i in wave], [JOBS[i][1] for i in wave])
        held.append({row.key for row in batch.rows})
        _, finished = batch.pick()
        outputs.update({row.key: row.tokens for row in finished})
        batch.advance()
        if not batch and step > max(WAVES):
            break
    expected = [generate(m, p, max_new_tokens=n, eos_id=eos) for m, p, (_, n) in zip(models, rows, JOBS)]
    assert [outputs[i] for i in range(len(JOBS))] == expected
    wave_of = {i: step for step, wave in WAVES.items() for i in wave}
    assert any(len({wave_of[i] for i in keys}) > 1 for keys in held), held  # rows joined a batch that had run


# (adapter, beams, limit) per request; requests join in waves as above
BEAM_JOBS = [("L", 2, 7), (None, 3, 3), ("S", 2, 5), ("L", 3, 2), ("S", 2, 6), ("L", 2, 4), (None, 2, 5), ("S", 3, 3)]


@pytest.mark.parametrize("config", [TINY, TINY2], ids=["mamba1", "mamba2"])
def test_beam_searches_joining_a_running_batch_decode_as_alone(config, tmp_path):
    """Examples of different beam widths and limits joining and leaving: each one's answer is its search alone."""
    bank, directories = _bank(config, tmp_path)
    rows = prompts([5, 3, 7, 1, 6, 4, 5, 2], seed=4)
    references = {name: alone(config, directories.get(name)) for name in (None, "L", "S")}
    models = [references[a] for a, _, _ in BEAM_JOBS]
    # an EOS that finishes request 4 before its limit, so that Beams ends some searches itself
    eos = generate(models[4], rows[4], max_new_tokens=BEAM_JOBS[4][2], num_beams=2, eos_id=None)[-1]
    batch = RunningBeams(bank.model, bank.routing, eos_id=eos, length_penalty=1.0)
    answers: dict[int, list[int]] = {}
    held = []
    for step in range(40):
        wave = WAVES.get(step, [])
        jobs = [BEAM_JOBS[i] for i in wave]
        batch.join(wave, [rows[i] for i in wave], [bank.index(a) for a, _, _ in jobs], [k for _, k, _ in jobs],
                   [n for _, _, n in jobs])  # fmt: skip
        held.append({example.key for example in batch.examples})
        answers.update({example.key: example.search.best() for example in batch.pick()})
        batch.advance()
        if not batch and step > max(WAVES):
            break
    expected = [
        generate(m, p, max_new_tokens=n, num_beams=k, eos_id=eos) for m, p, (_, k, n) in zip(models, rows, BEAM_JOBS)
    ]
    assert [answers[i] for i in range(len(BEAM_JOBS))] == expected
    wave_of = {i: step for step, wave in WAVES.items() for i in wave}
    assert any(len({wave_of[i] for i in keys}) > 1 for keys in held), held  # examples joined a batch that had run


def test_dropped_rows_leave_the_batch_and_the_others_decode_as_alone(tmp_path, monkeypatch):
    """Rows 1 and 3 dropped after two tokens: they cost no step from then on, a new row takes a freed slot, and every
    other row's tokens are what its adapter gives alone."""
    bank, directories = _bank(TINY, tmp_path)
    rows = prompts([5, 3, 7, 4, 6], seed=5)
    jobs = [("L", 8), ("S", 8), (None, 8), ("L", 8), ("S", 3)]  # (adapter, limit); request 4 joins at step 2
    models = [alone(TINY, directories.get(a)) for a, _ in jobs]
    sizes = count_steps(monkeypatch, bank.model)
    batch = RunningBatch(bank.model, bank.routing, eos_id=None)
    batch.join([0, 1, 2, 3], rows[:4], [bank.index(a) for a, _ in jobs[:4]], [n for _, n in jobs[:4]])
    outputs: dict[int, list[int]] = {}
    for step in range(20):
        if step == 2:
            dropped = batch.drop(lambda key: key in (1, 3))
            assert {row.key: row.tokens for row in dropped} == {
                i: generate(models[i], rows[i], max_new_tokens=2, eos_id=None) for i in (1, 3)
            }
            batch.join([4], [rows[4]], [bank.index(jobs[4][0])], [jobs[4][1]])
        assert batch.drop(lambda key: False) == []
        _, finished = batch.pick()
        outputs.update({row.key: row.tokens for row in finished})
        batch.advance()
        if not batch:
            break
    assert outputs == {i: generate(models[i], rows[i], max_new_tokens=jobs[i][1], eos_id=None) for i in (0, 2, 4)}
    # rows stepped: all four, twice; then 0, 2 and 4 until 4 ends (its third token, picked at step 4); then 0 and 2
    assert sizes == [4, 4, 3, 3, 2, 2, 2]


def test_dropped_beam_searches_leave_the_batch_with_their_rows(tmp_path, monkeypatch):
    """Of three searches (2, 3 and 2 beams), the middle one dropped after two steps: its three rows leave, and the
    others' answers are their searches alone."""
    bank, directories = _bank(TINY, tmp_path)
    rows = prompts([5, 3, 7], seed=6)
    jobs = [("L", 2, 6), ("S", 3, 6), ("S", 2, 5)]  # (adapter, beams, limit)
    models = [alone(TINY, directories.get(a)) for a, _, _ in jobs]
    sizes = count_steps(monkeypatch, bank.model)
    batch = RunningBeams(bank.model, bank.routing, eos_id=None, length_penalty=1.0)
    batch.join([0, 1, 2], rows, [bank.index(a) for a, _, _ in jobs], [k for _, k, _ in jobs], [n for _, _, n in jobs])
    answers: dict[int, list[int]] = {}
    for step in range(20):
        if step == 2:
            assert [example.key for example in batch.drop(lambda key: key == 1)] == [1]
            assert batch.step.cache.layers[0].ssm.shape[0] == 4
        answers.update({example.key: example.search.best() for example in batch.pick()})
        batch.advance()
        if not batch:
            break
    kept = {i: jobs[i] for i in (0, 2)}
    assert answers == {
        i: generate(models[i], rows[i], max_new_tokens=n, num_beams=k, eos_id=None) for i, (_, k, n) in kept.items()
    }
    # rows stepped: 2 + 3 + 2 twice; then 2 + 2 until search 2 reaches its limit (5 picks); then search 0's 2
    assert sizes == [7, 7, 4, 4, 2]
