"""Loading adapters while the server runs: the load runs on the worker between two decoding steps; the requests
already decoding (greedy and beam search, with an adapter or none) keep decoding as alone; requests for the new
adapter decode as it alone; a failed load fails its future (400 over HTTP) and the server goes on; the HTTP endpoint
answers 403 unless the server allows loading."""

from __future__ import annotations

import re
import threading
import time

import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from stateft.errors import UserError  # noqa: E402
from stateft.generation import generate  # noqa: E402
from stateft.models.loading import build_model  # noqa: E402
from stateft.serve import AdapterBank  # noqa: E402
from stateft.serve.app import create_app  # noqa: E402
from stateft.serve.batcher import Batcher, Limits  # noqa: E402
from stateft.serve.routed_lora import RoutedLinear  # noqa: E402
from stateft.serve.routing import NO_ADAPTER, RoutedInitialState, RoutedStateOffset  # noqa: E402
from tests.conftest import TINY  # noqa: E402
from tests.serve.helpers import alone, count_steps, prompts, save_random_adapter  # noqa: E402

ROWS = prompts([5, 3, 6, 4, 2, 7], seed=7)
LONG = 12
OTHER_LINEARS = ["in_proj", "out_proj"]  # LoRA targets the served LoRA adapter C leaves alone


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    """Adapter folders: A (h') and C (LoRA) served from the start; N (h'), M (LoRA of other linears and rank), I (H0
    and conv window) loaded while serving; X (another base's) and bitfit (an unserved method) refused."""
    tmp = tmp_path_factory.mktemp("adapters")
    other_base = TINY.__class__(**{**TINY.to_dict(), "d_state": 8})
    return {
        "A": save_random_adapter(TINY, "state_offset_h", {}, 1, tmp / "A"),
        "C": save_random_adapter(TINY, "lora", {"dropout": 0.0}, 2, tmp / "C"),
        "N": save_random_adapter(TINY, "state_offset_h", {}, 3, tmp / "N"),
        "M": save_random_adapter(TINY, "lora", {"dropout": 0.0, "r": 2, "target_modules": OTHER_LINEARS}, 4, tmp / "M"),
        "I": save_random_adapter(TINY, "init_state", {"conv_state": True}, 5, tmp / "I"),
        "X": save_random_adapter(other_base, "state_offset_h", {}, 6, tmp / "X"),
        "bitfit": save_random_adapter(TINY, "bitfit", {}, 7, tmp / "bitfit"),
    }


@pytest.fixture(scope="module")
def references(dirs):
    """{adapter name or None: the seed-0 base with that adapter alone applied}."""
    models = {name: alone(TINY, dirs[name]) for name in ("A", "C", "N", "M", "I")}
    models[None] = alone(TINY, None)
    return models


def _served(dirs) -> AdapterBank:
    """A fresh bank holding A and C, stacked, as a server starts."""
    bank = AdapterBank(build_model(TINY, seed=0).eval())
    for name in "AC":
        bank.load(name, dirs[name])
    bank.stack()
    return bank


def _alone(references, adapter, prompt, max_new_tokens, num_beams=1) -> list[int]:
    return generate(references[adapter], prompt, max_new_tokens=max_new_tokens, num_beams=num_beams, eos_id=None)


