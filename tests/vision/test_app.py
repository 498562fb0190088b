"""Vim through train.py and eval.py on the CPU: the fixture images train, the adapter is saved, eval.py scores it;
wrong pairings and bad folders are one line."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys

import pytest
from safetensors.torch import load_file

from stateft.app.checks import compose_checked, validate_cfg
from stateft.app.evaluation import evaluate
from stateft.app.training import train
from stateft.errors import UserError
from tests.vision.conftest import REPO, VTAB_FIXTURES


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("STATEFT_CACHE_DIR", str(tmp_path / "cache"))


def _overrides(method: str, out, task: str = "dtd") -> list[str]:
    return [
        "model=vim-test", f"method={method}", f"dataset=vtab_{task}", f"dataset.path={VTAB_FIXTURES}",
        "dataset.num_workers=0", "dataset.batch_size=2", "trainer.accelerator=cpu", "trainer.max_epochs=2",
        "trainer.enable_progress_bar=false", "logger=none", f"output_dir={out}",
    ]  # fmt: skip


def test_train_saves_the_adapter_and_eval_scores_it(tmp_path, capsys):
    run = tmp_path / "run"
    metrics = train(compose_checked("train", _overrides("lora", run)))
    printed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("evaluate with:")]
    adapter = run / "adapter"
    meta = json.loads((adapter / "adapter_config.json").read_text())
    tensors = load_file(str(adapter / "adapter_model.safetensors"))
    assert sorted(tensors) == sorted(meta["trainable"])
    assert {"head.weight", "head.bias"} <= set(tensors)  # the task's head is part of every adapter
    assert tensors["head.weight"].shape == (47, 32)  # dtd's 47 classes on vim-test's width
    assert any(".forward_scan.x_proj.lora_A." in n for n in tensors)
    assert any(".backward_scan.x_proj.lora_A." in n for n in tensors)
    assert meta["architecture"]["arch"] == "vim"
    assert meta["architecture"]["padded_vocab_size"] == 47
    assert 0.0 <= metrics["test/accuracy"] <= 100.0
    rows = [json.loads(line) for line in (run / "predictions_test.jsonl").read_text().splitlines()]
    assert [r["index"] for r in rows] == [0, 1, 2, 3]
    # the printed command, as the user would paste it (plus this machine's settings)
    command = shlex.split(printed[0].removeprefix("evaluate with:"))
    assert command[:2] == ["python", "eval.py"]
    assert [a.split("=")[0] for a in command[2:]] == ["adapter"]  # the base model and the data from the records
    local = ["trainer.accelerator=cpu", f"output_dir={tmp_path / 'eval'}"]
    again = evaluate(compose_checked("eval", command[2:] + local))
    assert again["test/accuracy"] == pytest.approx(metrics["test/accuracy"])
    assert (tmp_path / "eval" / "predictions_test.jsonl").read_text() == (run / "predictions_test.jsonl").read_text()


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["model=vim-test", "dataset=glue_rte", "method=lora"], "classifies images but dataset glue_rte is text"),
        (["model=mamba-tiny", "dataset=vtab_dtd", "method=lora"], "is images but model mamba-tiny is a language"),
        (["model=vim-test", "dataset=vtab_dtd", "method=sdt"], "sdt applies to mamba1 models, not to vim"),
    ],
)
def test_wrong_pairings_are_refused_at_start_up(overrides, expected):
    with pytest.raises(UserError, match=expected):
        validate_cfg(compose_checked("train", [*overrides, "output_dir=/tmp/x"]))


def test_a_missing_task_folder_is_one_error_line(tmp_path):
    args = _overrides("lora", tmp_path / "run")
    args[3] = f"dataset.path={tmp_path}"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "train.py", *args], cwd=REPO, env=env, capture_output=True, text=True)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: VTAB task folder")
    assert "dtd" in lines[0]


def test_a_language_adapter_still_evaluates_with_model_on_the_command_line(tmp_path):
    """eval.py model=... with the dataset read from the run folder (the image path must not change the text one)."""
    run = tmp_path / "run"
    overrides = ["model=mamba-tiny", "method=state_offset_h", "dataset=demo", "trainer=debug", "logger=none"]
    train(compose_checked("train", [*overrides, f"output_dir={run}"]))
    args = [f"adapter={run / 'adapter'}", "model=mamba-tiny", "trainer.accelerator=cpu", f"output_dir={tmp_path / 'e'}"]
    assert "test/accuracy" in evaluate(compose_checked("eval", args))
