"""The HTTP app and its request queue on a tiny random model: answers equal decoding alone (state and LoRA adapters),
waiting requests are batched, greedy rows are refilled as others finish or are cancelled, tokens are streamed as
Server-Sent Events and a stream whose client leaves cancels its request, every bad request gets one error JSON and
the server keeps serving."""

from __future__ import annotations

import asyncio
import json
import re
import threading
from concurrent.futures import CancelledError

import pytest
from starlette.requests import ClientDisconnect

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from stateft.generation import generate  # noqa: E402
from stateft.models.loading import build_model  # noqa: E402
from stateft.serve import AdapterBank  # noqa: E402
from stateft.serve.app import create_app  # noqa: E402
from stateft.serve.batcher import Batcher, Limits  # noqa: E402
from tests.conftest import TINY  # noqa: E402
from tests.serve.helpers import alone, count_steps, save_random_adapter  # noqa: E402

PROMPTS = [[5, 9, 2, 7], [3, 3, 8], [11, 4, 6, 1, 9], [7], [2, 5, 9, 10, 3, 12]]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(bank over TINY with adapters A (h'), B (H0 + conv window) and C (LoRA), {name: reference model})."""
    tmp = tmp_path_factory.mktemp("adapters")
    dirs = {
        "A": save_random_adapter(TINY, "state_offset_h", {}, 1, tmp / "A"),
        "B": save_random_adapter(TINY, "init_state", {"conv_state": True}, 2, tmp / "B"),
        "C": save_random_adapter(TINY, "lora", {"dropout": 0.0}, 3, tmp / "C"),
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
    for adapter in ["A", "B", "C", None]:
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
        "adapters": [
            {"name": "A", "method": "state_offset_h"},
            {"name": "B", "method": "init_state"},
            {"name": "C", "method": "lora"},
        ],
    }


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"input_ids": [1, 2], "adapter": "D"}, 400, r"^adapter 'D' is not loaded; loaded adapters: A, B, C$"),
        ({"input_ids": [1, 64]}, 400, r"token id 64 .*vocabulary \[0, 64\)"),
        ({"input_ids": []}, 400, "non-empty list of token ids"),
        ({"input_ids": [1], "max_new_tokens": 17}, 400, r"max_new_tokens must be an integer in \[0, 16\]"),
        ({"input_ids": [1], "num_beams": 0}, 400, "num_beams must be an integer in"),
        ({"input_ids": [1], "prompt": "hi"}, 400, "exactly one of prompt"),
        ({"prompt": "hi"}, 400, "no tokenizer"),
        ({"input_ids": [1], "max_new_tokens": "5"}, 422, "^max_new_tokens: "),
        ({"input_ids": [1, "2"]}, 422, r"^input_ids\.1: "),
        ({"input_ids": [1], "adaptor": "A"}, 422, "^adaptor: "),
        ({"input_ids": [1], "stream": "yes"}, 422, "^stream: "),
        ({"input_ids": [1, 64], "stream": True}, 400, r"token id 64 .*vocabulary"),
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
    """Requests queued before the worker starts join the running batches together: the greedy ones of any limit,
    the beam searches of any width and limit; each leaves at its own end."""
    bank, references = served
    batcher = Batcher(bank)
    greedy = [("A", 3), (None, 7), ("C", 5), ("A", 7), ("B", 1)]
    futures = [batcher.submit(p, a, n) for p, (a, n) in zip(PROMPTS, greedy)]
    beams = [batcher.submit(PROMPTS[i], a, 5, num_beams=2) for i, a in enumerate(["B", "C", None])]
    other = batcher.submit(PROMPTS[4], "A", 4, num_beams=3)
    batcher.start()
    try:
        answers = [f.result(timeout=60) for f in futures]
        beam_answers = [f.result(timeout=60) for f in beams]
        other_answer = other.result(timeout=60)
    finally:
        batcher.close()
    assert batcher.batch_sizes == [5, 4]
    assert answers == [_expected(references, p, a, n) for p, (a, n) in zip(PROMPTS, greedy)]
    assert beam_answers == [_expected(references, PROMPTS[i], a, 5, 2) for i, a in enumerate(["B", "C", None])]
    assert other_answer == _expected(references, PROMPTS[4], "A", 4, 3)


def _fail_once(monkeypatch, owner, name: str) -> None:
    """``owner.name`` raises a two-line error on its first call, then works."""
    real, calls = getattr(owner, name), []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("out of memory\nsecond line")
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, flaky)