def test_adapters_loaded_while_requests_decode(dirs, references, monkeypatch):
    """N (h') and M (LoRA of linears no served adapter wraps) are loaded after the second and third token of a long
    greedy request, while greedy rows (A; the base model) and beam searches (C; the base model) decode: every load
    runs on the worker, between steps, with those requests in their batches; their answers equal decoding alone,
    and requests for N and M afterwards equal N and M alone."""
    bank = _served(dirs)
    batcher = Batcher(bank, eos_id=None)
    in_step = threading.Event()
    real_step = bank.model.step

    def step(tokens, cache):
        in_step.set()
        try:
            return real_step(tokens, cache)
        finally:
            in_step.clear()

    monkeypatch.setattr(bank.model, "step", step)
    seen: list[tuple] = []  # per load: (thread, in a step, greedy requests decoding, beam searches decoding)
    real_load = AdapterBank.load

    def recorded(self, *args, **kwargs):
        seen.append((threading.current_thread(), in_step.is_set(), len(batcher.running), len(batcher.beams)))
        return real_load(self, *args, **kwargs)

    monkeypatch.setattr(AdapterBank, "load", recorded)
    # the loads are asked for by this thread (as an HTTP handler asks), while the worker waits in the listener
    loads, tokens, when = {}, [], {2: "N", 3: "M"}
    asked, queued = threading.Event(), threading.Event()

    def listener(new: list[int]) -> None:  # called by the worker
        tokens.extend(new)
        if len(tokens) in when:
            asked.set()
            assert queued.wait(60)
            queued.clear()

    jobs = {"A": (ROWS[0], "A", 1), "base": (ROWS[1], None, 1), "beam C": (ROWS[2], "C", 2), "beam": (ROWS[3], None, 2)}
    futures = {key: batcher.submit(p, a, LONG, num_beams=k) for key, (p, a, k) in jobs.items() if key != "A"}
    futures["A"] = batcher.submit(ROWS[0], "A", LONG, on_tokens=listener)
    batcher.start()
    try:
        for name in when.values():
            assert asked.wait(60)
            asked.clear()
            loads[name] = batcher.load(name, dirs[name])
            queued.set()
        answers = {key: future.result(timeout=60) for key, future in futures.items()}
        assert {name: future.result(timeout=60) for name, future in loads.items()} == {"N": 2, "M": 3}
        after = {
            (name, k): batcher.submit(ROWS[4 + k - 1], name, 6, num_beams=k).result(timeout=60)
            for name in ("N", "M")
            for k in (1, 2)
        }
        worker = batcher._thread
    finally:
        batcher.close()
    assert seen == [(worker, False, 2, 2)] * 2  # on the worker, not in a step, all four requests decoding
    assert answers == {key: _alone(references, a, p, LONG, k) for key, (p, a, k) in jobs.items()}
    assert after == {(name, k): _alone(references, name, ROWS[4 + k - 1], 6, k) for name, k in after}
    assert bank.names == ["A", "C", "N", "M"]
    # a base-model row that picked up N or M after the loads (the third token on) would show
    for name in ("N", "M"):
        assert _alone(references, name, ROWS[1], LONG)[3:] != answers["base"][3:]


def test_loading_appends_and_keeps_the_zero_row_last(dirs):
    """Every bank after a load: the rows of the adapters loaded before as they were (padded where the largest rank
    grew), the new adapter's next, the zero row (NO_ADAPTER) last; routed modules put in new slots answer the
    adapters loaded before with zeros (the base model's path)."""
    bank = _served(dirs)
    routed = (RoutedLinear, RoutedStateOffset, RoutedInitialState)

    def banks() -> dict[str, object]:
        return {
            f"{name}.{buffer}": value.clone()
            for name, module in bank.model.named_modules()
            if isinstance(module, routed)
            for buffer, value in module.named_buffers(recurse=False)
        }

    before = banks()
    for name, count in (("M", 3), ("I", 4)):
        assert bank.load(name, dirs[name], stack=True) == count - 1
        after = banks()
        assert set(before) <= set(after)
        for key, old in before.items():
            new = after[key]
            assert new.shape[0] == count + 1, key
            assert new[:-2][tuple(slice(0, n) for n in old.shape)].equal(old[:-1]), key  # earlier adapters' rows
            assert not new[NO_ADAPTER].any(), key  # the zero row: last
        for key in set(after) - set(before):  # a slot no earlier adapter filled: zeros (or no update) for them
            assert not after[key][:-2].any(), key
            assert not after[key][NO_ADAPTER].any(), key
        before = after
    assert any(key.endswith("out_proj.A_bank") for key in after)  # M wrapped a linear, I filled a slot: both checked
    assert any(key.endswith("h0_bank") for key in after)


@pytest.mark.parametrize(
    ("name", "adapter", "message"),
    [
        ("A", "N", r"^adapter name 'A' is taken"),
        ("Y", "X", "another base model"),
        ("Y", "bitfit", "method bitfit cannot be decoded per row"),
        ("Y", None, "is not an adapter directory"),
        ("a b", "N", "adapter name .* must be"),
    ],
    ids=["taken", "other-base", "unserved-method", "missing-folder", "bad-name"],
)
def test_a_failed_load_fails_its_future_and_the_server_goes_on(dirs, references, tmp_path, name, adapter, message):
    """The load is queued while a long request decodes: its future fails with the bank's UserError, the bank is
    unchanged, the request's answer equals decoding alone, and a load after it works."""
    bank = _served(dirs)
    batcher = Batcher(bank, eos_id=None)
    started = threading.Event()
    running = batcher.submit(ROWS[0], "C", LONG, on_tokens=lambda _: started.set())
    batcher.start()
    try:
        assert started.wait(60)
        with pytest.raises(UserError, match=message):
            batcher.load(name, dirs[adapter] if adapter else tmp_path / "missing").result(timeout=60)
        assert bank.names == ["A", "C"]
        assert batcher.load("N", dirs["N"]).result(timeout=60) == 2
        answer = running.result(timeout=60)
        after = batcher.submit(ROWS[4], "N", 5).result(timeout=60)
    finally:
        batcher.close()
    assert answer == _alone(references, "C", ROWS[0], LONG)
    assert after == _alone(references, "N", ROWS[4], 5)


