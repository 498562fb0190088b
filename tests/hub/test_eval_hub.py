"""``eval.py adapter=hf://...``: a hub adapter evaluates exactly as the local folder it was pushed from."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from stateft.app.checks import compose_checked
from stateft.app.evaluation import evaluate
from stateft.errors import UserError
from stateft.hub import push
from tests.hub.conftest import REPO
from tests.hub.test_pull import one_line
from tests.security.conftest import assert_one_error_line

CPU = ["trainer.accelerator=cpu", "trainer.enable_progress_bar=false"]


def test_eval_of_a_hub_adapter_equals_eval_of_the_local_folder(hub, run, tmp_path):
    pushed = push(run / "adapter", "me/rte")
    local = evaluate(compose_checked("eval", [f"adapter={run / 'adapter'}", f"output_dir={tmp_path / 'local'}", *CPU]))
    remote = evaluate(compose_checked("eval", ["adapter=hf://me/rte", f"output_dir={tmp_path / 'hub'}", *CPU]))
    assert [k for k in local if k.startswith("test/")]
    timing = ("adapter", "examples_per_sec")
    assert {k: v for k, v in remote.items() if k not in timing} == {k: v for k, v in local.items() if k not in timing}
    predictions = (tmp_path / "hub" / "predictions_test.jsonl").read_text()
    assert predictions == (tmp_path / "local" / "predictions_test.jsonl").read_text()
    assert remote["adapter"] == f"hf://me/rte@{pushed.commit}"  # the exact files, even when a branch was named
    assert json.loads((tmp_path / "hub" / "metrics.json").read_text())["adapter"] == remote["adapter"]
    # a plain repo id (no local folder of that name), pinned to the commit, on the validation split
    pinned = evaluate(
        compose_checked(
            "eval", [f"adapter=me/rte@{pushed.commit}", "split=validation", f"output_dir={tmp_path / 'v'}", *CPU]
        )
    )
    assert "validation/accuracy" in pinned
    assert hub.called("snapshot_download")[-1]["revision"] == pushed.commit


def test_eval_refuses_a_hub_adapter_with_a_pickle_in_its_snapshot(hub, run, tmp_path):
    from tests.security.conftest import planted_pickle

    push(run / "adapter", "me/rte")
    snapshot = Path(hub.snapshot_download("me/rte"))
    marker = tmp_path / "MARKER"
    planted_pickle(snapshot, marker, "pytorch_model.bin")
    with pytest.raises(UserError) as err:
        evaluate(compose_checked("eval", ["adapter=hf://me/rte", f"output_dir={tmp_path / 'e'}", *CPU]))
    one_line(err, "'pytorch_model.bin', which stateft never loads")
    assert not marker.exists()
    assert not (tmp_path / "e").exists()


def test_a_plain_repo_id_that_is_neither_says_both(hub, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError) as err:
        evaluate(compose_checked("eval", ["adapter=runs/adapter", f"output_dir={tmp_path / 'e'}", *CPU]))
    one_line(err, "runs/adapter is no local folder; read as a hub adapter: hf://runs/adapter: no such repository")


def _cli(tmp_path: Path, hf_cache: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.update(
        HF_HUB_OFFLINE="1",
        HF_HUB_CACHE=str(hf_cache),
        STATEFT_CACHE_DIR=str(tmp_path / "cli_cache"),
        WANDB_MODE="offline",
        PYTHONPATH=str(REPO),
        TOKENIZERS_PARALLELISM="false",
    )
    out = tmp_path / "cli"
    argv = [sys.executable, "eval.py", *args, f"output_dir={out}", f"hydra.run.dir={out}", *CPU]
    return subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def test_eval_cli_reads_the_real_hf_cache_offline(hub, run, tmp_path):
    """``python eval.py adapter=hf://...`` as a user runs it, with the real huggingface_hub (offline) on the cache a
    download left (the fake wrote the real layout: blobs, snapshot links, refs)."""
    pushed = push(run / "adapter", "me/rte")
    evaluate(compose_checked("eval", ["adapter=hf://me/rte", f"output_dir={tmp_path / 'first'}", *CPU]))
    result = _cli(tmp_path, hub.cache, "adapter=hf://me/rte")
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "cli" / "metrics.json").read_text())
    assert metrics["adapter"] == f"hf://me/rte@{pushed.commit}"
    predictions = (tmp_path / "cli" / "predictions_test.jsonl").read_text()
    assert predictions == (tmp_path / "first" / "predictions_test.jsonl").read_text()

    missing = _cli(tmp_path, tmp_path / "empty_cache", "adapter=hf://me/other")
    assert_one_error_line(missing, "cannot download hf://me/other: HF_HUB_OFFLINE=1", "adapter=/path/to/adapter")


@pytest.mark.parametrize("module", ["stateft/hub.py", "stateft/hub_card.py"])
def test_the_hub_modules_never_unpickle_or_import_by_name(module):
    from tests.security.test_no_code_paths import FORBIDDEN, _calls

    tree = ast.parse((REPO / module).read_text())
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom) for a in n.names}
    imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert not imported & {"pickle", "dill", "joblib", "importlib", "yaml", "ast", "torch"}, imported
    calls = [(name, line) for name, line, _, _ in _calls(REPO / module)]
    assert calls  # the walk sees the module's calls
    assert not [(name, line) for name, line in calls if name in FORBIDDEN or name.endswith("instantiate")]
