"""Tables and plots of many runs (a sweep, or a set of runs) for ``notebooks/01-sweep-analysis.ipynb``.

Sources: run directories written by ``train.py`` (``metrics.json``, ``adapter/run_config.json``, ``csv/metrics.csv``)
or a W&B runs-table export (``Export CSV`` in the project's table view).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

RUN_COLUMNS = ["run", "method", "dataset", "model", "lr", "trainable_params"]


def _run_info(run: Path) -> dict[str, Any]:
    config_file = run / "adapter" / "run_config.json"
    config = json.loads(config_file.read_text()) if config_file.is_file() else {}
    metrics = json.loads((run / "metrics.json").read_text())
    return {
        "run": str(run),
        "method": config.get("method", {}).get("name"),
        "dataset": config.get("dataset", {}).get("name"),
        "model": config.get("model", {}).get("name"),
        "lr": metrics.get("lr", config.get("optim", {}).get("lr")),
        "trainable_params": metrics.get("params/trainable"),
        **{k: v for k, v in metrics.items() if isinstance(v, (int, float)) and "/" in k},
    }


def load_runs(root: str | Path) -> pd.DataFrame:
    """One row per run under ``root`` (any folder holding ``metrics.json``): method, dataset, model, lr, trainable
    parameters and every metric (``train/loss_epoch``, ``val/..._best``, ``test/...``)."""
    rows = [_run_info(p.parent) for p in sorted(Path(root).rglob("metrics.json"))]
    return pd.DataFrame(rows, columns=None if rows else RUN_COLUMNS)


def load_wandb_export(path: str | Path) -> pd.DataFrame:
    """A W&B runs-table CSV export, renamed to ``load_runs``'s columns (config ``method.name``, ``optim.lr``, ...)."""
    table = pd.read_csv(path)
    rename = {
        "Name": "run",
        "method.name": "method",
        "dataset.name": "dataset",
        "model.name": "model",
        "optim.lr": "lr",
        "params/trainable": "trainable_params",
    }
    return table.rename(columns={k: v for k, v in rename.items() if k in table.columns})


def load_curves(root: str | Path, column: str = "train/loss_step") -> pd.DataFrame:
    """Per-step curves from each run's ``csv/metrics.csv``: columns run, method, lr, step, value."""
    frames = []
    for csv_file in sorted(Path(root).rglob("csv/metrics.csv")):
        run = csv_file.parent.parent
        if not (run / "metrics.json").is_file():
            continue
        info = _run_info(run)
        log = pd.read_csv(csv_file)
        if column not in log.columns:
            continue
        log = log.dropna(subset=[column])
        frames.append(
            pd.DataFrame(
                {
                    "run": info["run"],
                    "method": info["method"],
                    "lr": info["lr"],
                    "step": log["step"].to_numpy(),
                    "value": log[column].to_numpy(),
                }
            )
        )
    return (
        pd.concat(frames, ignore_index=True)
        if frames
        else pd.DataFrame(columns=["run", "method", "lr", "step", "value"])
    )


def has_metric(runs: pd.DataFrame, metric: str) -> bool:
    """Some run has a value of ``metric`` (a learning-rate sweep has a training loss but no test metrics)."""
    return metric in runs.columns and bool(runs[metric].notna().any())


def metrics_of(runs: pd.DataFrame) -> list[str]:
    """The metric columns with a value in some run (``train/loss_epoch``, ``test/accuracy``, ...)."""
    return [c for c in runs.columns if "/" in c and not c.startswith("params/") and runs[c].notna().any()]


def missing_metric(runs: pd.DataFrame, metric: str) -> str:
    """Why there is nothing to plot for ``metric``, and which metrics there are."""
    return (
        f"no {metric} in these runs (a learning-rate sweep has no test metrics); "
        f"set STATEFT_METRIC to one of: {', '.join(metrics_of(runs)) or '(none)'}"
    )


def table(runs: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """``runs[columns]`` without the columns these runs lack."""
    return runs[[c for c in dict.fromkeys(columns) if c in runs.columns]]


def best_per_method(runs: pd.DataFrame, metric: str, higher_is_better: bool = True) -> pd.DataFrame:
    """The best run of each (method, dataset) by ``metric``."""
    runs = runs.dropna(subset=[metric])
    order = runs.sort_values(metric, ascending=not higher_is_better)
    return order.groupby(["method", "dataset"], as_index=False).head(1).reset_index(drop=True)


def plot_metric_vs_params(runs: pd.DataFrame, metric: str, ax: Any = None) -> Any:
    """Scatter of ``metric`` against trainable parameters (log x), one labelled point per method's best run."""
    import matplotlib.pyplot as plt

    ax = ax or plt.subplots(figsize=(6, 4))[1]
    for _, row in best_per_method(runs, metric).iterrows():
        ax.scatter(row["trainable_params"], row[metric])
        ax.annotate(
            row["method"], (row["trainable_params"], row[metric]), textcoords="offset points", xytext=(4, 4), fontsize=8
        )
    ax.set_xscale("log")
    ax.set_xlabel("trainable parameters")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} vs trainable parameters (best run per method)")
    return ax


def plot_lr_curves(runs: pd.DataFrame, loss: str = "train/loss_epoch", ax: Any = None) -> Any:
    """Final training loss against learning rate (log x), one line per method: the sweep's picture."""
    import matplotlib.pyplot as plt

    ax = ax or plt.subplots(figsize=(6, 4))[1]
    for method, group in runs.dropna(subset=[loss, "lr"]).groupby("method"):
        group = group.sort_values("lr")
        ax.plot(group["lr"], group[loss], marker="o", label=method)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel(loss)
    ax.legend(fontsize=8)
    ax.set_title("learning-rate sweep")
    return ax


def plot_loss_curves(curves: pd.DataFrame, ax: Any = None) -> Any:
    """Training-loss curves per step, one line per run, labelled method @ lr."""
    import matplotlib.pyplot as plt

    ax = ax or plt.subplots(figsize=(6, 4))[1]
    for (method, lr), group in curves.groupby(["method", "lr"]):
        ax.plot(group["step"], group["value"], label=f"{method} @ {lr:g}")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.legend(fontsize=7)
    return ax