@pytest.mark.parametrize("failing", ["M", "I"])
def test_a_load_whose_stacking_fails_is_taken_back(dirs, references, monkeypatch, failing):
    """The banks of M (LoRA of linears no served adapter wraps) or I (H0 and conv window: slots no served adapter
    fills) are built, then the stacking fails (out of memory): the load fails, the adapter is not listed, those
    linears and slots are the base model's again, and N, loaded next at its index, decodes as N alone (no trace)."""
    bank = _served(dirs)
    real, calls = AdapterBank._stack, []

    def failing_once(self) -> None:
        real(self)
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("out of memory")

    monkeypatch.setattr(AdapterBank, "_stack", failing_once)
    batcher = Batcher(bank, eos_id=None)
    batcher.start()
    try:
        with pytest.raises(RuntimeError, match="out of memory"):
            batcher.load(failing, dirs[failing]).result(timeout=60)
        assert bank.names == ["A", "C"]
        assert batcher.load("N", dirs["N"]).result(timeout=60) == 2
        answers = [batcher.submit(ROWS[4], n, 6).result(timeout=60) for n in ("N", "C", None)]
    finally:
        batcher.close()
    for mixer in bank.model.mixers():
        assert mixer.init_state is None
        assert not any(isinstance(getattr(mixer, linear), RoutedLinear) for linear in OTHER_LINEARS)
    assert answers == [_alone(references, n, ROWS[4], 6) for n in ("N", "C", None)]
    assert _alone(references, failing, ROWS[4], 6) != _alone(references, None, ROWS[4], 6)  # its trace would show


def test_a_load_queued_before_the_worker_starts_runs_first(dirs, references):
    bank = _served(dirs)
    batcher = Batcher(bank, eos_id=None)
    loaded = batcher.load("I", dirs["I"])
    cancelled = batcher.load("N", dirs["N"])
    assert cancelled.cancel()
    batcher.start()
    try:
        assert loaded.result(timeout=60) == 2
        answer = batcher.submit(ROWS[2], "I", 5).result(timeout=60)
    finally:
        batcher.close()
    assert bank.names == ["A", "C", "I"]
    assert answer == _alone(references, "I", ROWS[2], 5)


# -- HTTP ------------------------------------------------------------------------------------------------------------
def _client(dirs, allow_loading: bool) -> TestClient:
    return TestClient(create_app(Batcher(_served(dirs), Limits(max_new_tokens=16)), allow_loading=allow_loading))


def _one_error(response, status: int, message: str) -> None:
    assert response.status_code == status, response.text
    error = response.json()
    assert list(error) == ["error"]
    assert "\n" not in error["error"]
    assert re.search(message, error["error"]), error["error"]


def test_loading_over_http_needs_allow_loading(dirs):
    with _client(dirs, allow_loading=False) as client:
        before = client.get("/adapters").json()
        response = client.post("/adapters", json={"name": "N", "adapter": str(dirs["N"])})
        _one_error(response, 403, "--allow-loading")
        _one_error(client.post("/adapters", json={"path": "/etc"}), 403, "--allow-loading")  # whatever the body
        assert client.get("/adapters").json() == before
        _one_error(client.post("/generate", json={"input_ids": ROWS[0], "adapter": "N"}), 400, "'N' is not loaded")