@pytest.mark.parametrize("name", ["hidden_states", "step"], ids=["prefill", "step"])
@pytest.mark.parametrize("num_beams", [1, 2])
def test_a_failing_batch_fails_its_requests_only(served, monkeypatch, name, num_beams):
    bank, references = served
    _fail_once(monkeypatch, bank.model, name)
    body = {"input_ids": PROMPTS[0], "adapter": "A", "max_new_tokens": 3, "num_beams": num_beams}
    with TestClient(create_app(Batcher(bank))) as client:
        failed = client.post("/generate", json=body)
        assert failed.status_code == 500
        assert failed.json() == {"error": "decoding failed: RuntimeError: out of memory"}
        ok = client.post("/generate", json=body)
        assert ok.json()["output_ids"] == _expected(references, PROMPTS[0], "A", 3, num_beams)


def test_concurrent_requests_each_get_their_own_answer(client, served):
    _, references = served
    jobs = [(PROMPTS[i % len(PROMPTS)], ["A", "B", "C", None][i % 4], 2 + i % 5) for i in range(12)]
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


def test_finished_rows_are_refilled_while_others_run(served):
    """max_batch 2, one long request and four short ones queued: each short one takes the slot a finished one left
    while the long one goes on (they all finish before it), and every answer equals its request decoded alone."""
    bank, references = served
    batcher = Batcher(bank, Limits(max_batch=2), eos_id=None)
    jobs = [
        (PROMPTS[0], "C", 12),
        (PROMPTS[1], "A", 2),
        (PROMPTS[2], None, 3),
        (PROMPTS[3], "B", 1),
        (PROMPTS[4], "C", 2),
    ]
    futures = [batcher.submit(*job) for job in jobs]
    order: list[int] = []
    for i, future in enumerate(futures):
        future.add_done_callback(lambda _, i=i: order.append(i))
    batcher.start()
    try:
        answers = [f.result(timeout=60) for f in futures]
    finally:
        batcher.close()
    assert order == [1, 2, 3, 4, 0]
    assert batcher.batch_sizes == [2, 1, 1, 1]  # the first two together, then one join per slot freed
    expected = [generate(references[a], p, max_new_tokens=n, eos_id=None) for p, a, n in jobs]
    assert answers == expected
    assert [len(a) for a in answers] == [n for _, _, n in jobs]


def test_tokens_reach_the_listener_as_they_are_decoded(served):
    """Greedy: one call per token, each before the request resolves; beam search: the answer in one call."""
    bank, references = served
    batcher = Batcher(bank, eos_id=None)
    pieces: dict[str, list[tuple[list[int], bool]]] = {"greedy": [], "beam": []}
    futures: dict[str, object] = {}
    for kind, beams in [("greedy", 1), ("beam", 2)]:
        listener = lambda tokens, kind=kind: pieces[kind].append((tokens, futures[kind].done()))  # noqa: E731
        futures[kind] = batcher.submit(PROMPTS[2], "C", 5, num_beams=beams, on_tokens=listener)
    batcher.start()
    try:
        answers = {kind: future.result(timeout=60) for kind, future in futures.items()}
    finally:
        batcher.close()
    assert answers["greedy"] == generate(references["C"], PROMPTS[2], max_new_tokens=5, eos_id=None)
    assert pieces["greedy"] == [([token], False) for token in answers["greedy"]]
    assert pieces["beam"] == [(answers["beam"], False)]


def _events(response) -> list[dict]:
    assert response.headers["content-type"].startswith("text/event-stream")
    lines = [line for line in response.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines), lines
    return [json.loads(line[len("data: ") :]) for line in lines]


@pytest.mark.parametrize("num_beams", [1, 2])
def test_a_streamed_answer_is_the_tokens_then_the_whole_answer(client, served, num_beams):
    _, references = served
    expected = _expected(references, PROMPTS[4], "C", 6, num_beams)
    body = {"input_ids": PROMPTS[4], "adapter": "C", "max_new_tokens": 6, "num_beams": num_beams, "stream": True}
    with client.stream("POST", "/generate", json=body) as response:
        assert response.status_code == 200
        events = _events(response)
    *pieces, last = events
    assert last == {"adapter": "C", "output_ids": expected, "done": True}
    assert [t for piece in pieces for t in piece["token_ids"]] == expected
    assert len(pieces) == (len(expected) if num_beams == 1 else 1)


