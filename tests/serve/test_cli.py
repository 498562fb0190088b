"""``python -m stateft.serve``: the base from a config name or a checkpoint folder, adapters checked before the server
starts, a text prompt through the bundled tokenizer; every mistake one ``error:`` line and exit code 2."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from stateft.adapters import load_adapter  # noqa: E402
from stateft.generation import generate  # noqa: E402
from stateft.models.loading import save_pretrained  # noqa: E402
from stateft.serve.cli import build_app, load_base, main, parser  # noqa: E402
from stateft.tokenizer import load_tokenizer  # noqa: E402
from tests.conftest import TINY  # noqa: E402
from tests.serve.helpers import alone, save_random_adapter  # noqa: E402


@pytest.fixture(scope="module")
def tiny_adapter(tmp_path_factory):
    """An adapter of conf/model/mamba-tiny.yaml (the NeoX vocabulary, so text prompts work)."""
    config = load_base("mamba-tiny", "cpu")[0].config
    return save_random_adapter(config, "state_offset_y", {}, 1, tmp_path_factory.mktemp("a") / "A", scale=5.0)


def test_serves_a_text_prompt_with_an_adapter(tiny_adapter):
    app = build_app(parser().parse_args(["--base", "mamba-tiny", "--adapter", f"A={tiny_adapter}"]))
    tokenizer = load_tokenizer()
    model = load_base("mamba-tiny", "cpu")[0]
    load_adapter(tiny_adapter, model)
    expected = generate(model, tokenizer.encode("The answer is"), max_new_tokens=5, eos_id=tokenizer.eos_id)
    body = {"prompt": "The answer is", "adapter": "A", "max_new_tokens": 5}
    with TestClient(app) as client:
        response = client.post("/generate", json=body)
        base = client.post("/generate", json={"prompt": "The answer is", "max_new_tokens": 5})
        with client.stream("POST", "/generate", json={**body, "stream": True}) as streamed:
            events = [json.loads(line[len("data: ") :]) for line in streamed.iter_lines() if line]
    assert response.status_code == 200, response.text
    assert response.json() == {"adapter": "A", "output_ids": expected, "text": tokenizer.decode(expected)}
    assert base.json()["output_ids"] != expected  # the adapter changed the answer: the comparison above means something
    *pieces, last = events
    assert last == {**response.json(), "done": True}
    assert [piece["token_ids"] for piece in pieces] == [[token] for token in expected]
    text = "".join(piece["text"] for piece in pieces)
    assert text
    assert last["text"].startswith(text)  # the text as it comes, in order (a piece ending inside a character waits)


def test_a_bf16_base_decodes_under_bf16_autocast(tiny_adapter):
    """--dtype bfloat16: the base's weights in bf16 (its A_log, D, dt_bias fp32) and the worker under bf16 autocast,
    as eval.py computes: the answer is that setting's own decoding of the prompt."""
    import torch

    app = build_app(
        parser().parse_args(["--base", "mamba-tiny", "--adapter", f"A={tiny_adapter}", "--dtype", "bfloat16"])
    )
    tokenizer = load_tokenizer()
    model = load_base("mamba-tiny", "cpu", "bfloat16")[0]
    assert model.backbone.embedding.weight.dtype == torch.bfloat16
    assert all(m.A_log.dtype == torch.float32 for m in model.mixers())
    load_adapter(tiny_adapter, model)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected = generate(model, tokenizer.encode("The answer is"), max_new_tokens=5, eos_id=tokenizer.eos_id)
    with TestClient(app) as client:
        response = client.post("/generate", json={"prompt": "The answer is", "adapter": "A", "max_new_tokens": 5})
    assert response.status_code == 200, response.text
    assert response.json()["output_ids"] == expected


def test_allow_loading_lets_clients_load_adapters(tiny_adapter):
    """Off by default; with --allow-loading, POST /adapters loads a folder while the server runs."""
    assert parser().parse_args(["--base", "mamba-tiny"]).allow_loading is False
    app = build_app(parser().parse_args(["--base", "mamba-tiny", "--allow-loading"]))
    with TestClient(app) as client:
        response = client.post("/adapters", json={"name": "A", "adapter": str(tiny_adapter)})
        listed = client.get("/adapters").json()
    assert response.status_code == 200, response.text
    assert response.json() == {"name": "A", "method": "state_offset_y"}
    assert listed == {"base": "mamba-tiny", "adapters": [{"name": "A", "method": "state_offset_y"}]}


def _error_line(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: "), err
    assert err.count("\n") == 1, err
    return err


def test_an_unknown_base_is_one_error(capsys):
    assert "names: " in _error_line(capsys, ["--base", "mamba-nope"])


def test_an_adapter_of_another_base_is_one_error(capsys, tmp_path):
    other = save_random_adapter(TINY, "state_offset_h", {}, 1, tmp_path / "A")
    assert "another base model" in _error_line(capsys, ["--base", "mamba-tiny", "--adapter", f"A={other}"])


def test_a_missing_adapter_is_one_error(capsys, tmp_path):
    assert "not an adapter directory" in _error_line(capsys, ["--base", "mamba-tiny", "--adapter", f"A={tmp_path}"])


def test_a_tokenizer_larger_than_the_vocabulary_is_one_error(capsys, tmp_path):
    folder = save_pretrained(alone(TINY, None), tmp_path / "base")
    assert "--tokenizer" in _error_line(capsys, ["--base", str(folder)])


def test_adapter_arguments_are_name_equals_path():
    with pytest.raises(SystemExit):
        parser().parse_args(["--base", "mamba-tiny", "--adapter", "no-equals-sign"])
