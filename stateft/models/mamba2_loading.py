"""Mamba-2 configs from mamba_ssm's checkpoint layout (transformers' layout: ``stateft.models.transformers_layout``).

- mamba_ssm (``state-spaces/mamba2-130m`` ... ``-2.7b``): ``config.json`` with ``d_model``, ``n_layer``,
  ``ssm_cfg: {"layer": "Mamba2", ...}`` and ``pad_vocab_size_multiple: 16``; omitted ``ssm_cfg`` keys take
  mamba_ssm's ``Mamba2`` defaults (d_state 128, headdim 64, ngroups 1, expand 2, chunk_size 256).
- transformers (``Mamba2ForCausalLM``): ``model_type: mamba2``, ``hidden_size``, ``num_heads``, ``head_dim``,
  ``n_groups``, ``state_size``... Its vocabulary is stored unpadded; read in ``stateft.models.transformers_layout``.
Parameter names agree in both (``in_proj``, ``conv1d``, ``dt_bias``, ``A_log``, ``D``, ``norm``, ``out_proj``).
"""

from __future__ import annotations

import math
from typing import Any

from stateft.errors import UserError
from stateft.models.config import MambaConfig
from stateft.models.transformers_layout import as_float

# mamba_ssm Mamba2.__init__ defaults (the official checkpoints set only "layer")
MAMBA2_DEFAULTS: dict[str, Any] = {
    "d_state": 128,
    "d_conv": 4,
    "expand": 2,
    "headdim": 64,
    "ngroups": 1,
    "chunk_size": 256,
    "rmsnorm": True,
    "norm_before_gate": False,
    "dt_limit": (0.0, math.inf),
}
# ssm_cfg keys that only choose kernels or the random init of trained weights: no effect on a loaded model
_IGNORED = {"layer", "use_mem_eff_path", "A_init_range", "conv_init", "layer_idx", "process_group", "sequence_parallel"}
_MAPPED = {
    "d_state",
    "d_conv",
    "expand",
    "headdim",
    "ngroups",
    "chunk_size",
    "rmsnorm",
    "norm_before_gate",
    "dt_limit",
    "dt_min",
    "dt_max",
    "dt_init_floor",
    "bias",
    "conv_bias",
}


def mamba2_config_from_mamba_ssm(raw: dict[str, Any]) -> MambaConfig:
    """MambaConfig from a mamba_ssm ``config.json`` whose ``ssm_cfg.layer`` is ``Mamba2``."""
    ssm_cfg = dict(raw.get("ssm_cfg") or {})
    if raw.get("d_intermediate", 0) or raw.get("attn_layer_idx"):
        raise UserError(
            "this Mamba-2 checkpoint has MLP (d_intermediate > 0) or attention layers (attn_layer_idx); "
            "stateft supports pure Mamba-2 stacks only"
        )
    if ssm_cfg.get("D_has_hdim", False):
        raise NotImplementedError("ssm_cfg.D_has_hdim=true (D per channel) is not supported; D is per head")
    d_inner = ssm_cfg.get("expand", MAMBA2_DEFAULTS["expand"]) * raw["d_model"]
    if ssm_cfg.get("d_ssm") not in (None, d_inner):
        raise NotImplementedError("ssm_cfg.d_ssm < d_inner (a gated-MLP part beside the SSM) is not supported")
    unknown = sorted(set(ssm_cfg) - _MAPPED - _IGNORED - {"D_has_hdim", "d_ssm"})
    if unknown:
        raise UserError(f"unknown Mamba-2 ssm_cfg keys {unknown}")
    values = {**MAMBA2_DEFAULTS, **{k: v for k, v in ssm_cfg.items() if k in _MAPPED}}
    values["dt_limit"] = tuple(as_float(v) for v in values["dt_limit"])
    return MambaConfig(
        d_model=raw["d_model"],
        n_layer=raw["n_layer"],
        vocab_size=raw["vocab_size"],
        arch="mamba2",
        pad_vocab_size_multiple=raw.get("pad_vocab_size_multiple", 16),
        tie_embeddings=raw.get("tie_embeddings", True),
        rms_norm_eps=raw.get("norm_epsilon", 1e-5),
        **values,
    )
