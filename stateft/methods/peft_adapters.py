"""Adapters of a Transformer backbone in HF peft's own format, so that peft reads them too
(``PeftModel.from_pretrained(GPTNeoXForCausalLM.from_pretrained("EleutherAI/pythia-160m"), "<run>/adapter")``).

A directory with
- ``adapter_model.safetensors``: peft's adapter state dict (``get_peft_model_state_dict``: LoRA's ``...lora_A.weight``,
  prompt and prefix tuning's ``prompt_embeddings``), written with safetensors;
- ``adapter_config.json``: peft's config (``PeftConfig.save_pretrained``; ``base_model_name_or_path``: the weights'
  hub id or folder);
- ``stateft_adapter.json``: stateft's record of the run, as ``stateft.adapters``' config holds it for a Mamba:
  ``method`` (the resolved stateft method config), ``base_model`` (the model node ``eval.py`` rebuilds),
  ``architecture``, ``trainable`` (stateft's parameter names), ``stateft_version``, ``peft_version``, and ``sha256``
  of the two peft files (damage or an edit is refused on loading);
- whatever ``extra_files`` the app adds (``run_config.json``).
The write is atomic: everything goes into a temporary directory beside the target, which is then renamed into place.

Loading reads nothing as code (no pickle, no peft config trusted): the record is checked, the files' digests compared,
the method applied to the model from the record's stateft config (``stateft.methods.peft_methods``), the safetensors
header's names and shapes compared with what that method made, and only then the tensors copied in
(``set_peft_model_state_dict``).
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stateft import __version__
from stateft.errors import UserError

WEIGHTS_NAME = "adapter_model.safetensors"  # peft's names
CONFIG_NAME = "adapter_config.json"
RECORD_NAME = "stateft_adapter.json"
ARCH_FIELDS = ("arch", "d_model", "n_layer", "n_head", "padded_vocab_size")
RECORD_KEYS = ("method", "base_model", "architecture", "trainable", "stateft_version", "peft_version", "sha256")
MAX_RECORD_BYTES = 16 * 2**20
FLOAT_DTYPES = ("F32", "BF16", "F16")


def is_peft_adapter(directory: str | Path) -> bool:
    """Whether ``directory`` holds an adapter in peft's format written by stateft (its ``stateft_adapter.json``)."""
    return (Path(directory) / RECORD_NAME).exists() or (Path(directory) / RECORD_NAME).is_symlink()


def _architecture(config: Any) -> dict[str, Any]:
    return {k: getattr(config, k) for k in ARCH_FIELDS}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# -- saving -----------------------------------------------------------------------------------------------------------
def save_peft_adapter(
    directory: str | Path,
    model: Any,
    method_cfg: Any = None,
    trainable: list[str] | None = None,
    base_model: dict[str, Any] | None = None,
    extra_files: dict[str, Any] | None = None,
) -> Path:
    """Write the adapter of ``model`` (a ``PeftBackbone`` after ``apply_method``) to ``directory`` atomically; the
    arguments are ``stateft.adapters.save_adapter``'s."""
    import peft
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    recorded = getattr(model, "peft_config", None)
    if recorded is None or model.peft_type is None:
        raise ValueError("save_peft_adapter needs a model that apply_method() has prepared")
    if method_cfg is not None:
        from stateft.methods.configs import validate_method_cfg

        if validate_method_cfg(method_cfg).name != recorded["name"]:
            raise ValueError(f"save_peft_adapter: method {method_cfg!r} was not the one applied ({recorded['name']!r})")
    state = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in get_peft_model_state_dict(model.net).items()}
    peft_config = copy.copy(model.net.peft_config["default"])
    peft_config.inference_mode = True  # as peft's save_pretrained writes it
    peft_config.base_model_name_or_path = model.name_or_path
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; an adapter directory is an ordinary folder
    try:
        save_file(state, str(tmp / WEIGHTS_NAME), metadata={"format": "pt"})
        peft_config.save_pretrained(str(tmp))
        record = {
            "method": recorded,
            "base_model": dict(base_model or {"name": model.name_or_path}),
            "architecture": _architecture(model.config),
            "trainable": list(trainable if trainable is not None else model.peft_trainable),
            "stateft_version": __version__,
            "peft_version": peft.__version__,
            "sha256": {name: _sha256(tmp / name) for name in (WEIGHTS_NAME, CONFIG_NAME)},
        }
        (tmp / RECORD_NAME).write_text(json.dumps(record, indent=2, default=str))
        for name, payload in (extra_files or {}).items():
            (tmp / name).write_text(json.dumps(payload, indent=2, default=str))
        for f in tmp.iterdir():
            with open(f, "rb") as handle:
                os.fsync(handle.fileno())
        from stateft.adapters import swap_into_place

        swap_into_place(tmp, directory)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return directory


