"""transformers' Mamba checkpoint layout (``MambaForCausalLM`` / ``Mamba2ForCausalLM``), read and written from one
table per architecture.

Weights: our parameter names are mamba_ssm's; transformers' differ only in the embedding (``backbone.embeddings.``
for our ``backbone.embedding.``), so ``EMBEDDING`` is the one rename, applied one way when loading and the other way
when exporting. The vocabulary is stored unpadded (``vocab_size`` = the embedding's rows).

``config.json``: ``MAMBA1_KEYS`` / ``MAMBA2_KEYS`` pair each transformers key with our ``MambaConfig`` field and the
value transformers assumes when the key is absent; ``FIXED`` holds what the layout cannot express (unpadded
vocabulary; Mamba-2's gated RMSNorm with the gate applied before the norm, as every state-spaces checkpoint has it).
``config_from_transformers`` reads a file with them and ``transformers_config`` writes one. Torch-free.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

from stateft.errors import UserError
from stateft.models.config import MambaConfig

EMBEDDING = ("backbone.embedding.", "backbone.embeddings.")  # (ours and mamba_ssm's, transformers')
REQUIRED = object()  # a key transformers' config.json always holds
_COMMON = (
    ("hidden_size", "d_model", REQUIRED),
    ("num_hidden_layers", "n_layer", REQUIRED),
    ("vocab_size", "vocab_size", REQUIRED),
    ("conv_kernel", "d_conv", 4),
    ("expand", "expand", 2),
    ("layer_norm_epsilon", "rms_norm_eps", 1e-5),
    ("use_conv_bias", "conv_bias", True),
    ("use_bias", "bias", False),
)
MAMBA1_KEYS = _COMMON + (
    ("state_size", "d_state", 16),
    ("time_step_rank", "dt_rank", "auto"),
    ("tie_word_embeddings", "tie_embeddings", True),
)
MAMBA2_KEYS = _COMMON + (
    ("state_size", "d_state", 128),
    ("tie_word_embeddings", "tie_embeddings", False),
    ("time_step_min", "dt_min", 0.001),
    ("time_step_max", "dt_max", 0.1),
    ("time_step_floor", "dt_init_floor", 1e-4),
    ("head_dim", "headdim", 64),
    ("n_groups", "ngroups", 8),
    ("chunk_size", "chunk_size", 256),
    ("time_step_limit", "dt_limit", (0.0, math.inf)),
)
KEYS = {"mamba": MAMBA1_KEYS, "mamba2": MAMBA2_KEYS}
MODEL_TYPES = {"mamba1": "mamba", "mamba2": "mamba2"}  # our arch -> transformers' model_type
CLASSES = {"mamba": "MambaForCausalLM", "mamba2": "Mamba2ForCausalLM"}
FIXED: dict[str, dict[str, Any]] = {
    "mamba": {"pad_vocab_size_multiple": 1},
    "mamba2": {"pad_vocab_size_multiple": 1, "rmsnorm": True, "norm_before_gate": False},
}


def as_float(value: Any) -> float:
    """A float from config.json; transformers writes infinity as ``{"__float__": "Infinity"}``."""
    if isinstance(value, dict) and "__float__" in value:
        value = value["__float__"]
    return float(value)


# -- weights -------------------------------------------------------------------------------------------------------
def to_ours(state: dict[str, Any]) -> dict[str, Any]:
    """transformers' tensor names -> ours."""
    theirs, ours = EMBEDDING[1], EMBEDDING[0]
    return {k.replace(theirs, ours, 1) if k.startswith(theirs) else k: v for k, v in state.items()}


def to_transformers(name: str) -> str:
    """One of our parameter (or module) names -> transformers'."""
    ours, theirs = EMBEDDING
    return theirs + name[len(ours) :] if name.startswith(ours) else name


# -- config.json ---------------------------------------------------------------------------------------------------
def config_from_transformers(raw: dict[str, Any]) -> MambaConfig:
    """Our config from a transformers ``config.json`` (``model_type`` mamba or mamba2)."""
    model_type = raw["model_type"]
    values = {
        field: raw[key] if default is REQUIRED else raw.get(key, default) for key, field, default in KEYS[model_type]
    }
    values.update(FIXED[model_type])
    if model_type == "mamba":
        return MambaConfig(arch="mamba1", **values)
    values["dt_limit"] = tuple(as_float(v) for v in values["dt_limit"])
    nheads, width = raw.get("num_heads", 128) * values["headdim"], values["expand"] * values["d_model"]
    if nheads != width:
        raise UserError(f"config.json: num_heads * head_dim = {nheads} != expand * hidden_size = {width}")
    return MambaConfig(arch="mamba2", **values)


def transformers_config(config: MambaConfig, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The transformers ``config.json`` of a model of ``config``; ``extra`` keys are added (token ids, dtype...).
    A model the layout cannot express (a Mamba-2 without the gated norm or with the norm before the gate) is refused
    with one line."""
    model_type = MODEL_TYPES[config.arch]
    flat = replace(config, vocab_size=config.padded_vocab_size, pad_vocab_size_multiple=1)
    if config.arch == "mamba1":
        flat = replace(flat, dt_rank=config.dt_rank_value)
    off = [f"{k}={getattr(flat, k)}" for k, v in FIXED[model_type].items() if getattr(flat, k) != v]
    if off:
        raise UserError(
            f"transformers' {CLASSES[model_type]} has no setting for {', '.join(off)}; "
            "export this model in the mamba_ssm layout instead"
        )
    raw: dict[str, Any] = {"architectures": [CLASSES[model_type]], "model_type": model_type}
    for key, field, _ in KEYS[model_type]:
        value = getattr(flat, field)
        raw[key] = list(value) if isinstance(value, tuple) else value
    if config.arch == "mamba2":
        raw["num_heads"] = config.nheads
    raw["intermediate_size"] = config.d_inner
    raw["residual_in_fp32"] = True  # our residual stream is fp32 (stateft.models.lm)
    return {**raw, **(extra or {})}


__all__ = [
    "EMBEDDING",
    "KEYS",
    "as_float",
    "config_from_transformers",
    "to_ours",
    "to_transformers",
    "transformers_config",
]
