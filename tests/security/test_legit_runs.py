"""The checks refuse hostile folders, not real ones: eval.py reads the run folders train.py writes, for other
architectures, methods, datasets and precisions, with no warning."""

from __future__ import annotations

import pytest

from stateft.app.checks import compose_checked
from stateft.app.evaluation import evaluate
from stateft.app.training import train
from tests.security.conftest import FIXTURES

RUNS = [
    ("full_ssd", "mamba2-tiny", "dart", []),
    ("sdt", "mamba-tiny", "spider", ["method.num_warmup_it=1", "dataset.max_memory_mb=64"]),
    ("additional_scan", "mamba-tiny", "samsum", ["trainer.precision=bf16-true"]),
    ("lora", "mamba-tiny", "glue_cola", ["experiment=paper/glue", "model=mamba-tiny", "method.lr=1e-3"]),
]


@pytest.mark.parametrize(("method", "model", "dataset", "extra"), RUNS)
def test_real_run_folders_evaluate_without_warning(tmp_path, capsys, method, model, dataset, extra):
    run = tmp_path / "run"
    overrides = [f"model={model}", f"method={method}", f"dataset={dataset}", f"dataset.path={FIXTURES / dataset}"]
    overrides += ["trainer=debug", "logger=none", f"output_dir={run}", "dataset.max_new_tokens=3", *extra]
    train(compose_checked("train", overrides))
    capsys.readouterr()
    adapter = [f"adapter={run / 'adapter'}", f"output_dir={tmp_path / 'a'}", "trainer=debug"]
    metrics = evaluate(compose_checked("eval", adapter))
    assert any(k.startswith("test/") for k in metrics)
    scored = evaluate(
        compose_checked("eval", [f"predictions={run / 'predictions_test.jsonl'}", f"output_dir={tmp_path / 'p'}"])
    )
    assert scored["test/num_scored"] > 0
    assert "warning: adapter" not in capsys.readouterr().err
