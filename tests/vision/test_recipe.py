"""MambaPEFT's VTAB recipe as the app runs it: linear warm-up then a cosine to min_lr_ratio x lr; the paper's
weight-decay exemptions; the experiment config composes with the paper's numbers."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest

from stateft.app.checks import compose_checked, validate_cfg
from stateft.lit_module import FineTuneModule
from stateft.methods import apply_method
from stateft.methods.configs import validate_method_cfg
from stateft.vision.loading import build_vim
from tests.vision.conftest import tiny_config


def test_warmup_then_cosine_to_the_floor():
    model = build_vim(tiny_config(), backend="ref")
    names = apply_method("lora", model, validate_method_cfg({"name": "lora"}))
    optim = {"lr": 1e-3, "weight_decay": 1e-4, "warmup_ratio": 0.1, "schedule": "cosine", "min_lr_ratio": 0.01}
    module = FineTuneModule(model, names, optim, task=None, tokenizer=None)
    module._trainer = SimpleNamespace(estimated_stepping_batches=100)
    scheduler = module.configure_optimizers()["lr_scheduler"]["scheduler"]
    factor = scheduler.lr_lambdas[0]
    assert factor(0) == pytest.approx(1 / 10)
    assert factor(9) == pytest.approx(1.0)
    for step in (10, 40, 77, 99):
        progress = (step - 10) / 90
        assert factor(step) == pytest.approx(0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * progress)))
    assert factor(100) == pytest.approx(0.01)


def test_no_weight_decay_on_what_mambapeft_exempts():
    model = build_vim(tiny_config(), backend="ref")
    exempt = {n for n, p in model.named_parameters() if getattr(p, "_no_weight_decay", False)}
    assert {"cls_token", "pos_embed", "head.bias", "norm_f.weight", "layers.0.norm.weight"} <= exempt
    assert {"layers.0.mixer.forward_scan.A_log", "layers.1.mixer.backward_scan.D"} <= exempt
    assert "head.weight" not in exempt
    assert "layers.0.mixer.in_proj.weight" not in exempt


def test_the_experiment_has_the_papers_numbers():
    cfg = compose_checked("train", ["experiment=mambapeft/vtab", "method=lora", "dataset=vtab_dtd", "output_dir=/x"])
    validate_cfg(cfg)
    assert cfg.model.name == "vim-small"
    assert (cfg.optim.lr, cfg.optim.weight_decay, cfg.optim.schedule) == (1e-3, 1e-4, "cosine")
    assert (cfg.dataset.batch_size, cfg.dataset.protocol, cfg.dataset.image_size) == (32, "paper", 224)
    assert (cfg.trainer.max_epochs, cfg.trainer.gradient_clip_val, cfg.trainer.limit_val_batches) == (100, 5.0, 0)
    assert cfg.optim.warmup_ratio * cfg.trainer.max_epochs == pytest.approx(10)  # 10 warm-up epochs
    assert cfg.optim.lr * cfg.optim.min_lr_ratio == pytest.approx(1e-5)
