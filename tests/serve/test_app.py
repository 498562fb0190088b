"""The HTTP app and its request queue on a tiny random model: answers equal decoding alone, waiting requests are
batched, every bad request gets one error JSON and the server keeps serving."""

from __future__ import annotations

import re
import threading

import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from stateft.generation import generate  # noqa: E402
from stateft.models.loading import build_model  # noqa: E402
from stateft.serve import AdapterBank  # noqa: E402
from stateft.serve.app import create_app  # noqa: E402
from stateft.serve.batcher import Batcher, Limits  # noqa: E402
from tests.conftest import TINY  # noqa: E402
from tests.serve.helpers import alone, save_random_adapter  # noqa: E402

PROMPTS = [[5, 9, 2, 7], [3, 3, 8], [11, 4, 6, 1, 9], [7], [2, 5, 9, 10, 3, 12]]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(batcher over TINY with adapters A (h') and B (H0 + conv window), {name: reference model})."""
    tmp = tmp_path_factory.mktemp("adapters")
    dirs = {
        "A": save_random_adapter(TINY, "state_offset_h", {}, 1, tmp / "A"),
        "B": save_random_adapter(TINY, "init_state", {"conv_state": True}, 2, tmp / "B"),
    }
    bank = AdapterBank(build_model(TINY, seed=0).eval())
    for name, directory in dirs.items():
        bank.load(name, directory)
    references = {name: alone(TINY, directory) for name, directory in dirs.items()}
    references[None] = alone(TINY, None)
    return bank, references


def _expected(references, prompt, adapter, max_new_tokens, num_beams=1):
    return generate(references[adapter], prompt, max_new_tokens=max_new_tokens, num_beams=num_beams, eos_id=0)


@pytest.fixture
def client(served):
    bank, _ = served
    with TestClient(create_app(Batcher(bank, Limits(max_new_tokens=16)), base_name="tiny")) as c:
        yield c


@pytest.mark.parametrize("num_beams", [1, 2])
def test_answers_equal_decoding_alone(client, served, num_beams):
    _, references = served
    for adapter in ["A", "B", None]:
        body = {"input_ids": PROMPTS[2], "adapter": adapter, "max_new_tokens": 6, "num_beams": num_beams}
        response = client.post("/generate", json=body)
        assert response.status_code == 200, response.text
        assert response.json() == {
            "adapter": adapter,
            "output_ids": _expected(references, PROMPTS[2], adapter, 6, num_beams),
        }


def test_lists_the_adapters(client):
    assert client.get("/adapters").json() == {
        "base": "tiny",
        "adapters": [{"name": "A", "method": "state_offset_h"}, {"name": "B", "method": "init_state"}],
    }


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"input_ids": [1, 2], "adapter": "C"}, 400, r"^adapter 'C' is not loaded; loaded adapters: A, B$"),
        ({"input_ids": [1, 64]}, 400, r"token id 64 .*vocabulary \[0, 64\)"),
        ({"input_ids": []}, 400, "non-empty list of token ids"),
        ({"input_ids": [1], "max_new_tokens": 17}, 400, r"max_new_tokens must be an integer in \[0, 16\]"),
        ({"input_ids": [1], "num_beams": 0}, 400, "num_beams must be an integer in"),
        ({"input_ids": [1], "prompt": "hi"}, 400, "exactly one of prompt"),
        ({"prompt": "hi"}, 400, "no tokenizer"),
        ({"input_ids": [1], "max_new_tokens": "5"}, 422, "^max_new_tokens: "),
        ({"input_ids": [1, "2"]}, 422, r"^input_ids\.1: "),
        ({"input_ids": [1], "adaptor": "A"}, 422, "^adaptor: "),
        ({}, 400, "exactly one of prompt"),
    ],
)
def test_a_bad_request_is_one_error_and_the_server_goes_on(client, served, body, status, message):
    response = client.post("/generate", json=body)
    assert response.status_code == status
    error = response.json()
    assert list(error) == ["error"]
    assert "\n" not in error["error"]
    assert re.search(message, error["error"]), error["error"]
    good = client.post("/generate", json={"input_ids": PROMPTS[0], "adapter": "A", "max_new_tokens": 4})
    assert good.json()["output_ids"] == _expected(served[1], PROMPTS[0], "A", 4)


def test_a_body_that_is_not_json_is_one_error(client):
    response = client.post("/generate", content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert list(response.json()) == ["error"]


def test_waiting_requests_are_decoded_as_one_batch(served):
    """Requests queued before the worker starts: greedy ones of any length in one batch (each cut to its own
    limit), beam ones by (width, limit)."""
    bank, references = served
    batcher = Batcher(bank)
    greedy = [("A", 3), (None, 7), ("B", 5), ("A", 7), ("B", 1)]
    futures = [batcher.submit(p, a, n) for p, (a, n) in zip(PROMPTS, greedy)]
    beams = [batcher.submit(PROMPTS[i], a, 5, num_beams=2) for i, a in enumerate(["B", "A", None])]
    other = batcher.submit(PROMPTS[4], "A", 4, num_beams=2)
    batcher.start()
    try:
        answers = [f.result(timeout=60) for f in futures]
        beam_answers = [f.result(timeout=60) for f in beams]
        other_answer = other.result(timeout=60)
    finally:
        batcher.close()
    assert batcher.batch_sizes == [5, 3, 1]
    assert answers == [_expected(references, p, a, n) for p, (a, n) in zip(PROMPTS, greedy)]
    assert beam_answers == [_expected(references, PROMPTS[i], a, 5, 2) for i, a in enumerate(["B", "A", None])]
    assert other_answer == _expected(references, PROMPTS[4], "A", 4, 2)


def test_a_failing_batch_fails_its_requests_only(served, monkeypatch):
    bank, references = served
    real, calls = bank.generate, []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("out of memory\nsecond line")
        return real(*args, **kwargs)

    monkeypatch.setattr(bank, "generate", flaky)
    with TestClient(create_app(Batcher(bank))) as client:
        failed = client.post("/generate", json={"input_ids": PROMPTS[0], "adapter": "A", "max_new_tokens": 3})
        assert failed.status_code == 500
        assert failed.json() == {"error": "decoding failed: RuntimeError: out of memory"}
        ok = client.post("/generate", json={"input_ids": PROMPTS[0], "adapter": "A", "max_new_tokens": 3})
        assert ok.json()["output_ids"] == _expected(references, PROMPTS[0], "A", 3)


def test_concurrent_requests_each_get_their_own_answer(client, served):
    _, references = served
    jobs = [(PROMPTS[i % len(PROMPTS)], ["A", "B", None][i % 3], 2 + i % 5) for i in range(12)]
    results: dict[int, list[int]] = {}

    def post(i):
        prompt, adapter, n = jobs[i]
        response = client.post("/generate", json={"input_ids": prompt, "adapter": adapter, "max_new_tokens": n})
        results[i] = response.json()["output_ids"]

    threads = [threading.Thread(target=post, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [results[i] for i in range(len(jobs))] == [_expected(references, *job) for job in jobs]
