"""The SDT paper's synthetic deep-S4 experiment (the SDT code's ``run_s4.py`` with ``data: synthetic``).

A random target S4 (1 layer, state 8 complex modes) and a random frozen deep S4 (4 layers, 16 complex modes per
channel, d_model 64), both the SDT code's ReLU ("theory") models with random A; inputs are random integers in
[0, 10) of shape (batch, seq_len 200, d_model), a fresh batch each step; each method tunes a copy of the frozen
model towards the target's outputs with MSE (AdamW, lr 0.005) and is scored by the MSE on a fixed held-out batch.
Every method sees the same batches; sdt and sdlora first warm up a copy (20 steps at lr 0.01, every parameter)
and select 16 of 64 channels and 8 of 16 modes per layer.

    python -m stateft.s4.synthetic --methods frozen full sdt [--steps 300] [--out results.json]

Prints a table (method, trainable parameters, held-out MSE) and writes the results with the settings as JSON.
Scaled for a CPU: the SDT code trains 500 steps of batch 4000 on a GPU; here 300 steps of batch 16 by default.
The SDT code's ``d_state`` counts complex modes, ours the real state size N (N/2 modes): its 16 and 8 are
``--frozen-d-state 32 --target-d-state 16`` here.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stateft.errors import UserError
from stateft.s4.model import DeepS4, theory_config
from stateft.s4.peft import METHODS, SELECTIVE, S4PeftConfig, apply, count_trainable, select


@dataclass
class SyntheticConfig:
    d_model: int = 64
    frozen_layers: int = 4
    frozen_d_state: int = 32  # 16 complex modes
    target_layers: int = 1
    target_d_state: int = 16  # 8 complex modes
    seq_len: int = 200
    batch_size: int = 16
    steps: int = 300
    lr: float = 0.005
    eval_batch_size: int = 256
    input_max: int = 10  # inputs are integers in [0, input_max)
    seed: int = 123
    peft: S4PeftConfig = field(default_factory=S4PeftConfig)

    def __post_init__(self) -> None:
        for name in ("d_model", "frozen_layers", "target_layers", "seq_len", "batch_size", "steps", "eval_batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise UserError(f"{name} must be an integer >= 1, got {value!r}")
        if self.input_max < 1:
            raise UserError(f"input_max must be >= 1, got {self.input_max}")
        if not self.lr > 0:
            raise UserError(f"lr must be > 0, got {self.lr}")


class Batches:
    """Random integer inputs (B, L, H) from a seeded generator: the same sequence for every method."""

    def __init__(self, cfg: SyntheticConfig, seed: int, batch_size: int) -> None:
        self.cfg, self.batch_size = cfg, batch_size
        self.generator = torch.Generator().manual_seed(seed)

    def next(self) -> Tensor:
        shape = (self.batch_size, self.cfg.seq_len, self.cfg.d_model)
        return torch.randint(0, self.cfg.input_max, shape, generator=self.generator).float()


def build_models(cfg: SyntheticConfig) -> tuple[DeepS4, DeepS4]:
    """(target, frozen), seeded; the target first, as the SDT code builds them."""
    torch.manual_seed(cfg.seed)
    target = DeepS4(theory_config(cfg.d_model, cfg.target_layers, cfg.target_d_state)).eval()
    frozen = DeepS4(theory_config(cfg.d_model, cfg.frozen_layers, cfg.frozen_d_state)).eval()
    target.requires_grad_(False)
    return target, frozen


def mse_loss(target: nn.Module, batches: Batches) -> Callable[[nn.Module], Tensor]:
    """loss_fn(model) = MSE(model(x), target(x)) on the next batch."""

    def loss_fn(model: nn.Module) -> Tensor:
        x = batches.next()
        with torch.no_grad():
            y = target(x)
        return F.mse_loss(model(x), y)

    return loss_fn


@torch.no_grad()
def evaluate(model: nn.Module, target: nn.Module, x: Tensor) -> float:
    return F.mse_loss(model(x), target(x)).item()


def train(model: nn.Module, loss_fn: Callable[[nn.Module], Tensor], steps: int, lr: float) -> list[float]:
    """AdamW (torch's default weight decay, as the SDT code) on the trainable parameters; the loss per step."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        return []
    optimizer = torch.optim.AdamW(params, lr=lr)
    model.train()
    losses = []
    for _ in range(steps):
        loss = loss_fn(model)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    model.eval()
    return losses


def run_method(method: str, cfg: SyntheticConfig, target: DeepS4, frozen: DeepS4, x_eval: Tensor) -> dict:
    """Tune a copy of ``frozen`` with ``method``; its trainable count, held-out MSE and timing."""
    start = time.perf_counter()
    model = copy.deepcopy(frozen)
    peft = S4PeftConfig(**{**asdict(cfg.peft), "method": method})
    selection = None
    if method in SELECTIVE:
        warm_batches = Batches(cfg, cfg.seed + 2, cfg.batch_size)
        selection = select(model, peft, mse_loss(target, warm_batches), cfg.seq_len)
    apply(model, peft, selection)
    losses = train(model, mse_loss(target, Batches(cfg, cfg.seed + 1, cfg.batch_size)), cfg.steps, cfg.lr)
    return {
        "method": method,
        "trainable_params": count_trainable(model),
        "mse": evaluate(model, target, x_eval),
        "final_train_loss": losses[-1] if losses else None,
        "seconds": round(time.perf_counter() - start, 1),
        "selection": [s.as_dict() for s in selection] if selection else None,
    }


def run(cfg: SyntheticConfig, methods: list[str]) -> dict:
    """Every method on one target / frozen pair; results with the settings."""
    for method in methods:
        if method not in METHODS:
            raise UserError(f"unknown S4 method {method!r}; choose one of: {', '.join(METHODS)}")
    target, frozen = build_models(cfg)
    x_eval = Batches(cfg, cfg.seed + 3, cfg.eval_batch_size).next()
    results = [run_method(m, cfg, target, frozen, x_eval) for m in methods]
    total = sum(p.numel() for p in frozen.parameters())
    return {"config": asdict(cfg), "total_params": total, "results": results}


def table(report: dict) -> str:
    lines = [f"{'method':<8} {'trainable':>10} {'of total':>9} {'held-out MSE':>14} {'seconds':>8}"]
    for r in report["results"]:
        share = f"{100 * r['trainable_params'] / report['total_params']:.2f}%"
        lines.append(f"{r['method']:<8} {r['trainable_params']:>10,} {share:>9} {r['mse']:>14.6g} {r['seconds']:>8}")
    return "\n".join(lines)


HELP = {
    "frozen_d_state": "real state size N of the frozen model's layers (N/2 complex modes)",
    "target_d_state": "real state size N of the target's layers (N/2 complex modes)",
    "steps": "training steps per method (a fresh random batch each)",
    "lr": "AdamW learning rate of the training",
    "input_max": "inputs are random integers in [0, input_max)",
    "select_channels": "sdt/sdlora: channels kept per layer (C zeroed on the others)",
    "update_channels": "sdt/sdlora: kept channels that are updated",
    "select_states": "sdt/sdlora: complex modes kept per kept channel",
    "update_states": "sdt/sdlora: kept modes updated per updated channel",
    "lora_rank": "lora/sdlora: rank of the output linear's update",
    "train_D": "lora/sdt/sdlora: D trains too (true/false)",
    "warmup_steps": "sdt/sdlora: AdamW updates of the warm-up",
    "warmup_lr": "sdt/sdlora: learning rate of the warm-up",
    "warmup_params": "sdt/sdlora: what the warm-up trains: all | ssm",
}


def _flag(parser: argparse.ArgumentParser, name: str, value) -> None:
    kind = (lambda s: s.lower() in ("1", "true", "yes")) if isinstance(value, bool) else type(value)
    text = HELP.get(name, name.replace("_", " "))
    parser.add_argument(f"--{name.replace('_', '-')}", type=kind, default=value, help=text)


def parse_args(argv: list[str] | None) -> tuple[SyntheticConfig, list[str], Path]:
    parser = argparse.ArgumentParser(
        prog="python -m stateft.s4.synthetic",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--methods", nargs="+", default=["frozen", "full", "sdt"], choices=METHODS)
    parser.add_argument("--out", type=Path, default=Path("outputs/s4_synthetic/results.json"), help="results JSON")
    for name, value in asdict(SyntheticConfig(peft=None)).items():
        if name != "peft":
            _flag(parser, name, value)
    for name, value in asdict(S4PeftConfig()).items():
        if name != "method":
            _flag(parser, name, value)
    args = vars(parser.parse_args(argv))
    methods, out = args.pop("methods"), args.pop("out")
    peft_keys = set(asdict(S4PeftConfig())) - {"method"}
    peft = S4PeftConfig(**{k: args.pop(k) for k in peft_keys})
    return SyntheticConfig(**args, peft=peft), methods, out


def main(argv: list[str] | None = None) -> int:
    try:
        cfg, methods, out = parse_args(argv)
        report = run(cfg, methods)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(table(report))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
