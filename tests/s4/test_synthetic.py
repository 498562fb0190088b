"""The synthetic experiment at a tiny size: SDT fits the target better than the frozen model with fewer trainable
parameters than full fine-tuning; the command line prints the table, writes the JSON and refuses bad input in one
line."""

from __future__ import annotations

import json
import re

import pytest

from stateft.s4.peft import S4PeftConfig
from stateft.s4.synthetic import SyntheticConfig, main, run

TINY_ARGS = {
    "d_model": 8,
    "frozen_layers": 2,
    "frozen_d_state": 8,
    "target_layers": 1,
    "target_d_state": 4,
    "seq_len": 32,
    "batch_size": 8,
    "steps": 40,
    "eval_batch_size": 32,
}
TINY_PEFT = {"select_channels": 4, "update_channels": 4, "select_states": 2, "update_states": 2, "warmup_steps": 5}


def test_sdt_beats_frozen_with_fewer_parameters_than_full():
    report = run(SyntheticConfig(**TINY_ARGS, peft=S4PeftConfig(**TINY_PEFT)), ["frozen", "full", "sdt"])
    by = {r["method"]: r for r in report["results"]}
    assert by["frozen"]["trainable_params"] == 0
    assert by["full"]["trainable_params"] == report["total_params"]
    assert 0 < by["sdt"]["trainable_params"] < by["full"]["trainable_params"]
    assert by["sdt"]["mse"] < by["frozen"]["mse"]
    assert by["full"]["mse"] < by["frozen"]["mse"]
    assert len(by["sdt"]["selection"]) == 2
    assert len(by["sdt"]["selection"][0]["update_channels"]) == 4


def test_command_line_writes_table_and_json(tmp_path, capsys):
    args = [f"--{k.replace('_', '-')}={v}" for k, v in {**TINY_ARGS, **TINY_PEFT}.items()]
    out = tmp_path / "r.json"
    assert main([*args, "--steps=2", "--methods", "frozen", "sdlora", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.splitlines()[0].split() == ["method", "trainable", "of", "total", "held-out", "MSE", "seconds"]
    report = json.loads(out.read_text())
    assert [r["method"] for r in report["results"]] == ["frozen", "sdlora"]
    assert report["config"]["peft"]["select_channels"] == 4


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--select-channels=9"], r"error: select_channels must be in \[1, 8\]"),
        (["--steps=0"], "error: steps must be an integer >= 1, got 0"),
        (["--frozen-d-state=7"], "error: S4D d_state must be an even integer"),
    ],
)
def test_bad_input_is_one_error_line(args, message, capsys, tmp_path):
    base = [f"--{k.replace('_', '-')}={v}" for k, v in {**TINY_ARGS, **TINY_PEFT}.items()]
    assert main([*base, *args, "--methods", "sdt", "--out", str(tmp_path / "r.json")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert err.startswith("error: ")
    assert re.search(message, err)
    assert not (tmp_path / "r.json").exists()