def test_a_stream_whose_decoding_fails_ends_with_one_error(served, monkeypatch):
    bank, references = served
    _fail_once(monkeypatch, bank.model, "step")
    body = {"input_ids": PROMPTS[0], "adapter": "A", "max_new_tokens": 4, "stream": True}
    with TestClient(create_app(Batcher(bank, eos_id=None))) as client:
        with client.stream("POST", "/generate", json=body) as response:
            events = _events(response)
        assert events == [
            {"token_ids": generate(references["A"], PROMPTS[0], max_new_tokens=1, eos_id=None)},  # picked before
            {"error": "decoding failed: RuntimeError: out of memory"},
        ]
        ok = client.post("/generate", json={**body, "stream": False})
        assert ok.json()["output_ids"] == generate(references["A"], PROMPTS[0], max_new_tokens=4, eos_id=None)


def test_a_cancelled_request_leaves_its_batch_and_its_place_is_refilled(served, monkeypatch):
    """max_batch 2: request 1, cancelled by its listener on its second token, leaves the running batch before the
    next step (it emits nothing more, costs no step past the one already picked) and request 2, waiting, takes its
    place; the others' answers equal decoding alone."""
    bank, references = served
    sizes = count_steps(monkeypatch, bank.model)
    batcher = Batcher(bank, Limits(max_batch=2), eos_id=None)
    seen: list[list[int]] = []
    futures = {}

    def listener(tokens: list[int]) -> None:
        seen.append(tokens)
        if len(seen) == 2:
            futures[1].cancel()

    futures[0] = batcher.submit(PROMPTS[0], "C", 10)
    futures[1] = batcher.submit(PROMPTS[1], "A", 10, on_tokens=listener)
    futures[2] = batcher.submit(PROMPTS[2], "B", 3)
    batcher.start()
    try:
        answers = [futures[i].result(timeout=60) for i in (0, 2)]
    finally:
        batcher.close()
    assert futures[1].cancelled()
    with pytest.raises(CancelledError):
        futures[1].result()
    assert seen == [[token] for token in generate(references["A"], PROMPTS[1], max_new_tokens=2, eos_id=None)]
    assert answers[0] == generate(references["C"], PROMPTS[0], max_new_tokens=10, eos_id=None)
    assert answers[1] == generate(references["B"], PROMPTS[2], max_new_tokens=3, eos_id=None)
    assert batcher.batch_sizes == [2, 1]
    # rows stepped: 0 and 1 twice (1's second step picked before its cancel); 0 and 2 until 2's third token; 0 alone
    assert sizes == [2, 2, 2, 2, 1, 1, 1, 1, 1]


def test_cancelled_beam_searches_leave_and_queued_ones_never_start(served, monkeypatch):
    """A beam search cancelled while it decodes (by a greedy request's listener, on that one's second token) leaves
    the running searches with its rows; one cancelled while queued is never prefilled; the others' answers equal
    decoding alone."""
    bank, references = served
    sizes = count_steps(monkeypatch, bank.model)
    batcher = Batcher(bank, eos_id=None)
    futures, seen = {}, []

    def listener(tokens: list[int]) -> None:
        seen.append(tokens)
        if len(seen) == 2:
            futures["B"].cancel()

    futures["G"] = batcher.submit(PROMPTS[0], "A", 3, on_tokens=listener)
    futures["B"] = batcher.submit(PROMPTS[1], "C", 10, num_beams=2)
    futures["Q"] = batcher.submit(PROMPTS[3], "B", 10, num_beams=3)
    futures["D"] = batcher.submit(PROMPTS[2], None, 4, num_beams=2)
    assert futures["Q"].cancel()
    batcher.start()
    try:
        answers = {name: futures[name].result(timeout=60) for name in ("G", "D")}
    finally:
        batcher.close()
    assert futures["B"].cancelled()
    assert answers["G"] == generate(references["A"], PROMPTS[0], max_new_tokens=3, eos_id=None)
    assert answers["D"] == generate(references[None], PROMPTS[2], max_new_tokens=4, num_beams=2, eos_id=None)
    assert batcher.batch_sizes == [1, 2]  # G; B and D (Q never joined)
    # steps, greedy then beams: G's row and B's and D's 4, twice (B's second step picked before its cancel), G done
    # at its third token; then D's 2 rows once, D done at its fourth step
    assert sizes == [1, 4, 1, 4, 2]


