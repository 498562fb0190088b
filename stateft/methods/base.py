"""The method interface: ``apply(model, cfg) -> list[str]`` mutates the model in place, freezes everything else and
returns the names of the trainable parameters. That list drives the optimiser, the adapter checkpoint and the tests."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from stateft.methods.configs import MethodConfig

ApplyFn = Callable[..., list[str]]
FoldFn = Callable[[nn.Module], None]


@dataclass(frozen=True)
class MethodSpec:
    """A registered method: its typed config and its ``apply``. ``needs_data``: apply takes ``train_batches``.

    ``fold``: for a method whose trained model is a plain model of the base architecture, the function that turns the
    applied model (eval mode, tensors loaded) into that plain model in place: updates added into the base weights,
    wrappers and parametrisations removed, the same outputs (``stateft.merge``). None: the method adds something
    the base weights cannot hold (a slot), so it is shared as an adapter only."""

    config: type[MethodConfig]
    apply: ApplyFn
    needs_data: bool = False
    fold: FoldFn | None = None

    @property
    def archs(self) -> frozenset[str]:
        """The architectures (``model.arch``) the method applies to, as its config class declares them: that class
        is torch-free, so the start-up check reads the same declaration (``stateft.methods.configs``)."""
        return self.config.archs


def fold_nothing(model: nn.Module) -> None:
    """The ``fold`` of a method that trains existing weights (full, full_s6, full_ssd, bitfit): they already are the
    merged model."""


def freeze_all(model: nn.Module) -> None:
    for p in model.parameters():
        p.requires_grad_(False)


def task_head_names(model: nn.Module) -> set[str]:
    """The parameter names of an image model's task head (``model.task_head()``, trained with every method); empty
    for a language model."""
    if not hasattr(model, "task_head"):
        return set()
    ids = {id(p) for p in model.task_head().parameters()}
    return {n for n, p in model.named_parameters() if id(p) in ids}


def trainable_names(model: nn.Module) -> list[str]:
    """Sorted names of the parameters with requires_grad (tied weights appear once)."""
    return sorted(name for name, p in model.named_parameters() if p.requires_grad)


def mark_trainable(model: nn.Module, predicate: Callable[[str], bool]) -> list[str]:
    """Freeze everything, then make the parameters whose name satisfies ``predicate`` trainable (in fp32; under
    trainer.precision=bf16-true the app casts them back to bf16 afterwards, `stateft.app.precision`)."""
    freeze_all(model)
    for name, p in model.named_parameters():
        if predicate(name):
            p.data = p.data.float()  # fp32 master copy when the base is stored in bf16
            p.requires_grad_(True)
    return trainable_names(model)


def init_generator(offset: int = 0) -> torch.Generator:
    """A CPU generator for adapter initialisation, seeded from the run's seed (``torch.initial_seed()``, which
    ``seed=...`` sets through Lightning's seed_everything) plus ``offset``: runs with different seeds start from
    different adapters, the same seed from the same ones, and the global random stream is not consumed."""
    return torch.Generator().manual_seed((torch.initial_seed() + offset) % 2**63)


def fan_in_uniform(
    shape: tuple[int, ...], fan_in: int, generator: torch.Generator, device: torch.device | str
) -> torch.Tensor:
    """U(-1/sqrt fan_in, 1/sqrt fan_in) of ``shape``: nn.Linear's default init of a weight (kaiming_uniform_ with
    a=sqrt 5) or of a bias, the init of LoRA's A. Drawn from ``generator`` (``init_generator``) on the default
    device (the CPU, so the values do not depend on where the model lives; the meta device inside
    ``with torch.device("meta")``, where only shapes are checked), then moved to ``device``."""
    bound = 1 / math.sqrt(fan_in)
    return torch.empty(shape).uniform_(-bound, bound, generator=generator).to(device)


def new_parameter(tensor: torch.Tensor, *, no_weight_decay: bool = False) -> nn.Parameter:
    """An fp32 trainable adapter parameter (bf16 under trainer.precision=bf16-true: the app casts it after
    ``apply``, `stateft.app.precision`)."""
    p = nn.Parameter(tensor.float())
    if no_weight_decay:
        p._no_weight_decay = True
    return p
