"""The backbones: Mamba-1 and Mamba-2 (``MambaLM``) and Pythia (``PythiaLM``), all behind the contract in
``backbone.py``. Building and loading go through ``loading.py`` (``model_from_config`` for a ``conf/model`` node,
``build_model`` for random init, ``load_pretrained`` for checkpoints), which dispatches on ``arch``.

Names are loaded on first use: importing ``stateft.models.<module>`` (e.g. the torch-free ``backbone`` for start-up
checks) does not import torch or transformers.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_WHERE = {
    "Backbone": "backbone",
    "MambaBackbone": "backbone",
    "PeftBackbone": "backbone",
    "ModelConfig": "backbone",
    "DecodingCache": "backbone",
    "device_of": "backbone",
    "dtype_of": "backbone",
    "is_transformer": "backbone",
    "MambaConfig": "config",
    "MambaLM": "lm",
    "MambaCache": "cache",
    "count_parameters": "lm",
    "format_parameter_summary": "lm",
    "PythiaConfig": "pythia",
    "PythiaLM": "pythia",
    "KVCache": "pythia",
    "build_model": "loading",
    "load_pretrained": "loading",
    "model_from_config": "loading",
    "config_from_model_cfg": "loading",
    "save_pretrained": "loading",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(import_module(f"stateft.models.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'stateft.models' has no attribute {name!r}")


__all__ = sorted(_WHERE)
