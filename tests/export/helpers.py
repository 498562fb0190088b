"""Shared by the export tests: adapters on the tiny random models of conf/model, and comparing logits."""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import OmegaConf

from stateft.adapters import save_adapter
from stateft.app.run_config import our_config
from stateft.methods import apply_method
from stateft.models.loading import model_from_config
from tests.methods.test_methods import method_cfg, perturb

MODELS = {"mamba1": "mamba-tiny", "mamba2": "mamba2-tiny"}
IDS = torch.randint(1, 50000, (2, 19), generator=torch.Generator().manual_seed(7))


def base_node(arch: str) -> dict:
    """The model node of our tiny config for ``arch``, stored in fp32: what an adapter records as its base."""
    return {**our_config("model", MODELS[arch]), "dtype": "float32"}


def base_model(arch: str) -> torch.nn.Module:
    return model_from_config(OmegaConf.create(base_node(arch))).eval()


def make_adapter(folder: Path, arch: str, name: str, scale: float = 0.3, **extra) -> torch.nn.Module:
    """Apply ``name`` to the tiny base of ``arch``, give every trainable tensor random non-zero values (LoRA's B
    included), save the adapter with its base-model record; returns the adapter model in eval mode."""
    model = base_model(arch)
    names = apply_method(name, model, method_cfg(name, **extra))
    perturb(model, names, scale)
    save_adapter(folder, model, method_cfg(name, **extra), names, base_model=base_node(arch))
    return model.eval()


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def logits(model: torch.nn.Module, ids: torch.Tensor = IDS) -> torch.Tensor:
    """stateft's logits (b l V_padded), or a transformers / peft model's (its ``.logits``)."""
    with torch.no_grad():
        out = model(ids)
    return out if isinstance(out, torch.Tensor) else out.logits
