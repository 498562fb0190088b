"""Harness fixtures: the tiny random Mamba of conf/model/mamba-tiny.yaml (real NeoX vocabulary, so the bundled
tokenizer works), adapters for it, the direct log-likelihood the harness must reproduce, and the repository root
as the working directory (the fixture task's data path is relative to it)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from stateft.adapters import load_adapter, save_adapter
from stateft.app.run_config import our_config
from stateft.methods import apply_method
from stateft.models.loading import model_from_config

REPO = Path(__file__).resolve().parents[2]
TASKS = REPO / "tests" / "fixtures" / "harness"


def tiny(adapter: Path | None = None):
    """mamba-tiny as the harness builds it (seeded random init, fp32), with ``adapter`` loaded; eval mode."""
    model = model_from_config(OmegaConf.create({**our_config("model", "mamba-tiny"), "dtype": "float32"}))
    if adapter is not None:
        load_adapter(adapter, model)
    return model.eval()


def save_tiny_adapter(directory: Path, method: str = "lora", options: dict | None = None, seed: int = 1) -> Path:
    """An adapter of ``method`` on mamba-tiny with its tensors moved off their init (seeded), recorded with base
    mamba-tiny."""
    model = tiny()
    names = apply_method(method, model, {"name": method, **(options or {})})
    params = dict(model.named_parameters())
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name in names:
            params[name].add_(0.5 * torch.randn(params[name].shape, generator=g))
    return save_adapter(directory, model, base_model={"name": "mamba-tiny"})


@torch.no_grad()
def direct_loglikelihood(model, tok, context: str, continuation: str) -> tuple[float, bool]:
    """log p(continuation | context) from one unpadded full-sequence forward: log-softmax over the whole output row
    at every position that predicts a continuation token."""
    ids = tok.encode(context + continuation)
    n_context = len(tok.encode(context))
    logits = model(torch.tensor([ids]))[0].float()  # (l V)
    log_probs = torch.log_softmax(logits, dim=-1)
    positions = range(n_context, len(ids))
    total = sum(float(log_probs[i - 1, ids[i]]) for i in positions)
    greedy = all(int(logits[i - 1].argmax()) == ids[i] for i in positions)
    return total, greedy


@pytest.fixture
def at_repo(monkeypatch, tmp_path):
    """Run from the repository root with lm-eval's and datasets' caches in tmp_path, offline."""
    import datasets

    monkeypatch.chdir(REPO)
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf_datasets"))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf_datasets")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    return REPO
