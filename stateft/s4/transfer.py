"""The SDT paper's transfer experiment on deep S4 (the SDT code's ``run_s4_real.py`` with ``pretrained_data``):
pretrain the whole model on one pixel-sequence dataset, then tune it on another with each method.

1. Pretraining: every parameter, AdamW at ``pretrain_lr`` for ``pretrain_epochs`` on ``pretrain``'s training split
   (``stateft.s4.pixels``). The weights are cached as safetensors under ``pretrain_cache``, named by a hash of
   everything that decides them (model, data, settings, seed), with that record in the file's metadata; a later
   run with the same record loads them instead of pretraining again.
2. Each method tunes a copy on ``finetune``'s training split for ``epochs`` epochs (AdamW at its lr, torch's
   default weight decay, as the SDT code) and is scored by its accuracy on the test split (and on the validation
   split: ``val_split`` of the training images, held out with a seeded permutation, as the SDT code's 10%).
``max_train`` / ``max_test`` keep the first images of each split (CPU runs, fixtures). MNIST sequences are 784
long, grayscale CIFAR-10's 1024; the S4 kernel is built for the length it is given, so one model reads both.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from stateft.errors import UserError
from stateft.s4 import pixels
from stateft.s4.model import DeepS4, S4ModelConfig
from stateft.s4.train import fit, tune


@dataclass
class TransferTask:
    path: str = "data/pixels"  # the folder of the raw files (stateft/s4/pixels.py)
    pretrain: str = "mnist"  # mnist | cifar10
    finetune: str = "cifar10"  # mnist | cifar10
    pretrain_epochs: int = 10
    pretrain_lr: float = 0.01
    epochs: int = 2  # fine-tuning epochs per method (the SDT code's n_epochs)
    batch_size: int = 64
    eval_batch_size: int = 256
    val_split: float = 0.1
    max_train: int | None = None  # keep the first images of the training split (null: all)
    max_test: int | None = None
    pretrain_cache: str = "~/.cache/stateft/s4_pretrained"

    def __post_init__(self) -> None:
        for name in ("pretrain", "finetune"):
            if getattr(self, name) not in pixels.DATASETS:
                raise UserError(
                    f"dataset.{name} must be one of: {', '.join(pixels.DATASETS)}, got {getattr(self, name)!r}"
                )
        for name in ("pretrain_epochs", "epochs", "batch_size", "eval_batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise UserError(f"dataset.{name} must be an integer >= 1, got {value!r}")
        for name in ("max_train", "max_test"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 2):
                raise UserError(f"dataset.{name} must be an integer >= 2 or null, got {value!r}")
        if not 0 < self.val_split < 1:
            raise UserError(f"dataset.val_split must be in (0, 1), got {self.val_split}")
        if not self.pretrain_lr > 0:
            raise UserError(f"dataset.pretrain_lr must be > 0, got {self.pretrain_lr}")


@dataclass
class Splits:
    train: tuple[Tensor, Tensor]
    val: tuple[Tensor, Tensor]
    test: tuple[Tensor, Tensor]


def load_splits(task: TransferTask, name: str, seed: int, device: torch.device | str = "cpu") -> Splits:
    x, y = pixels.load(name, task.path, "train")
    x, y = x[: task.max_train], y[: task.max_train]
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    n_val = max(1, int(len(y) * task.val_split))
    val, train = order[:n_val], order[n_val:]
    x_test, y_test = pixels.load(name, task.path, "test")
    x_test, y_test = x_test[: task.max_test], y_test[: task.max_test]
    pairs = [(x[train], y[train]), (x[val], y[val]), (x_test, y_test)]
    return Splits(*[(a.to(device), b.to(device)) for a, b in pairs])


class EpochBatches(Iterator[tuple[Tensor, Tensor]]):
    """Shuffled batches of (x, y), epoch after epoch, from a seeded generator."""

    def __init__(self, data: tuple[Tensor, Tensor], batch_size: int, seed: int) -> None:
        self.x, self.y = data
        self.batch_size = batch_size
        self.generator = torch.Generator().manual_seed(seed)
        self.order: list[Tensor] = []

    @property
    def per_epoch(self) -> int:
        return -(-len(self.y) // self.batch_size)

    def __next__(self) -> tuple[Tensor, Tensor]:
        if not self.order:
            self.order = list(torch.randperm(len(self.y), generator=self.generator).split(self.batch_size))
        index = self.order.pop(0).to(self.y.device)
        return self.x[index], self.y[index]


@torch.no_grad()
def accuracy(model: DeepS4, data: tuple[Tensor, Tensor], batch_size: int) -> float:
    model.eval()
    x, y = data
    correct = sum((model(xb).argmax(-1) == yb).sum().item() for xb, yb in zip(x.split(batch_size), y.split(batch_size)))
    return correct / len(y)


def _record(model_cfg: S4ModelConfig, task: TransferTask, seed: int, n_train: int) -> dict:
    """What decides the pretrained weights (the cache key)."""
    keys = ("pretrain", "pretrain_epochs", "pretrain_lr", "batch_size", "val_split", "max_train")
    return {
        "model": model_cfg.as_dict(),
        "seed": seed,
        "train_examples": n_train,
        **{k: getattr(task, k) for k in keys},
    }


def pretrained(model_cfg: S4ModelConfig, task: TransferTask, seed: int, device: torch.device | str) -> tuple:
    """The model pretrained on ``task.pretrain`` (from the cache when it holds the same record); its record."""
    data = load_splits(task, task.pretrain, seed, device)
    record = _record(model_cfg, task, seed, len(data.train[1]))
    text = json.dumps(record, sort_keys=True)
    path = (
        Path(task.pretrain_cache).expanduser()
        / f"s4_{task.pretrain}_{hashlib.sha256(text.encode()).hexdigest()[:16]}.safetensors"
    )
    torch.manual_seed(seed)
    model = DeepS4(model_cfg)
    if path.is_file():
        model.load_state_dict(load_file(str(path)), strict=True)
        model.to(device)
        print(f"pretrained on {task.pretrain}: loaded {path}")
        return model.eval(), {**record, "cache": str(path), "cached": True}
    print(f"pretraining on {task.pretrain} ({task.pretrain_epochs} epochs of {len(data.train[1])} images)")
    batches = EpochBatches(data.train, task.batch_size, seed)
    model.to(device)
    fit(model, batches, task.pretrain_epochs * batches.per_epoch, task.pretrain_lr)
    val = accuracy(model, data.val, task.eval_batch_size)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    save_file(
        {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
        str(tmp),
        metadata={"record": text, "val_accuracy": str(val)},
    )
    os.replace(tmp, path)
    print(f"pretrained on {task.pretrain}: validation accuracy {100 * val:.2f}%, cached in {path}")
    return model.eval(), {**record, "cache": str(path), "cached": False, "val_accuracy": val}


def run(
    model_cfg: S4ModelConfig, task: TransferTask, entries: list, seed: int, device: torch.device | str = "cpu"
) -> dict:
    """Pretrain (or load), then every ``(label, method config)`` of ``entries`` on ``task.finetune``."""
    if model_cfg.head != "classification" or model_cfg.d_input != 1 or model_cfg.d_output != 10:
        raise UserError("the pixel tasks need model.head classification, model.d_input 1 and model.d_output 10 "
                        "(model=s4-pixels)")  # fmt: skip
    base, record = pretrained(model_cfg, task, seed, device)
    data = load_splits(task, task.finetune, seed, device)
    results = []
    for label, method in entries:
        start = time.perf_counter()
        model = copy.deepcopy(base)
        batches = EpochBatches(data.train, task.batch_size, seed + 1)
        choice = EpochBatches(data.train, task.batch_size, seed + 2)
        n_trainable, losses = tune(model, method, choice, batches, task.epochs * batches.per_epoch)
        results.append(
            {
                "label": label,
                "method": method.name,
                "trainable_params": n_trainable,
                "accuracy": accuracy(model, data.test, task.eval_batch_size),
                "val_accuracy": accuracy(model, data.val, task.eval_batch_size),
                "final_train_loss": losses[-1] if losses else None,
                "seconds": round(time.perf_counter() - start, 1),
                "options": {k: v for k, v in vars(method).items() if k != "selection"},
                "selection": getattr(method, "selection", None),
            }
        )
    total = sum(p.numel() for p in base.parameters())
    return {"metric": "accuracy", "total_params": total, "pretrain": record, "results": results}
