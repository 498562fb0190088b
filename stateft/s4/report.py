"""The deep-S4 experiments' results: a table (markdown), a figure of the metric against the trainable parameters
(one point per compared method), JSON, and the same to the run's loggers (W&B: the table and the figure)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

METRIC_NAMES = {"mse": "held-out MSE", "accuracy": "test accuracy"}


def table(report: dict) -> str:
    """A markdown table: method, trainable parameters, their share of the model, the metric, seconds."""
    metric = report["metric"]
    head = f"| method | trainable | of total | {METRIC_NAMES.get(metric, metric)} | seconds |"
    lines = [head, "|---|---:|---:|---:|---:|"]
    for r in report["results"]:
        share = 100 * r["trainable_params"] / report["total_params"]
        value = f"{r[metric]:.6g}" if metric == "mse" else f"{100 * r[metric]:.2f}%"
        lines.append(f"| {r['label']} | {r['trainable_params']:,} | {share:.2f}% | {value} | {r['seconds']} |")
    return "\n".join(lines)


def figure(report: dict, path: Path) -> None:
    """The metric (y; log scale for MSE) against the trainable parameters (x, log scale), one marker per method
    (per ``series``: its points joined by a line) named in the legend; a method that trains nothing is a dashed
    line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = report["metric"]
    markers = "osD^v<>pP*Xh"
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    groups: dict[str, list[dict]] = {}
    for r in report["results"]:
        groups.setdefault(r.get("series") or r["label"], []).append(r)
    for i, (name, rows) in enumerate(groups.items()):
        values = [r[metric] if metric == "mse" else 100 * r[metric] for r in rows]
        counts = [r["trainable_params"] for r in rows]
        if counts == [0] * len(counts):
            ax.axhline(values[0], linestyle="--", color="grey", linewidth=1, label=f"{name} (0)")
            continue
        label = name if len(rows) > 1 else f"{name} ({counts[0]:,})"
        order = sorted(range(len(rows)), key=lambda j: counts[j])
        x, y = [counts[j] for j in order], [values[j] for j in order]
        ax.plot(x, y, marker=markers[i % len(markers)], label=label, alpha=0.85, linewidth=1 if len(rows) > 1 else 0)
    ax.set_xscale("log")
    if metric == "mse":
        ax.set_yscale("log")
    ax.set_xlabel("trainable parameters")
    ax.set_ylabel(METRIC_NAMES.get(metric, metric) + ("" if metric == "mse" else " (%)"))
    ax.set_title(report.get("title", ""), fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write(out: Path, report: dict) -> dict[str, Path]:
    """results.json, results.md and the figure in ``out``; their paths."""
    from stateft.app.files import write_json_atomic

    paths = {
        "json": out / "results.json",
        "table": out / "results.md",
        "figure": out / f"{report['metric']}_vs_params.png",
    }
    write_json_atomic(paths["json"], report)
    paths["table"].write_text(table(report) + "\n", encoding="utf-8")
    figure(report, paths["figure"])
    return paths


def log(loggers: list[Any], report: dict, figure_path: Path) -> None:
    """Each method's numbers as metrics ("<label>/<metric>"); on W&B also the table and the figure."""
    metric = report["metric"]
    for lg in loggers:
        for i, r in enumerate(report["results"]):
            values = {f"{r['label']}/{metric}": r[metric], f"{r['label']}/trainable_params": r["trainable_params"]}
            lg.log_metrics(values, step=i)
        if type(lg).__name__ == "WandbLogger":
            rows = [[r["label"], r["method"], r["trainable_params"], r[metric]] for r in report["results"]]
            lg.log_table(key="s4/results", columns=["label", "method", "trainable_params", metric], data=rows)
            lg.log_image(key=f"s4/{metric}_vs_params", images=[str(figure_path)])
        lg.save()
