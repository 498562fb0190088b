"""A stateft LoRA adapter in HF peft's format, for transformers' ``MambaForCausalLM`` / ``Mamba2ForCausalLM``:
``PeftModel.from_pretrained(model, folder)`` applies it.

stateft's LoRA may give one linear several low-rank updates, one per row block (Mamba-1's x_proj: dt, B and C). peft
has one per module, so the blocks become one LoRA of rank k r: A the k factors A_j stacked (k r, in), B block-diagonal
(out, k r) with zero rows where no block is, which is exactly the update (``LoRALinear.update_factors``); its alpha is
k alpha, so that peft's scaling alpha / r stays stateft's. Such modules get their rank and alpha through peft's
``rank_pattern`` / ``alpha_pattern``. Module names are transformers' (``stateft.models.transformers_layout``).

Two limits come from the other side. peft refuses LoRA on ``out_proj`` (and ``conv1d``) of a Mamba model (its
``_check_lora_target_modules_mamba``: transformers' fused CUDA path reads ``out_proj.weight`` directly), so an adapter
with such a target (Mamba-2's default in_proj + out_proj) is refused in one line: export it merged instead. And
transformers' ``MambaMixer`` multiplies by ``dt_proj.weight`` itself rather than calling ``dt_proj``, so peft's LoRA
on dt_proj changes the output only once merged (``merge_and_unload()``); the export says so in a warning line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from stateft.methods.lora import LoRALinear
from stateft.models.transformers_layout import to_transformers

WEIGHTS_NAME = "adapter_model.safetensors"  # peft's names
PREFIX = "base_model.model."  # peft's prefix of the wrapped model's module names
CALLED_BY_WEIGHT = {"mamba1": ("dt_proj",)}  # linears transformers reads .weight of instead of calling them
PEFT_REFUSES = ("out_proj", "conv1d")  # peft's LoRA refuses these modules on Mamba models


def targeted_linears(method_cfg: Any, arch: str) -> list[str]:
    """The mixer linears a LoRA config wraps (``x_proj.dt`` -> ``x_proj``), its defaults for ``arch`` if unset."""
    from stateft.methods.lora import DEFAULT_TARGETS

    return sorted({t.partition(".")[0] for t in method_cfg.target_modules or DEFAULT_TARGETS[arch]})


def peft_refusal(method_cfg: Any, arch: str) -> str | None:
    """The one-line reason peft cannot load this LoRA onto transformers' model; None when it can."""
    refused = [t for t in targeted_linears(method_cfg, arch) if t in PEFT_REFUSES]
    if not refused:
        return None
    return (
        f"peft refuses LoRA on {', '.join(refused)} of Mamba models (transformers' fused kernels read the weight "
        "directly), so this adapter cannot be exported in peft's format: export it merged (--layout transformers)"
    )


def peft_lora(model: nn.Module, method_cfg: Any) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(peft's adapter tensors, peft ``LoraConfig`` keyword arguments) of the LoRA applied to ``model``."""
    tensors: dict[str, torch.Tensor] = {}
    ranks: dict[str, int] = {}
    scalings: dict[str, float] = {}
    for path, module in model.named_modules():
        if not isinstance(module, LoRALinear):
            continue
        A, B = module.update_factors()
        name = PREFIX + to_transformers(path)
        tensors[f"{name}.lora_A.weight"] = A.detach().float().contiguous()
        tensors[f"{name}.lora_B.weight"] = B.detach().float().contiguous()
        linear = path.rsplit(".", 1)[-1]
        ranks[linear], scalings[linear] = A.shape[0], module.scaling
    r, alpha = method_cfg.r, method_cfg.alpha
    options = {
        "r": r,
        "lora_alpha": alpha,
        "lora_dropout": method_cfg.dropout,
        "target_modules": sorted(ranks),
        "rank_pattern": {k: v for k, v in sorted(ranks.items()) if v != r},
        "alpha_pattern": {k: scalings[k] * v for k, v in sorted(ranks.items()) if v != r},
        "bias": "none",
        "task_type": "CAUSAL_LM",
    }
    return tensors, options


def unmerged_caveat(method_cfg: Any, arch: str) -> str | None:
    """The warning for targets transformers bypasses unless the LoRA is merged; None when there are none."""
    bypassed = [t for t in targeted_linears(method_cfg, arch) if t in CALLED_BY_WEIGHT.get(arch, ())]
    if not bypassed:
        return None
    return (
        f"transformers' Mamba mixer multiplies by {', '.join(bypassed)}.weight directly, so peft's LoRA there takes "
        "effect only after PeftModel.merge_and_unload()"
    )


def write_peft_lora(model: nn.Module, method_cfg: Any, folder: Path, base_name: str | None, dtype: torch.dtype) -> None:
    """Write ``adapter_config.json`` (peft's ``LoraConfig``) and ``adapter_model.safetensors`` into ``folder``."""
    from peft import LoraConfig
    from safetensors.torch import save_file

    tensors, options = peft_lora(model, method_cfg)
    LoraConfig(base_model_name_or_path=base_name, inference_mode=True, **options).save_pretrained(str(folder))
    save_file({k: v.to(dtype) for k, v in tensors.items()}, str(folder / WEIGHTS_NAME), metadata={"format": "pt"})


__all__ = ["peft_lora", "peft_refusal", "targeted_linears", "unmerged_caveat", "write_peft_lora"]
