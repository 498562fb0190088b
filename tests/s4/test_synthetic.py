"""The synthetic deep-S4 experiment through train.py's config and training entry (tiny sizes): every compared
method's trainable count against an independent count, SDT fits better than the frozen model, and the run folder
holds the table, the JSON and the figure."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

from stateft.app.checks import compose_checked, validate_cfg
from stateft.app.training import train
from stateft.methods import apply_method
from stateft.s4.model import DeepS4
from stateft.s4.peft import count_trainable
from stateft.s4.runner import compare_node, method_entries, model_config

TINY = [
    "experiment=sdt_s4/synthetic",
    "model.d_model=8",
    "model.n_layers=2",
    "model.d_state=8",
    "dataset.target_d_state=4",
    "dataset.seq_len=32",
    "dataset.batch_size=8",
    "dataset.steps=40",
    "dataset.eval_batch_size=32",
]
SDT = "select_channels:4,update_channels:2,select_states:2,update_states:1,warmup_steps:5"
COMPARE = (
    "s4.compare=[{label:Frozen,method:s4_frozen},{label:Full,method:s4_full},"
    "{label:LoRA,method:s4_lora,rank:2,ssm_rank:1},"
    f"{{label:SDT,method:s4_sdt,{SDT}}},{{label:SDLoRA,method:s4_sdlora,rank:1,{SDT}}}]"
)


def run(tmp_path: Path, *extra: str) -> dict:
    cfg = compose_checked("train", [*TINY, COMPARE, f"output_dir={tmp_path}", *extra])
    validate_cfg(cfg)
    return train(cfg)


def test_synthetic_run_writes_table_json_and_figure(tmp_path):
    metrics = run(tmp_path)
    report = json.loads((tmp_path / "results.json").read_text())
    by = {r["label"]: r for r in report["results"]}
    H, layers = 8, 2
    total = layers * (H + 4 * H * 4 + H + H * H + H)  # log_dt; log_A_real, A_imag, C (re, im) of 4 modes; D; W; b
    assert report["total_params"] == total
    assert by["Frozen"]["trainable_params"] == 0
    assert by["Full"]["trainable_params"] == total
    # LoRA: W's B A (rank 2) + b + D; the SSM's log_A_real, A_imag and complex C factors (rank 1) + log_dt
    assert by["LoRA"]["trainable_params"] == layers * (2 * (H + H) + H + H + 4 * (H + 4) + H)
    # SDT: 2 channels x 1 mode x 4 numbers, log_dt, D, W's 2 columns, b; SDLoRA: rank-1 B A instead of the columns
    assert by["SDT"]["trainable_params"] == layers * (2 * 4 + H + H + 2 * H + H)
    assert by["SDLoRA"]["trainable_params"] == layers * (2 * 4 + H + H + (H + H) + H)
    assert by["SDT"]["mse"] < by["Frozen"]["mse"]
    assert by["Full"]["mse"] < by["Frozen"]["mse"]
    assert len(by["SDT"]["selection"]) == layers
    assert by["SDT"]["selection"][0]["update_channels"]
    assert metrics["val/mse"] == by["SDT"]["mse"]  # the run's method (experiment default: s4_sdt)
    lines = (tmp_path / "results.md").read_text().splitlines()
    assert lines[0] == "| method | trainable | of total | held-out MSE | seconds |"
    assert [line.split("|")[1].strip() for line in lines[2:]] == ["Frozen", "Full", "LoRA", "SDT", "SDLoRA"]
    assert (tmp_path / "mse_vs_params.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_an_empty_compare_runs_the_method_alone_at_optim_lr(tmp_path):
    cfg = compose_checked(
        "train", [*TINY, "method=s4_lora", "method.rank=2", "s4.compare=[]", "optim.lr=0.02", f"output_dir={tmp_path}"]
    )
    metrics = train(cfg)
    report = json.loads((tmp_path / "results.json").read_text())
    assert [r["label"] for r in report["results"]] == ["s4_lora"]
    assert report["results"][0]["options"]["lr"] == 0.02
    assert metrics["val/mse"] == report["results"][0]["mse"]


@pytest.mark.slow
def test_wandb_gets_the_table_and_the_figure(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    run(tmp_path, "logger=wandb", "dataset.steps=2")
    media = tmp_path / "wandb"
    assert list(media.glob("offline-run-*/files/media/table/s4/results_*.table.json"))
    assert list(media.glob("offline-run-*/files/media/images/s4/mse_vs_params_*.png"))


def test_the_budgets_experiment_matches_budgets_across_methods():
    """experiment=sdt_s4/synthetic_budgets: at each of its three budgets the PEFT methods train within 10% of the
    same number of parameters (SDT's and SDLoRA's exactly the same)."""
    cfg = compose_checked("train", ["experiment=sdt_s4/synthetic_budgets"])
    base = DeepS4(model_config(cfg.model))
    counts: dict[str, list[int]] = {}
    series = {e["label"]: e.get("series") for e in compare_node(cfg)}
    for label, method in method_entries(cfg):
        if series[label] is None:
            continue
        if hasattr(method, "select_by"):
            method.select_by = "random"  # the counts do not depend on which dimensions
        model = copy.deepcopy(base)
        apply_method(method.name, model, method, train_batches=iter([(torch.zeros(1, 4, 64), torch.zeros(1, 4, 64))]))
        counts.setdefault(series[label], []).append(count_trainable(model))
    assert counts["SDT"] == counts["SDLoRA"]
    for name in ("LoRA (Proj)", "LoRA (S4+Proj)"):
        assert all(abs(a - b) <= 0.1 * b for a, b in zip(counts[name], counts["SDT"])), (name, counts)
