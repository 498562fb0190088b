"""The registry: every PEFT method behind one name. registry key = ``conf/method/<name>.yaml`` = CLI value
(``method=<name>``) = W&B tag."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict
from typing import Any

from torch import nn

from stateft.methods import (
    additional_scan,
    bitfit,
    compose,
    full,
    init_state,
    lora,
    partial,
    prefix,
    prompt,
    sdlora,
    sdt,
    state_offset,
)
from stateft.methods.base import MethodSpec, task_head_names
from stateft.methods.configs import arch_refusal, validate_method_cfg
from stateft.models.backbone import is_transformer
from stateft.s4.methods import SPECS as S4_SPECS  # the deep-S4 methods (s4_*)

METHODS: dict[str, MethodSpec] = {
    "full": full.SPEC,
    "full_s6": full.SPEC_S6,
    "full_ssd": full.SPEC_SSD,
    "bitfit": bitfit.SPEC,
    "lora": lora.SPEC,
    "prompt": prompt.SPEC,
    "prefix": prefix.SPEC,
    "additional_scan": additional_scan.SPEC,
    "sdt": sdt.SPEC,
    "sdlora": sdlora.SPEC,
    "init_state": init_state.SPEC,
    "state_offset_h": state_offset.SPEC_H,
    "state_offset_y": state_offset.SPEC_Y,
    "partial": partial.SPEC,
    "compose": compose.SPEC,
    **S4_SPECS,
}


def train_task_head(model: nn.Module) -> list[str]:
    """Make ``model.task_head()``'s parameters trainable (fp32, as every adapter tensor); returns their names."""
    for p in model.task_head().parameters():
        p.data = p.data.float()
        p.requires_grad_(True)
    return sorted(task_head_names(model))


def get_method(name: str) -> MethodSpec:
    if name not in METHODS:
        raise KeyError(f"unknown method {name!r}; choose one of: {', '.join(METHODS)}")
    return METHODS[name]


def apply_method(name: str, model: nn.Module, cfg: Any = None, train_batches: Iterable | None = None) -> list[str]:
    """Apply method ``name`` to ``model`` in place; returns the sorted names of the trainable parameters.

    ``cfg``: the method's options (dict, DictConfig or its typed config; validated). ``train_batches``: training
    batches for methods with a data-driven set-up (sdt's warm-up). The resolved config (with derived fields such as
    sdt's selection) is recorded as ``model.peft_config`` for the adapter checkpoint.

    A method applies to the architectures its spec declares (``MethodSpec.archs``); on any other model it is refused
    with one line naming the methods that apply there, and an option that does not apply to the model's architecture
    with its own line (``arch_refusal``, which the start-up check asks too; NotImplementedError: a choice the user can
    change). The backbone's family picks the implementation (``stateft.models.backbone``): stateft's own methods on a
    Mamba, HF peft's on a Transformer (``peft_methods``).
    """
    cfg = validate_method_cfg({"name": name} if cfg is None else cfg)
    if cfg.name != name:
        raise ValueError(f"apply_method({name!r}) got the config of {cfg.name!r}")
    spec = get_method(name)
    reason = arch_refusal(cfg, model.config.arch)  # a composition: each of its parts too
    if reason is not None:
        raise NotImplementedError(reason)
    if is_transformer(model):
        from stateft.methods import peft_methods

        names = peft_methods.apply(model, cfg)
    else:
        names = spec.apply(model, cfg, train_batches) if spec.needs_data else spec.apply(model, cfg)
    if hasattr(model, "task_head"):  # an image classifier: its task's head is trained with every method
        names = sorted({*names, *train_task_head(model)})
    model.peft_config = asdict(cfg)
    model.peft_trainable = names
    return names