# -- reading --------------------------------------------------------------------------------------------------------
def _regular_file(path: Path, what: str, limit: int) -> None:
    if path.is_symlink() or not path.is_file():
        raise UserError(f"{path} is not a regular file ({what}); re-save the adapter")
    if path.stat().st_size > limit:
        raise UserError(f"{path} is larger than any {what} ({path.stat().st_size} bytes)")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def read_peft_adapter_config(directory: str | Path) -> dict[str, Any]:
    """The checked record (``stateft_adapter.json``) of a peft-format adapter; its keys include those of
    ``stateft.adapters.read_adapter_config`` (method, base_model, architecture, trainable, stateft_version)."""
    from stateft.adapters import check_method
    from stateft.methods.configs import METHOD_CONFIGS
    from stateft.models.backbone import TRANSFORMER_ARCHS

    path = Path(directory) / RECORD_NAME
    _regular_file(path, "adapter record", MAX_RECORD_BYTES)
    try:
        record = json.loads(path.read_text(encoding="utf-8"), parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError) as err:
        raise UserError(f"{path} is corrupt ({str(err)[:120]}); re-save the adapter") from None
    if not isinstance(record, dict) or sorted(record) != sorted(RECORD_KEYS):
        raise UserError(f"{path} must hold exactly {', '.join(RECORD_KEYS)}")
    kinds = {"method": dict, "base_model": dict, "architecture": dict, "trainable": list, "sha256": dict}
    for key, kind in kinds.items():
        if not isinstance(record[key], kind):
            raise UserError(f"{path}: {key} must be a JSON {kind.__name__}")
    name = record["method"].get("name")
    peft_methods = [m for m, cls in METHOD_CONFIGS.items() if cls.archs & set(TRANSFORMER_ARCHS)]
    if name not in peft_methods:
        raise UserError(f"{path}: method {str(name)[:60]!r} is not one of the peft methods {', '.join(peft_methods)}")
    check_method(record["method"], None, f"{path}: method")  # every option's type and range (stateft.adapters)
    if not all(isinstance(n, str) for n in record["trainable"]):
        raise UserError(f"{path}: trainable must be a list of parameter names")
    if sorted(record["sha256"]) != sorted((WEIGHTS_NAME, CONFIG_NAME)):
        raise UserError(f"{path}: sha256 must name {WEIGHTS_NAME} and {CONFIG_NAME}")
    return record


@dataclass
class VerifiedPeftAdapter:
    """A peft-format adapter whose record, digests and tensors passed the checks (``read_peft_adapter``)."""

    directory: Path
    meta: dict[str, Any]
    method: Any  # the typed stateft method config
    tensors: dict[str, Any]  # peft's state-dict names -> CPU tensors

    def apply(self, model: Any) -> list[str]:
        """Apply the method to ``model`` (a fresh base model of the checked architecture) and load the tensors."""
        from stateft.methods import apply_method

        _check_architecture(self.directory, self.meta, model.config)
        names = apply_method(self.method.name, model, copy.deepcopy(self.method))
        copy_into(model, self.tensors, self.directory)
        return names