def test_an_adapter_loaded_over_http_is_listed_and_served(dirs, references, monkeypatch):
    """A local folder, and a hub id resolved as the command line resolves --adapter (`stateft.hub.resolve_adapter`)."""
    resolved: list[str] = []

    def resolve(spec: str):
        resolved.append(spec)
        return (dirs["M"], spec) if spec == "hf://someone/M" else (dirs[spec], spec)  # a stand-in for the hub

    monkeypatch.setattr("stateft.serve.app.resolve_adapter", resolve)
    with _client(dirs, allow_loading=True) as client:
        response = client.post("/adapters", json={"name": "N", "adapter": "N"})
        assert response.status_code == 200, response.text
        assert response.json() == {"name": "N", "method": "state_offset_h"}
        assert client.post("/adapters", json={"name": "M", "adapter": "hf://someone/M"}).json()["name"] == "M"
        listed = client.get("/adapters").json()["adapters"]
        answers = {
            name: client.post("/generate", json={"input_ids": ROWS[5], "adapter": name, "max_new_tokens": 6}).json()
            for name in ("N", "M", "A")
        }
    assert resolved == ["N", "hf://someone/M"]
    assert listed[2:] == [{"name": "N", "method": "state_offset_h"}, {"name": "M", "method": "lora"}]
    expected = {name: generate(references[name], ROWS[5], max_new_tokens=6, eos_id=0) for name in answers}
    assert {name: answer["output_ids"] for name, answer in answers.items()} == expected


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"name": "A", "adapter": "N"}, 400, r"^adapter name 'A' is taken"),
        ({"name": "Y", "adapter": "X"}, 400, "another base model"),
        ({"name": "Y", "adapter": "missing"}, 400, "is not an adapter directory"),
        ({"name": "a/b", "adapter": "N"}, 400, "adapter name .* must be"),
        ({"name": "Y"}, 422, "^adapter: "),
        ({"name": "Y", "adapter": "N", "path": "x"}, 422, "^path: "),
        ({"name": 3, "adapter": "N"}, 422, "^name: "),
    ],
)
def test_a_failed_load_over_http_is_one_error_and_the_server_goes_on(dirs, references, tmp_path, body, status, message):
    folders = {**dirs, "missing": tmp_path / "missing"}
    if isinstance(body.get("adapter"), str):
        body = {**body, "adapter": str(folders[body["adapter"]])}
    with _client(dirs, allow_loading=True) as client:
        _one_error(client.post("/adapters", json=body), status, message)
        assert [a["name"] for a in client.get("/adapters").json()["adapters"]] == ["A", "C"]
        good = client.post("/generate", json={"input_ids": ROWS[0], "adapter": "A", "max_new_tokens": 4})
        assert good.json()["output_ids"] == generate(references["A"], ROWS[0], max_new_tokens=4, eos_id=0)


def test_the_steps_go_on_while_a_hub_adapter_downloads(dirs, monkeypatch):
    """The hub download runs off the worker: a request decoding meanwhile takes steps while the resolution waits,
    and the adapter is loaded afterwards."""
    bank = _served(dirs)
    sizes = count_steps(monkeypatch, bank.model)
    steps_seen: list[int] = []

    def slow_resolve(spec: str):  # a download that ends once the worker has stepped five times meanwhile
        before, deadline = len(sizes), time.monotonic() + 30
        while len(sizes) < before + 5 and time.monotonic() < deadline:
            time.sleep(0.01)
        steps_seen.append(len(sizes) - before)
        return dirs["N"], spec

    monkeypatch.setattr("stateft.serve.app.resolve_adapter", slow_resolve)
    batcher = Batcher(bank, Limits(max_new_tokens=100_000), eos_id=None)
    running = batcher.submit(ROWS[0], "C", 100_000)
    try:
        with TestClient(create_app(batcher, allow_loading=True)) as client:
            response = client.post("/adapters", json={"name": "N", "adapter": "hf://someone/N"})
            running.cancel()
    finally:
        running.cancel()
    assert response.json() == {"name": "N", "method": "state_offset_h"}
    assert steps_seen[0] >= 5


def test_a_load_that_fails_in_the_server_is_500_and_the_next_one_works(dirs, references, monkeypatch):
    real, calls = AdapterBank._stack, []

    def failing_once(self) -> None:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("out of memory\nsecond line")
        real(self)

    with _client(dirs, allow_loading=True) as client:
        monkeypatch.setattr(AdapterBank, "_stack", failing_once)
        body = {"name": "N", "adapter": str(dirs["N"])}
        _one_error(client.post("/adapters", json=body), 500, r"^loading failed: RuntimeError: out of memory$")
        assert client.post("/adapters", json=body).json() == {"name": "N", "method": "state_offset_h"}
        answer = client.post("/generate", json={"input_ids": ROWS[0], "adapter": "N", "max_new_tokens": 5}).json()
    assert answer["output_ids"] == generate(references["N"], ROWS[0], max_new_tokens=5, eos_id=0)
