"""compose: several PEFT methods on one model at once (MambaPEFT's hybrid PEFT, Yoshimura et al., ICLR 2025).

``method=compose method.parts=[lora,additional_scan,prefix]``: each part is applied with its own options
(``method.<part>.<option>``, by default the part's ``conf/method/<part>.yaml``) and trains what it would train alone,
with its own learning rate ``method.<part>.lr`` (one AdamW group per part, ``lr_groups``; null: the run's optim.lr).

Order: the parts that train existing weights (``MethodSpec.fold is fold_nothing``: full_s6, full_ssd, bitfit,
partial) are applied first, on the pretrained module names they select by; then the others in the order of
``parts`` (a LoRA wrapper moves ``dt_proj.bias`` to ``dt_proj.base.bias``, the same tensor). Each part's ``apply``
freezes everything else, so the union of the parts' tensors is made trainable again at the end. Each part starts
from the tensors it would start from alone (its initialisation draws from the run's seed, as alone).

Refused with one line (UserError): two parts training the same tensor (bitfit and partial's dt_bias), and two parts
filling the same slot (state_offset_h and state_offset_y both set ``mixer.state_offset``), found while applying: a
tensor an earlier part added must still be in the model under its name after every later part.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from stateft.errors import UserError
from stateft.methods.base import MethodSpec, fold_nothing, task_head_names, trainable_names
from stateft.methods.configs import ComposeConfig


def _specs() -> dict[str, MethodSpec]:
    from stateft.methods.registry import METHODS  # the registry imports this module

    return METHODS


def application_order(parts: list[str]) -> list[str]:
    """The parts that select existing weights first (they read the pretrained names), then the rest as listed."""
    specs = _specs()
    return [p for p in parts if specs[p].fold is fold_nothing] + [p for p in parts if specs[p].fold is not fold_nothing]


def _slot(name: str) -> str:
    """The slot a parameter sits in: the module after ``mixer.`` (``state_offset``) or the model-level one."""
    return name.split(".mixer.", 1)[1].split(".", 1)[0] if ".mixer." in name else name.split(".", 1)[0]


def apply(model: nn.Module, cfg: Any) -> list[str]:
    specs, configs = _specs(), cfg.part_configs()
    pretrained = {id(p) for p in model.parameters()}
    owner: dict[int, str] = {}  # id of a trained tensor -> the part that trains it
    added: dict[int, str] = {}  # id of a tensor a part added -> its name when that part was applied
    for part in application_order(list(cfg.parts)):
        spec = specs[part]
        names = spec.apply(model, configs[part])
        params = dict(model.named_parameters())
        where = {id(p): n for n, p in params.items()}
        for pid, name in added.items():
            if where.get(pid) != name:
                raise UserError(
                    f"compose: parts {owner[pid]} and {part} both fill the slot {_slot(name)} of the model; "
                    "keep one of them in method.parts"
                )
        for name in names:
            pid = id(params[name])
            if pid in owner:
                raise UserError(
                    f"compose: parts {owner[pid]} and {part} both train {name}; drop one of them or choose other "
                    "targets for one"
                )
            owner[pid] = part
            if pid not in pretrained:
                added[pid] = name
    by_part: dict[str, list[str]] = {part: [] for part in cfg.parts}
    for name, p in model.named_parameters():
        p.requires_grad_(id(p) in owner)
        if id(p) in owner:
            by_part[owner[id(p)]].append(name)
    model.peft_parts = {part: sorted(by_part[part]) for part in cfg.parts}
    return trainable_names(model)


def lr_groups(model: nn.Module, trainable: list[str], lr: float) -> list[tuple[float, list[str]]]:
    """``[(learning rate, names)]``: one group per part of a composition (its ``lr``, or ``lr`` where null), in the
    order of ``parts``, then what no part trains (an image model's task head) at ``lr``; any other method: one group
    of all ``trainable`` at ``lr``."""
    parts = getattr(model, "peft_parts", None)
    recorded = getattr(model, "peft_config", None) or {}
    if not parts or recorded.get("name") != "compose":
        return [(lr, list(trainable))]
    wanted = set(trainable)
    groups = []
    for part, names in parts.items():
        part_lr = recorded[part].get("lr")
        groups.append((lr if part_lr is None else float(part_lr), [n for n in names if n in wanted]))
    covered = {n for _, names in groups for n in names}
    rest = sorted(wanted - covered)  # trained beside the parts: the task head of an image model (apply_method)
    if not set(rest) <= task_head_names(model):
        raise ValueError(f"compose: the parts' tensors are not the trainable ones: {rest[:3]}")
    return groups + ([(lr, rest)] if rest else [])


def part_summary(model: nn.Module) -> list[str]:
    """One line per part of a composition with its trainable count (and learning rate), then the total; [] for any
    other method."""
    parts = getattr(model, "peft_parts", None)
    recorded = getattr(model, "peft_config", None) or {}
    if not parts or recorded.get("name") != "compose":
        return []
    params = dict(model.named_parameters())
    counts = {part: sum(params[n].numel() for n in names) for part, names in parts.items()}
    rates = {part: recorded[part].get("lr") for part in parts}
    head = task_head_names(model)
    if head:  # an image model's task head trains beside the parts, at optim.lr
        counts["task head"], rates["task head"] = sum(params[n].numel() for n in head), None
    width = max(len(name) for name in counts)
    lines = []
    for name, count in counts.items():
        lr = rates[name]
        lines.append(f"  {name:<{width}}  {count:>12,d} params  lr={'optim.lr' if lr is None else f'{lr:g}'}")
    lines.append(f"  {'total':<{width}}  {sum(counts.values()):>12,d} params")
    return ["compose: trainable params per part", *lines]


# no fold: ``stateft.merge`` refuses a composition naming the slots its parts fill (a composition of weight-only
# parts could be folded part by part; merge does not ask the parts yet)
SPEC = MethodSpec(ComposeConfig, apply)

__all__ = ["SPEC", "application_order", "apply", "lr_groups", "part_summary"]