def read_peft_adapter(directory: str | Path, model_config: Any) -> VerifiedPeftAdapter:
    """Read and check a peft-format adapter for a base model of ``model_config`` (a ``PythiaConfig``): the record,
    the architecture, the two files' digests, the safetensors header (float tensors only); then the tensors."""
    from safetensors import safe_open

    from stateft.methods.configs import validate_method_cfg

    directory = Path(directory)
    meta = read_peft_adapter_config(directory)
    _check_architecture(directory, meta, model_config)
    for name in (WEIGHTS_NAME, CONFIG_NAME):
        _regular_file(directory / name, "adapter file", 1 << 40)
        if _sha256(directory / name) != meta["sha256"][name]:
            raise UserError(
                f"adapter {directory}: {name} is not the file saved with it (damaged or edited); re-download or "
                "re-save the adapter"
            )
    tensors = {}
    try:
        with safe_open(str(directory / WEIGHTS_NAME), framework="pt") as handle:
            for key in handle.keys():
                dtype = handle.get_slice(key).get_dtype()
                if dtype not in FLOAT_DTYPES:
                    raise UserError(
                        f"adapter {directory}: tensor {key[:80]!r} is {dtype}; adapters hold F32, BF16, F16"
                    )
                tensors[key] = handle.get_tensor(key)
    except (OSError, ValueError, RuntimeError) as err:  # safetensors' errors for a malformed file
        raise UserError(f"adapter {directory}: {WEIGHTS_NAME} is corrupt ({str(err)[:120]}); re-save it") from None
    return VerifiedPeftAdapter(directory, meta, validate_method_cfg(copy.deepcopy(meta["method"])), tensors)


def _check_architecture(directory: Path, meta: dict[str, Any], model_config: Any) -> None:
    saved, ours = meta["architecture"], _architecture(model_config)
    diff = [f"{k}: adapter {saved.get(k)} vs model {ours[k]}" for k in ARCH_FIELDS if saved.get(k) != ours[k]]
    if diff:
        base = str(meta.get("base_model", {}).get("name"))[:80]
        raise UserError(f"adapter {directory} was trained on another base model ({base}): {'; '.join(diff)}")


def copy_into(model: Any, tensors: dict[str, Any], directory: Path | str) -> None:
    """Load peft-named ``tensors`` into ``model`` (its peft method applied): names and shapes must be exactly what
    the method made (peft's ``get_peft_model_state_dict``)."""
    from peft import get_peft_model_state_dict, set_peft_model_state_dict

    expected = {k: tuple(v.shape) for k, v in get_peft_model_state_dict(model.net).items()}
    got = {k: tuple(v.shape) for k, v in tensors.items()}
    if expected != got:
        missing, unexpected = sorted(set(expected) - set(got)), sorted(set(got) - set(expected))
        wrong = [f"{k} {got[k]} vs {expected[k]}" for k in sorted(set(got) & set(expected)) if got[k] != expected[k]]
        raise UserError(
            f"adapter {directory} does not fit this model's {model.peft_type}: missing {missing[:3]}, "
            f"unexpected {[u[:80] for u in unexpected[:3]]}, shapes {wrong[:3]}"
        )
    set_peft_model_state_dict(model.net, tensors)  # puts back the adapter name peft's format leaves out


def load_peft_adapter(directory: str | Path, model: Any) -> list[str]:
    """``read_peft_adapter`` + ``apply``: the method applied to ``model`` with the saved tensors; their names."""
    return read_peft_adapter(directory, model.config).apply(model)


def load_peft_weights(directory: str | Path, model: Any) -> None:
    """Copy a saved adapter's tensors into a model that already has its method applied (the app's best-epoch reload
    before testing)."""
    copy_into(model, read_peft_adapter(directory, model.config).tensors, directory)


__all__ = [
    "CONFIG_NAME",
    "RECORD_NAME",
    "WEIGHTS_NAME",
    "VerifiedPeftAdapter",
    "copy_into",
    "is_peft_adapter",
    "load_peft_adapter",
    "load_peft_weights",
    "read_peft_adapter",
    "read_peft_adapter_config",
    "save_peft_adapter",
]
