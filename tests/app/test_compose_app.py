"""method=compose through the app: start-up refusals before torch, the dry run's per-part summary, a training run
whose adapter eval.py rebuilds and scores the same."""

from __future__ import annotations

import json
import subprocess

import pytest

from stateft.app.evaluation import evaluate
from stateft.app.training import dry_run, train
from stateft.errors import UserError
from tests.app.conftest import PYTHON, REPO, debug_overrides, subprocess_env

BAD = {
    "method.parts=[]": "error: compose: method.parts is empty",
    "method.parts=[lorra]": "error: compose: unknown part 'lorra'",
    "method.parts=[lora,compose]": "error: compose: compose cannot be a part",
    "method.parts=[lora,prefix] model=mamba2-tiny": "error: method compose on mamba2-tiny: compose part prefix applies",
    "method.lora.rank=4": "error: unknown key 'method.lora.rank'",
    "method.lora.r=two": "error: method lora: bad option 'r'",
    "method.lora.r=-1": "error: method.lora.r must be an integer >= 1 or null, got -1",
    "sweep=lr_grid": "error: sweep=lr_grid sweeps optim.lr, which compose part lora ignores",
}

# composes and validates each command line as train.py's start-up does; prints its error line and whether torch
# was imported by then
PROBE = """
import sys
from stateft.app.checks import compose_checked, validate_cfg
from stateft.errors import UserError
for line in sys.argv[1:]:
    try:
        validate_cfg(compose_checked("train", ["method=compose", "model=mamba-tiny", *line.split()]))
        print("accepted")
    except UserError as err:
        print(f"error: {err}")
print("torch imported" if "torch" in sys.modules else "torch not imported")
"""


def test_bad_compositions_are_refused_at_start_up_before_torch():
    result = subprocess.run(
        [PYTHON, "-c", PROBE, *BAD], cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.strip().splitlines()
    assert lines[-1] == "torch not imported"
    assert len(lines) == len(BAD) + 1  # one line each
    for line, wanted in zip(lines, BAD.values()):
        assert line.startswith(wanted), (line, wanted)


def test_train_py_prints_one_error_line_and_exits_2(tmp_path):
    result = subprocess.run(
        [PYTHON, "train.py", "method=compose", "method.parts=[lora,lora]", "dataset=demo", "dry_run=true"],
        cwd=REPO,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == "error: compose: part lora is listed twice in method.parts; list each method once"


def test_dry_run_prints_each_part_and_the_total(compose, capsys):
    cfg = compose(
        "train",
        ["model=mamba-tiny", "method=compose", "method.parts=[lora,additional_scan,prefix]", "method.lora.lr=3e-4"],
    )
    counts = dry_run(cfg)
    lines = capsys.readouterr().out.strip().splitlines()
    table = lines[lines.index("compose: trainable params per part") + 1 :]
    assert [row.split()[0] for row in table] == ["lora", "additional_scan", "prefix", "total"]
    assert "lr=0.0003" in table[0]
    per_part = [int(row.split()[1].replace(",", "")) for row in table[:-1]]
    assert sum(per_part) == int(table[-1].split()[1].replace(",", "")) == counts["params/trainable"]


def test_a_clash_found_while_applying_is_one_user_error(compose):
    cfg = compose("train", ["model=mamba-tiny", "method=compose", "method.parts=[bitfit,partial]"])
    with pytest.raises(UserError, match="^compose: parts bitfit and partial both train "):
        dry_run(cfg)


def test_a_composition_trains_and_eval_rebuilds_it(compose, tmp_path):
    run = tmp_path / "run"
    overrides = debug_overrides("compose", "demo", run)
    overrides += ["method.parts=[lora,prefix]", "method.lora.r=2", "method.prefix.lr=5e-3"]
    metrics = train(compose("train", overrides))
    recorded = json.loads((run / "adapter" / "adapter_config.json").read_text())["method"]
    assert recorded["parts"] == ["lora", "prefix"]
    assert (recorded["lora"]["r"], recorded["prefix"]["lr"]) == (2, 5e-3)
    assert recorded["additional_scan"] is None  # not a part: not recorded
    again = evaluate(
        compose(
            "eval",
            [
                f"adapter={run / 'adapter'}",
                f"output_dir={tmp_path / 'eval'}",
                "trainer.accelerator=cpu",
                "trainer.enable_progress_bar=false",
                "+trainer.limit_test_batches=1",
            ],
        )
    )
    test_keys = [k for k in metrics if k.startswith("test/")]
    assert test_keys
    assert {k: again[k] for k in test_keys} == pytest.approx({k: metrics[k] for k in test_keys})
