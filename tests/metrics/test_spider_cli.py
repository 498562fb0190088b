"""``python -m stateft.metrics.spider``: official file formats in, a JSON summary out."""

from __future__ import annotations

import json
import subprocess
import sys

from stateft.metrics.spider.__main__ import main


def write_inputs(tmp_path, spider_dev, n=40):
    sample = spider_dev[:n]
    gold = tmp_path / "gold.sql"
    gold.write_text("".join(f"{ex['query']}\t{ex['db_id']}\n" for ex in sample))
    pred = tmp_path / "pred.sql"
    # every other prediction is the gold, the rest a query that fails
    pred.write_text(
        "".join((ex["query"] if i % 2 == 0 else "SELECT broken FROM") + "\n" for i, ex in enumerate(sample))
    )
    return gold, pred, sample


def test_cli_scores_a_predictions_file(tmp_path, spider_dev, spider_tables_path, spider_db_dir, capsys):
    gold, pred, sample = write_inputs(tmp_path, spider_dev)
    out = tmp_path / "per_example.jsonl"
    args = ["--gold", str(gold), "--pred", str(pred), "--db", str(spider_db_dir), "--tables", str(spider_tables_path)]
    assert main([*args, "--semantics", "test-suite", "--per-example", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["semantics"] == "test-suite"
    assert summary["counts"]["all"] == len(sample)
    assert summary["exec_acc"]["all"] == 0.5
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["match"] for r in records] == [1 - i % 2 for i in range(len(sample))]
    assert {r["hardness"] for r in records} <= {"easy", "medium", "hard", "extra"}
    assert sum(r["pred_error"] is not None for r in records) == len(sample) // 2


def test_cli_bad_input_is_one_line(tmp_path, spider_dev, spider_tables_path, spider_db_dir, capsys):
    gold, pred, _ = write_inputs(tmp_path, spider_dev)
    pred.write_text("SELECT 1\n")
    args = ["--gold", str(gold), "--pred", str(pred), "--db", str(spider_db_dir), "--tables", str(spider_tables_path)]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:")
    assert "\n" not in err
    assert main([*args[:-1], str(tmp_path / "missing.json")]) == 2


def test_cli_entry_point_runs(tmp_path, spider_dev, spider_tables_path, spider_db_dir):
    gold, pred, sample = write_inputs(tmp_path, spider_dev, n=6)
    cmd = [sys.executable, "-m", "stateft.metrics.spider", "--gold", str(gold), "--pred", str(pred),
           "--db", str(spider_db_dir), "--tables", str(spider_tables_path), "--semantics", "original"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["exec_acc"]["all"] == 0.5
