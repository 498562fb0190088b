"""Runs of train(cfg)/evaluate(cfg) in-process on fixture data with tiny models (trainer=debug: fast_dev_run)."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from stateft.app.evaluation import evaluate
from stateft.app.training import train
from tests.app.conftest import DATASETS, METHODS, debug_overrides

MATRIX = [(m, d) for m in METHODS for d in DATASETS]  # every method x every dataset (~0.5 s a run)


def _check_run(out: Path, metrics: dict) -> None:
    adapter = out / "adapter"
    meta = json.loads((adapter / "adapter_config.json").read_text())
    tensors = load_file(str(adapter / "adapter_model.safetensors"))
    assert sorted(tensors) == sorted(meta["trainable"])  # the adapter only: no frozen base weights
    assert sum(t.numel() for t in tensors.values()) == metrics["params/trainable"]
    assert json.loads((adapter / "run_config.json").read_text())["dataset"]["name"]  # eval.py finds its dataset
    saved = json.loads((out / "metrics.json").read_text())
    assert any(k.startswith("test/") for k in saved)
    rows = [json.loads(line) for line in (out / "predictions_test.jsonl").read_text().splitlines()]
    assert rows
    assert sorted(r["index"] for r in rows) == list(range(len(rows)))  # every test example once
    assert all(isinstance(r["prediction"], str) and r["prompt"] for r in rows)


@pytest.mark.parametrize(("method", "dataset"), MATRIX)
def test_every_method_x_dataset_runs_debug(compose, tmp_path, method, dataset):
    metrics = train(compose("train", debug_overrides(method, dataset, tmp_path)))
    _check_run(tmp_path, metrics)


def test_training_lowers_the_loss_and_eval_reproduces_the_test_metrics(compose, tmp_path):
    run = tmp_path / "run"
    overrides = debug_overrides("state_offset_h", "demo", run)
    overrides += [
        "trainer=default",
        "trainer.accelerator=cpu",
        "trainer.max_epochs=3",
        "method.lr=0.2",
        "trainer.enable_progress_bar=false",
        "logger=csv",
    ]
    metrics = train(compose("train", overrides))
    rows = list(csv.DictReader((run / "csv" / "metrics.csv").open()))
    losses = [float(r["train/loss_epoch"]) for r in rows if r.get("train/loss_epoch")]
    assert len(losses) == 3
    assert losses[-1] < losses[0]
    assert 0 <= metrics["best_epoch"] < 3
    assert (run / "checkpoints" / "last.ckpt").is_file()
    # eval.py on the saved (best-epoch) adapter: the same test metrics and predictions as the run's own test
    again = evaluate(
        compose(
            "eval",
            [
                f"adapter={run / 'adapter'}",
                f"output_dir={tmp_path / 'eval'}",
                "trainer.accelerator=cpu",
                "trainer.enable_progress_bar=false",
            ],
        )
    )
    test_keys = [k for k in metrics if k.startswith("test/")]
    assert {k: again[k] for k in test_keys} == pytest.approx({k: metrics[k] for k in test_keys})
    assert (tmp_path / "eval" / "predictions_test.jsonl").read_text() == (run / "predictions_test.jsonl").read_text()
    # scoring the predictions file alone (no model) gives the same numbers
    scored = evaluate(
        compose("eval", [f"predictions={run / 'predictions_test.jsonl'}", f"output_dir={tmp_path / 'score'}"])
    )
    assert {k: scored[k] for k in test_keys} == pytest.approx({k: metrics[k] for k in test_keys})
    assert scored["test/missing"] == 0


def test_validation_split_and_dataset_override_in_eval(compose, tmp_path):
    run = tmp_path / "run"
    train(compose("train", debug_overrides("state_offset_y", "glue_rte", run)))
    metrics = evaluate(
        compose(
            "eval",
            [f"adapter={run / 'adapter'}", "split=validation", "trainer=debug", f"output_dir={tmp_path / 'eval'}"],
        )
    )
    assert "validation/accuracy" in metrics
    assert (tmp_path / "eval" / "predictions_validation.jsonl").is_file()


def test_wandb_without_api_key_runs_offline_and_says_how_to_sync(compose, tmp_path, monkeypatch, capsys):
    for var in ("WANDB_API_KEY", "WANDB_MODE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    overrides = debug_overrides("state_offset_h", "glue_rte", tmp_path / "run")
    overrides = [o for o in overrides if not o.startswith(("logger=", "trainer="))]
    overrides += [
        "logger=wandb",
        "trainer=default",
        "trainer.accelerator=cpu",
        "trainer.max_epochs=1",
        "trainer.enable_progress_bar=false",
        "trainer.log_every_n_steps=1",
    ]
    train(compose("train", overrides))
    captured = capsys.readouterr()
    assert "no API key" in captured.err
    assert "wandb sync" in captured.out
    (run_dir,) = (tmp_path / "run" / "wandb").glob("offline-run-*")
    tables = list(run_dir.glob("files/media/table/val/samples_*.table.json"))
    assert tables  # the sample generations of the validation
    assert json.loads(tables[0].read_text())["columns"] == ["epoch", "prompt", "prediction", "reference"]
    needles = (b"params/trainable", b"lr-AdamW", b"train/tokens_per_sec", b"adapter-state_offset_h-glue_rte", b"method")
    # trainable counts, learning rate, throughput, the adapter artifact, the config. wandb-core writes the offline
    # record file in the background, after wandb.finish() returns: wait for it
    deadline = time.monotonic() + 60
    while True:
        records = next(run_dir.glob("run-*.wandb")).read_bytes()
        missing = [n for n in needles if n not in records]
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert not missing
