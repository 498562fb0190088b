"""The two ways in: lm-eval's command line with ``--model stateft`` (``python -m stateft.harness``) and
``python eval.py harness=<name>`` writing the run folder's metrics.json."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from stateft.app.checks import compose_checked
from stateft.app.evaluation import evaluate
from stateft.errors import UserError
from stateft.harness import StateftLM
from stateft.harness.tasks import run_tasks
from tests.harness.conftest import REPO, TASKS, save_tiny_adapter

TASK = "stateft_tiny_mc"


def _env() -> dict[str, str]:
    import os

    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", PYTHONPATH=str(REPO), TOKENIZERS_PARALLELISM="false")
    return env


def _harness_cfg(tmp_path, adapter, *more: str):
    overrides = [f"adapter={adapter}", "harness=commonsense8", f"output_dir={tmp_path / 'out'}", *more]
    cfg = compose_checked("eval", overrides)
    assert list(cfg.harness.tasks) == [
        "boolq", "piqa", "social_iqa", "hellaswag", "winogrande", "arc_easy", "arc_challenge", "openbookqa",
    ]  # fmt: skip
    assert cfg.harness.num_fewshot == 0
    cfg.harness.tasks = {TASK: "acc_norm"}  # the eight need the hub; the fixture task stands in for them
    cfg.harness.include_path = str(TASKS)
    return cfg


def test_eval_py_harness_writes_metrics_json(at_repo, tmp_path):
    adapter = save_tiny_adapter(tmp_path / "adapter", "state_offset_h")
    cfg = _harness_cfg(tmp_path, adapter, "trainer.accelerator=cpu")
    metrics = evaluate(cfg)
    saved = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert saved == metrics
    assert saved["adapter"] == str(adapter)
    assert saved["harness"] == "commonsense8"
    assert saved["num_fewshot"] == 0
    # the same numbers as the model type alone, and the reported metric is the one the config names
    alone, _ = run_tasks(StateftLM(adapter=str(adapter), device="cpu"), {TASK: "acc_norm"}, include_path=str(TASKS))
    for key in (f"harness/{TASK}/acc", f"harness/{TASK}/acc_norm", f"harness/{TASK}", "harness/average"):
        assert saved[key] == pytest.approx(alone[key])
    assert saved[f"harness/{TASK}"] == saved[f"harness/{TASK}/acc_norm"]


def test_eval_py_harness_refuses_an_adapter_of_another_model(at_repo, tmp_path):
    adapter = save_tiny_adapter(tmp_path / "adapter", "state_offset_h")
    cfg = _harness_cfg(tmp_path, adapter, "model=mamba2-tiny")
    with pytest.raises(UserError, match="trained on another base model"):
        evaluate(cfg)
    cfg = _harness_cfg(tmp_path, adapter)
    cfg.adapter = None
    with pytest.raises(UserError, match="pass adapter=PATH"):
        evaluate(cfg)
    assert not (tmp_path / "out" / "metrics.json").exists()


def test_model_stateft_is_registered_on_import():
    """What ``--model stateft --model_args ...`` does: the registry's class built from the argument string (lm-eval's
    own model types stay registered beside it)."""
    from lm_eval.api.registry import get_model

    assert get_model("stateft") is StateftLM
    assert get_model("hf").__name__ == "HFLM"
    lm = get_model("stateft").create_from_arg_string("pretrained=mamba-tiny,max_length=512", {"batch_size": "8"})
    assert (lm.batch_size, lm.max_length, lm.model.config.d_model) == (8, 512, 32)


@pytest.mark.slow  # a fresh interpreter indexes lm-eval's own tasks (~10 s on top of the imports)
def test_lm_eval_command_line_with_model_stateft(at_repo, tmp_path):
    out = tmp_path / "results"
    cmd = [
        sys.executable, "-m", "stateft.harness", "--model", "stateft",
        "--model_args", "pretrained=mamba-tiny", "--device", "cpu", "--tasks", TASK, "--include_path", str(TASKS),
        "--batch_size", "4", "--output_path", str(out),
    ]  # fmt: skip
    done = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert TASK in done.stdout
    (results,) = out.rglob("results_*.json")
    result = json.loads(results.read_text())["results"][TASK]
    alone, _ = run_tasks(StateftLM(pretrained="mamba-tiny", device="cpu"), {TASK: "acc"}, include_path=str(TASKS))
    assert result["acc,none"] == pytest.approx(alone[f"harness/{TASK}/acc"])


@pytest.mark.slow  # as above
def test_lm_eval_command_line_bad_adapter_is_one_line(at_repo, tmp_path):
    other = tmp_path / "not_an_adapter"
    other.mkdir()
    cmd = [
        sys.executable, "-m", "stateft.harness", "--model", "stateft", "--model_args",
        f"pretrained=mamba-tiny,adapter={other}", "--tasks", TASK, "--include_path", str(TASKS),
    ]  # fmt: skip
    done = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        f"error: {other} is not an adapter directory (no adapter_config.json): pass <run>/adapter"
    )
