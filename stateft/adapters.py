"""Adapter checkpoints: only the trainable tensors, no pickle.

A directory with ``adapter_model.safetensors`` (exactly the trainable parameters, by name) and ``adapter_config.json``
(the resolved method config, the base model's config and name, the stateft version). Writes never leave a
half-written adapter: the files are written and fsynced in a temporary directory beside the target, the old adapter
(if any) is renamed aside, the new one renamed into place, and only then the old one removed; if the second rename
fails, the old adapter is put back.
Loading re-applies the method to a fresh base model and refuses any mismatch (other architecture or size, missing
or unexpected tensors, wrong shapes, a corrupt file).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from stateft import __version__
from stateft.errors import UserError

WEIGHTS_NAME = "adapter_model.safetensors"
CONFIG_NAME = "adapter_config.json"
_ARCH_FIELDS = ("arch", "d_model", "n_layer", "d_state", "d_conv", "expand", "padded_vocab_size")


def _arch_of(model: nn.Module) -> dict[str, Any]:
    return {k: getattr(model.config, k) for k in _ARCH_FIELDS}


def save_adapter(
    directory: str | Path,
    model: nn.Module,
    method_cfg: Any = None,
    trainable: list[str] | None = None,
    base_model: dict[str, Any] | None = None,
    extra_files: dict[str, Any] | None = None,
) -> Path:
    """Write the adapter of ``model`` (after ``apply_method``) to ``directory`` atomically.

    method_cfg: optional; must name the method that was applied (the recorded, resolved config is what is written,
    so derived fields such as sdt's selection are kept). trainable: defaults to the names apply_method returned.
    base_model: the model's config node (name, name_or_path...), stored for ``eval.py``.
    extra_files: ``{file name: JSON-serialisable payload}`` written into the same directory in the same atomic swap
    (e.g. the run's config, which ``eval.py`` reads).
    """
    from safetensors.torch import save_file

    recorded = getattr(model, "peft_config", None)
    if recorded is None:
        raise ValueError("save_adapter needs a model that apply_method() has prepared")
    if method_cfg is not None:
        from stateft.methods.configs import validate_method_cfg

        name = validate_method_cfg(method_cfg).name
        if name != recorded["name"]:
            raise ValueError(f"save_adapter: method {name!r} was not the one applied ({recorded['name']!r})")
    names = list(trainable if trainable is not None else model.peft_trainable)
    params = dict(model.named_parameters())
    tensors = {name: params[name].detach().to("cpu", copy=True).contiguous() for name in names}
    meta = {
        "method": recorded,
        "base_model": dict(base_model or {"name": getattr(model, "name_or_path", None)}),
        "architecture": _arch_of(model),
        "trainable": names,
        "stateft_version": __version__,
    }
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; an adapter directory is an ordinary folder
    try:
        save_file(tensors, str(tmp / WEIGHTS_NAME), metadata={"format": "pt", "method": recorded["name"]})
        (tmp / CONFIG_NAME).write_text(json.dumps(meta, indent=2, default=str))
        for name, payload in (extra_files or {}).items():
            (tmp / name).write_text(json.dumps(payload, indent=2, default=str))
        for f in tmp.iterdir():
            with open(f, "rb") as handle:
                os.fsync(handle.fileno())
        old = None
        if directory.exists():
            old = directory.with_name(f".{directory.name}.old-{os.getpid()}")
            os.replace(directory, old)
        try:
            os.replace(tmp, directory)
        except OSError:
            if old is not None:
                os.replace(old, directory)
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return directory


def read_adapter_config(directory: str | Path) -> dict[str, Any]:
    """The parsed ``adapter_config.json``; UserError if missing or corrupt."""
    path = Path(directory) / CONFIG_NAME
    if not path.exists():
        raise UserError(
            f"{directory} is not an adapter directory (no {CONFIG_NAME}); pass the folder save_adapter wrote"
        )
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"{path} is corrupt ({type(err).__name__}); re-save the adapter") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("method"), dict) or "name" not in meta["method"]:
        raise UserError(f"{path} is corrupt (no method name); re-save the adapter")
    return meta


def load_adapter(directory: str | Path, model: nn.Module) -> list[str]:
    """Apply the saved method to ``model`` (a fresh base model) and load the adapter tensors. Returns their names."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from stateft.methods import apply_method

    directory = Path(directory)
    meta = read_adapter_config(directory)
    saved_arch, arch = meta.get("architecture", {}), _arch_of(model)
    diff = [
        f"{k}: adapter {saved_arch.get(k)} vs model {arch[k]}" for k in _ARCH_FIELDS if saved_arch.get(k) != arch[k]
    ]
    if diff:
        base = meta.get("base_model", {}).get("name")
        raise UserError(f"adapter {directory} was trained on another base model ({base}): {'; '.join(diff)}")
    weights = directory / WEIGHTS_NAME
    if not weights.exists():
        raise UserError(f"{directory} has no {WEIGHTS_NAME}")
    try:
        tensors = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as err:
        raise UserError(f"{weights} is corrupt ({str(err).splitlines()[0][:120]}); re-save the adapter") from None
    names = apply_method(meta["method"]["name"], model, meta["method"])
    missing, unexpected = sorted(set(names) - set(tensors)), sorted(set(tensors) - set(names))
    if missing or unexpected:
        raise UserError(
            f"adapter {directory} does not match method {meta['method']['name']}: "
            f"missing {missing[:3]}, unexpected {unexpected[:3]}"
        )
    params = dict(model.named_parameters())
    for name in names:
        if tuple(tensors[name].shape) != tuple(params[name].shape):
            raise UserError(
                f"adapter {directory}: {name} has shape {tuple(tensors[name].shape)}, "
                f"the model expects {tuple(params[name].shape)}"
            )
    with torch.no_grad():
        for name in names:
            params[name].copy_(tensors[name])
    return names
