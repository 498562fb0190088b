"""Merging an applied adapter into its base model: a plain Mamba of the base architecture with the same outputs.

A method that can be merged declares how (``MethodSpec.fold``, `stateft.methods.base`): LoRA adds s B A into each
wrapped linear, sdt / sdlora add their sparse deltas into A_log and x_proj (and sdlora its out_proj LoRA), and the
methods that train existing weights (full, full_s6, full_ssd, bitfit) are merged as they stand. A method without a
fold fills an adapter slot of the model (`stateft.models.backbone`), which has no counterpart among the base weights:
it is refused with one line naming the slot and why, and is shared as an adapter instead. After a fold the model must
hold exactly the tensors of a bare model of its config (no wrapper, parametrisation or slot left): anything else is a
bug in the fold, never written out.
"""

from __future__ import annotations

import copy
from typing import Any

from torch import nn

from stateft.errors import UserError

# what each adapter slot adds, and so why it cannot become a base weight
SLOT_REASONS = {
    "state_offset": "it offsets the state's read-out (C_t h' or y'), a term no base weight computes",
    "init_state": "it starts every sequence from a trained state, which is not a weight of the model",
    "prefix": "it prepends trained vectors to every sequence's in_proj output",
    "extra_states": "it adds state dimensions the base architecture does not have",
    "prompt": "it prepends trained virtual token embeddings to the input",
}
MIXER_SLOTS = ("init_state", "state_offset", "prefix", "extra_states")


def filled_slots(model: nn.Module) -> list[str]:
    """The adapter slots a method filled on ``model`` (each named once)."""
    slots = [slot for slot in MIXER_SLOTS if any(getattr(m, slot, None) is not None for m in model.mixers())]
    return slots + (["prompt"] if getattr(model, "prompt", None) is not None else [])


def refusal(method_cfg: Any, model_config: Any) -> str | None:
    """None when the method can be merged; else the one-line reason, found by applying it to a model of
    ``model_config`` on the meta device (nothing is allocated) and naming the slots it fills."""
    from stateft.methods import METHODS, apply_method
    from stateft.models.loading import build_model

    if METHODS[method_cfg.name].fold is not None:
        return None
    shadow = build_model(model_config, device="meta")
    apply_method(method_cfg.name, shadow, copy.deepcopy(method_cfg))
    why = "; ".join(f"{slot}: {SLOT_REASONS[slot]}" for slot in filled_slots(shadow)) or "it declares no fold"
    return (
        f"method {method_cfg.name} cannot be merged into the base weights ({why}); "
        "share it as an adapter instead (the adapter folder as it is)"
    )


def merge(model: nn.Module) -> nn.Module:
    """Fold the method applied to ``model`` (``apply_method`` / ``VerifiedAdapter.apply``) into its weights, in place;
    returns the model in eval mode with nothing trainable. UserError (one line) for a method without a fold."""
    from stateft.methods import METHODS
    from stateft.methods.configs import validate_method_cfg

    recorded = getattr(model, "peft_config", None)
    if recorded is None:
        raise ValueError("merge needs a model that apply_method() has prepared")
    method_cfg = validate_method_cfg(copy.deepcopy(recorded))
    reason = refusal(method_cfg, model.config)
    if reason is not None:
        raise UserError(reason)
    model.eval()
    METHODS[method_cfg.name].fold(model)
    check_plain(model)
    for p in model.parameters():
        p.requires_grad_(False)
    del model.peft_config, model.peft_trainable
    return model


def check_plain(model: nn.Module) -> None:
    """``model`` holds exactly the tensors, by name and shape, of a bare model of its config."""
    from stateft.models.loading import build_model

    want = {k: tuple(v.shape) for k, v in build_model(model.config, device="meta").state_dict().items()}
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if want != got:
        extra, missing = sorted(set(got) - set(want)), sorted(set(want) - set(got))
        wrong = sorted(k for k in set(want) & set(got) if want[k] != got[k])
        raise RuntimeError(
            f"the fold left no plain model: extra {extra[:3]}, missing {missing[:3]}, shapes {wrong[:3]}"
        )
    if filled_slots(model):
        raise RuntimeError(f"the fold left adapter slots filled: {filled_slots(model)}")


__all__ = ["SLOT_REASONS", "check_plain", "filled_slots", "merge", "refusal"]
