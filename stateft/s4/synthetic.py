"""The SDT paper's synthetic deep-S4 experiment (the SDT code's ``run_s4.py`` with ``data: synthetic``).

A random target S4 (``target_layers`` layers, ``target_d_state``) and a random frozen deep S4 (the run's model),
both the SDT code's ReLU ("theory") models with random A, built from the run's seed, the target first; inputs are
random integers in [0, input_max) of shape (batch, seq_len, d_model), a fresh batch each step. Each method tunes a
copy of the frozen model towards the target's outputs with MSE (AdamW, torch's default weight decay, as the SDT
code) and is scored by the MSE on one fixed held-out batch. Every method sees the same batches, and its warm-up or
search (s4_sdt, s4_sdlora) its own stream of batches.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor

from stateft.errors import UserError
from stateft.s4.model import DeepS4, S4ModelConfig
from stateft.s4.train import tune


@dataclass
class SyntheticTask:
    target_layers: int = 1
    target_d_state: int = 16  # real state size: 8 complex modes
    seq_len: int = 200
    batch_size: int = 16
    eval_batch_size: int = 256
    input_max: int = 10  # inputs are integers in [0, input_max)
    steps: int = 300

    def __post_init__(self) -> None:
        for name in ("target_layers", "seq_len", "batch_size", "eval_batch_size", "input_max", "steps"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise UserError(f"dataset.{name} must be an integer >= 1, got {value!r}")


class Batches(Iterator[tuple[Tensor, Tensor]]):
    """(x, target(x)) with x random integers (B, L, H) from a seeded generator: the same stream for every method."""

    def __init__(self, task: SyntheticTask, d_model: int, target: DeepS4, seed: int, batch_size: int) -> None:
        self.shape = (batch_size, task.seq_len, d_model)
        self.task, self.target = task, target
        self.generator = torch.Generator().manual_seed(seed)
        self.device = next(target.parameters()).device

    def __next__(self) -> tuple[Tensor, Tensor]:
        x = torch.randint(0, self.task.input_max, self.shape, generator=self.generator).float().to(self.device)
        with torch.no_grad():
            return x, self.target(x)


def build_models(
    model_cfg: S4ModelConfig, task: SyntheticTask, seed: int, device: torch.device | str = "cpu"
) -> tuple[DeepS4, DeepS4]:
    """(target, frozen), seeded on the CPU (the same models on every device); the target first, as the SDT code
    builds them."""
    if model_cfg.d_input is not None or model_cfg.d_output is not None or model_cfg.head != "regression":
        raise UserError("the synthetic task maps d_model-wide sequences: set model.d_input, model.d_output null and "
                        "model.head regression (model=s4-synthetic)")  # fmt: skip
    torch.manual_seed(seed)
    target_cfg = replace(model_cfg, n_layers=task.target_layers, d_state=task.target_d_state)
    target = DeepS4(target_cfg).eval().to(device)
    frozen = DeepS4(model_cfg).eval().to(device)
    target.requires_grad_(False)
    return target, frozen


def run(
    model_cfg: S4ModelConfig, task: SyntheticTask, entries: list, seed: int, device: torch.device | str = "cpu"
) -> dict:
    """Every ``(label, method config)`` of ``entries`` on one target / frozen pair; the results per method."""
    target, frozen = build_models(model_cfg, task, seed, device)
    H = model_cfg.d_model
    x_eval, y_eval = next(Batches(task, H, target, seed + 3, task.eval_batch_size))
    results = []
    for label, method in entries:
        start = time.perf_counter()
        model = copy.deepcopy(frozen)
        choice = Batches(task, H, target, seed + 2, task.batch_size)
        batches = Batches(task, H, target, seed + 1, task.batch_size)
        n_trainable, losses = tune(model, method, choice, batches, task.steps)
        with torch.no_grad():
            mse = F.mse_loss(model(x_eval), y_eval).item()
        results.append(
            {
                "label": label,
                "method": method.name,
                "trainable_params": n_trainable,
                "mse": mse,
                "final_train_loss": losses[-1] if losses else None,
                "seconds": round(time.perf_counter() - start, 1),
                "options": {k: v for k, v in vars(method).items() if k != "selection"},
                "selection": getattr(method, "selection", None),
            }
        )
    return {"metric": "mse", "total_params": sum(p.numel() for p in frozen.parameters()), "results": results}
