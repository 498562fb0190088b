"""PEFT methods for Mamba. ``METHODS``, ``apply_method`` and ``get_method`` live in ``registry.py`` (which imports
torch and every method); the typed configs in ``configs.py`` are torch-free, so that importing
``stateft.methods.configs`` for start-up checks stays light. The registry's names are loaded on first use."""

from __future__ import annotations

from typing import Any

from stateft.methods.configs import MethodConfig, validate_method_cfg

_REGISTRY_NAMES = ("METHODS", "apply_method", "get_method")


def __getattr__(name: str) -> Any:
    if name in _REGISTRY_NAMES:
        from stateft.methods import registry

        return getattr(registry, name)
    raise AttributeError(f"module 'stateft.methods' has no attribute {name!r}")


__all__ = ["METHODS", "MethodConfig", "apply_method", "get_method", "validate_method_cfg"]