async def _stream_and_leave(app, body: dict, after: int, spec_version: str, gone_at_start: bool = False) -> list[bytes]:
    """POST ``body`` to ``app`` as an ASGI server would, the client disconnecting once ``after`` body chunks have
    come: the chunks sent. The server (``spec_version``) tells the app of the disconnect through ``receive`` only; a
    send after it is dropped, as a server drops output to a closed connection."""
    chunks: list[bytes] = []
    gone = asyncio.Event()
    requested = False

    async def receive() -> dict:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": json.dumps(body).encode(), "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        if gone_at_start:  # the connection closed before the answer began: the server's send fails
            gone.set()
            raise OSError("connection closed")
        if message["type"] == "http.response.body" and message.get("body"):
            chunks.append(message["body"])
            if len(chunks) == after:
                gone.set()

    scope = {
        "type": "http", "asgi": {"version": "3.0", "spec_version": spec_version}, "http_version": "1.1",
        "method": "POST", "scheme": "http", "path": "/generate", "raw_path": b"/generate", "root_path": "",
        "query_string": b"", "headers": [(b"content-type", b"application/json"), (b"host", b"test")],
        "client": ("test", 1), "server": ("test", 80),
    }  # fmt: skip
    try:
        await asyncio.wait_for(app(scope, receive, send), 60)
    except (OSError, ClientDisconnect):  # the failed send, as Starlette passes it on
        assert gone_at_start
    return chunks


# 2.3: Starlette watches receive itself and cancels the stream; 2.4: it does not, the app polls is_disconnected;
# gone at start: the server's first send fails (under 2.4 the events never start), the response cancels on its end
LEAVING = [("2.3", False), ("2.4", False), ("2.4", True)]


@pytest.mark.parametrize(("spec_version", "gone_at_start"), LEAVING, ids=["stream-cancelled", "disconnect-polled",
                                                                          "gone-at-start"])  # fmt: skip
def test_a_stream_whose_client_leaves_stops_decoding(served, monkeypatch, spec_version, gone_at_start):
    """The client leaves after three tokens of a long request (or before its first byte): its request is cancelled
    and costs few steps (not its limit), the tokens streamed until then are decoding alone's, no answer follows, and
    the server goes on."""
    bank, references = served
    long = 4000
    if spec_version == "2.3" or gone_at_start:  # no polling: the stream's own cancellation must stop the request
        monkeypatch.setattr("stateft.serve.app.WATCH_S", 3600.0)
    sizes = count_steps(monkeypatch, bank.model)
    batcher = Batcher(bank, Limits(max_new_tokens=long), eos_id=None)
    body = {"input_ids": PROMPTS[3], "adapter": "C", "max_new_tokens": long, "stream": True}
    batcher.start()
    try:
        chunks = asyncio.run(_stream_and_leave(create_app(batcher), body, 3, spec_version, gone_at_start))
        after = batcher.submit(PROMPTS[4], "A", 5).result(timeout=60)
    finally:
        batcher.close()  # returns once the running batches are empty: the long request has left
    assert after == generate(references["A"], PROMPTS[4], max_new_tokens=5, eos_id=None)
    events = [json.loads(chunk.decode().removeprefix("data: ")) for chunk in chunks]
    streamed = [token for event in events for token in event["token_ids"]]
    assert (events == []) if gone_at_start else len(events) >= 3
    assert all(list(event) == ["token_ids"] for event in events)  # no answer, no error: the stream just ended
    assert streamed == generate(references["C"], PROMPTS[3], max_new_tokens=len(streamed), eos_id=None)
    assert len(sizes) < long // 2


def test_cancelled_requests_count_as_done_for_concurrent_futures_wait(served):
    """concurrent.futures.wait / as_completed count a cancelled future as done only once the worker has told them:
    a request cancelled while decoding and one cancelled while queued are both done for them."""
    from concurrent.futures import as_completed, wait

    bank, _ = served
    batcher = Batcher(bank, Limits(max_batch=1, max_new_tokens=4000), eos_id=None)
    started = threading.Event()
    decoding = batcher.submit(PROMPTS[0], "A", 4000, on_tokens=lambda _: started.set())
    queued = batcher.submit(PROMPTS[1], "B", 5)  # waits: one place
    batcher.start()
    try:
        assert started.wait(60)
        queued.cancel()
        decoding.cancel()
        done, pending = wait([decoding, queued], timeout=60)
        assert pending == set()
        assert done == {decoding, queued}
        assert set(as_completed([decoding, queued], timeout=60)) == {decoding, queued}
    finally:
        batcher.close()
