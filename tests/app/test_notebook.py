"""notebooks/01-sweep-analysis.ipynb runs headless on fixture logs (run directories and a W&B export)."""

from __future__ import annotations

import nbformat
from nbclient import NotebookClient

from stateft.app.analysis import best_per_method, load_runs, load_wandb_export
from tests.app.conftest import APP_FIXTURES, REPO

NOTEBOOK = REPO / "notebooks" / "01-sweep-analysis.ipynb"


def test_notebook_is_committed_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code")


def test_notebook_runs_headless_on_fixture_logs(monkeypatch):
    monkeypatch.setenv("STATEFT_RUNS", str(APP_FIXTURES / "runs"))
    monkeypatch.setenv("STATEFT_WANDB_EXPORT", str(APP_FIXTURES / "wandb_export.csv"))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(
        nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOK.parent)}}
    ).execute()
    text = "\n".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
    assert "20 runs under" in text
    assert "chosen learning rate for state_offset_h on glue_rte: 0.001" in text
    assert "4 runs in" in text
    images = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(images) >= 4  # metric vs params (runs and export), lr curves, loss curves


def test_analysis_tables_from_fixture_logs():
    runs = load_runs(APP_FIXTURES / "runs")
    assert set(runs["method"]) == {"state_offset_h", "state_offset_y", "lora", "init_state"}
    lowest = best_per_method(runs, "train/loss_epoch", higher_is_better=False).set_index("method")["lr"]
    assert lowest.to_dict() == {"init_state": 4e-4, "lora": 2e-3, "state_offset_h": 1e-3, "state_offset_y": 2e-3}
    exported = load_wandb_export(APP_FIXTURES / "wandb_export.csv")
    assert {"method", "lr", "trainable_params", "test/accuracy"} <= set(exported.columns)
