"""Every reproduction choice is recorded with the result (metrics.json, the loggers' config) and paper.exact applies
the released runs' method options."""

from __future__ import annotations

import json

from omegaconf import OmegaConf

from stateft.app.evaluation import evaluate
from stateft.app.exact import resolve_exact
from stateft.app.protocol import protocol_record
from stateft.app.training import train
from tests.app.conftest import debug_overrides


def test_paper_run_records_its_protocol_in_metrics_and_logger_config(compose, tmp_path):
    overrides = debug_overrides("state_offset_h", "glue_rte", tmp_path) + ["experiment=paper/glue", "logger=csv"]
    overrides += ["model=mamba-tiny", "trainer.max_epochs=1"]
    metrics = train(compose("train", overrides))
    record = json.loads((tmp_path / "metrics.json").read_text())["protocol"]
    assert record == metrics["protocol"]
    assert record["recipe"] == "paper"
    assert record["dataset.prefix_tokenization"] == "joint"
    assert record["dataset.drop_out_of_class"] is True
    assert record["dataset.protocol"] == "paper"
    assert record["optim.lr"] == 1e-3  # Table 5: state_offset_h on RTE
    assert record["trainer.precision"] == "32-true"
    assert record["paper.exact"] is False
    assert record["method"]["name"] == "state_offset_h"
    assert "dataset.gold_sql" not in record  # a Spider option: not this dataset's
    hparams = (tmp_path / "csv" / "hparams.yaml").read_text()
    assert "protocol:" in hparams
    assert "prefix_tokenization: joint" in hparams


def test_plain_run_is_recorded_as_stateft_defaults(compose, tmp_path):
    record = protocol_record(compose("train", debug_overrides("lora", "glue_rte", tmp_path)))
    assert record["recipe"] == "stateft"
    assert (record["dataset.prefix_tokenization"], record["dataset.drop_out_of_class"]) == ("separate", False)


def test_eval_records_the_scoring_choices(compose, tmp_path):
    run = tmp_path / "run"
    overrides = debug_overrides("state_offset_y", "glue_rte", run) + ["experiment=paper/glue", "model=mamba-tiny"]
    train(compose("train", overrides))
    out = tmp_path / "eval"
    evaluate(compose("eval", [f"predictions={run / 'predictions_test.jsonl'}", f"output_dir={out}"]))
    record = json.loads((out / "metrics.json").read_text())["protocol"]
    assert record["dataset.drop_out_of_class"] is True
    assert "recipe" not in record


def test_exact_takes_ssts_additional_scan_init_on_mamba1_only(compose, tmp_path):
    base = ["experiment=paper/glue", "method=additional_scan", f"output_dir={tmp_path}"]
    plain = resolve_exact(compose("train", base))
    assert plain.method.A_init is None
    assert plain.trainer.precision == "32-true"
    exact = resolve_exact(compose("train", [*base, "paper.exact=true"]))
    assert exact.method.A_init == "sst"
    assert (exact.trainer.precision, exact.model.dtype) == ("bf16-true", "bfloat16")
    chosen = resolve_exact(compose("train", [*base, "paper.exact=true", "method.A_init=continue"]))
    assert chosen.method.A_init == "continue"  # a given option wins
    m2 = ["experiment=paper/dart", "model=mamba2-130m", "method=additional_scan", "method.lr=1e-3", "paper.exact=true"]
    assert resolve_exact(compose("train", [*m2, f"output_dir={tmp_path}"])).method.A_init is None
    other = resolve_exact(compose("train", [*base[:1], "method=lora", "paper.exact=true", f"output_dir={tmp_path}"]))
    assert "A_init" not in OmegaConf.to_container(other.method)
