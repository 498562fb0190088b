"""A run SIGKILLed at a write point (tests/app/kill_at_write.py) and resumed ends with exactly what an uninterrupted
run writes: the adapter tensors, metrics.json (less the throughput), both predictions files and the CSV log (every
epoch's rows, none twice); and no temporary file of the killed writers is left.

The run: state_offset_h on the demo rows, 3 epochs of 2 steps (16 training rows, batch 8), a checkpoint after every
step, validation after every epoch. At lr 20 with a constant schedule the validation accuracy goes 0, 0.25, 0.25:
the best epoch is 1, and a resumed run that skipped epoch 1's validation would keep epoch 2's adapter instead.
Writes of one run, in order: last.ckpt 1 (mid epoch 0), adapter 1, last.ckpt 2 (end of epoch 0), last.ckpt 3,
adapter 2 (epoch 1, the best), last.ckpt 4, last.ckpt 5 (mid epoch 2), last.ckpt 6 (the final one), test
predictions, metrics.json; predictions_validation.jsonl after each validation; the CSV log at each checkpoint.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import re
import signal
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from stateft.app.callbacks import is_measurement
from stateft.app.checks import compose_checked
from stateft.app.training import train
from tests.app.conftest import PYTHON, REPO, debug_overrides, subprocess_env

EPOCHS, BEST_EPOCH = 3, 1
TEMP = re.compile(r"^\..+\.tmp-\d+$|^\.adapter\.")  # stateft.atomic's temporary names, save_adapter's
RESULT_FILES = ("predictions_validation.jsonl", "predictions_test.jsonl")


def _overrides(out: Path) -> list[str]:
    swap = {"trainer=debug": "trainer=default", "logger=none": "logger=csv"}
    return [swap.get(o, o) for o in debug_overrides("state_offset_h", "demo", out)] + [
        "trainer.accelerator=cpu",
        f"trainer.max_epochs={EPOCHS}",
        "trainer.log_every_n_steps=1",
        "dataset.batch_size=8",
        "method.lr=20",
        "optim.schedule=constant",
        "checkpoint.every_n_train_steps=1",
    ]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> tuple[Path, list[str]]:
    """The run directory and the printed loss per epoch of an uninterrupted run."""
    out, printed = tmp_path_factory.mktemp("uninterrupted"), io.StringIO()
    with contextlib.redirect_stdout(printed):
        metrics = train(compose_checked("train", _overrides(out)))
    assert metrics["best_epoch"] == BEST_EPOCH  # the premise of the table below
    return out, _loss_lines(printed.getvalue())


def _loss_lines(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if "loss by epoch" in line]


def _csv_rows(run: Path) -> list[dict[str, str]]:
    with open(run / "csv" / "metrics.csv", newline="") as handle:  # throughput is timing, not a result
        return [{k: v for k, v in row.items() if not is_measurement(k)} for row in csv.DictReader(handle)]


def _metrics(run: Path) -> dict:
    return {k: v for k, v in json.loads((run / "metrics.json").read_text()).items() if not is_measurement(k)}


def _leftovers(*runs: Path) -> list[str]:
    return sorted(str(p) for run in runs if run.exists() for p in run.rglob(".*") if TEMP.match(p.name))


# every write point, in make test (about a minute on 2 cores)
CASES = [  # (what is being written, which write of it, kill before or after its rename, resume in the same dir)
    pytest.param("adapter", BEST_EPOCH + 1, "before", True, id="between-the-best-adapter-renames"),
    pytest.param("last.ckpt", 5, "after", False, id="mid-epoch-of-the-last-epoch"),
    pytest.param("csv-save", 3, "after", True, id="torn-csv-row"),
    pytest.param("last.ckpt", 6, "after", False, id="after-the-final-checkpoint"),
    pytest.param("last.ckpt", 2, "before", True, id="end-of-epoch-checkpoint-unrenamed"),
    pytest.param("last.ckpt", 3, "after", False, id="mid-epoch"),
    pytest.param("adapter", BEST_EPOCH + 1, "after", False, id="best-adapter-ahead-of-the-checkpoint"),
    pytest.param("adapter", 1, "before", True, id="first-adapter-unrenamed"),
    pytest.param("predictions_validation.jsonl", 2, "before", True, id="validation-predictions"),
    pytest.param("predictions_test.jsonl", 1, "before", False, id="test-predictions"),
    pytest.param("metrics.json", 1, "before", True, id="metrics-unrenamed"),
    pytest.param("metrics.json", 1, "after", False, id="metrics-written"),
    pytest.param("metrics.csv", 1, "before", True, id="csv-new-column-rewrite"),
    pytest.param("csv-save", 5, "before", False, id="csv-before-append"),
]


@pytest.mark.parametrize(("target", "nth", "when", "in_place"), CASES)
def test_killed_at_a_write_and_resumed_equals_uninterrupted(
    uninterrupted, tmp_path, capsys, target, nth, when, in_place
):
    uninterrupted, losses = uninterrupted
    killed = tmp_path / "killed"
    cli = [PYTHON, "tests/app/kill_at_write.py", target, str(nth), when, *_overrides(killed), f"hydra.run.dir={killed}"]
    result = subprocess.run(cli, cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == -signal.SIGKILL, result.stderr[-3000:]
    if when == "before" and target != "csv-save":
        assert _leftovers(killed)  # the kill left a writer's temporary file: the case tests what it says

    resumed = killed if in_place else tmp_path / "resumed"
    capsys.readouterr()
    train(compose_checked("train", _overrides(resumed) + [f"+resume={killed}"]))
    assert _loss_lines(capsys.readouterr().out) == losses  # the printed loss of every epoch

    expected = load_file(str(uninterrupted / "adapter" / "adapter_model.safetensors"))
    got = load_file(str(resumed / "adapter" / "adapter_model.safetensors"))
    assert expected.keys() == got.keys()
    assert all(torch.equal(got[k], expected[k]) for k in expected)
    assert _metrics(resumed) == _metrics(uninterrupted)
    for name in RESULT_FILES:
        assert (resumed / name).read_text() == (uninterrupted / name).read_text(), name
    rows = _csv_rows(resumed)
    assert rows == _csv_rows(uninterrupted)
    for epoch in range(EPOCHS):  # every epoch's validation and epoch loss, once
        assert [r["epoch"] for r in rows if r["val/accuracy"]].count(str(epoch)) == 1
        assert [r["epoch"] for r in rows if r["train/loss_epoch"]].count(str(epoch)) == 1
    assert _leftovers(killed, resumed) == []
