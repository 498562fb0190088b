"""Adapter checkpoints: only the trainable tensors, no pickle; loaded as data, checked before anything is allocated.

A directory with ``adapter_model.safetensors`` (exactly the trainable parameters, by name) and ``adapter_config.json``
(the resolved method config, the base model's config and name, the stateft version; the architecture numbers are
``stateft.models.config.ADAPTER_ARCH_FIELDS``). The same adapter is written as the same bytes (``safetensors_bytes``:
sorted header keys). Writes never leave a half-written adapter: the files are written and fsynced in a temporary
directory beside the target, the old adapter (if any) is renamed aside, the new one renamed into place, and only then
the old one removed; if the second rename fails, the old adapter is put back.

Digests (in the safetensors header's ``__metadata__``, written by ``save_adapter``):
- ``stateft_sha256``: sha256 over the tensors sorted by name, each as the line ``json.dumps([name, dtype, shape])``
  + ``"\\n"`` followed by its raw little-endian bytes (exactly the bytes the file stores for it);
- ``stateft_config_sha256``: sha256 of ``adapter_config.json``'s ``method``, ``architecture`` and ``trainable``
  as canonical JSON (sorted keys, no spaces), binding the config to the tensors.
They catch damage (flipped bytes, a truncated or partial copy, an edited config); they are not a signature: whoever
writes an adapter can write matching digests. An adapter without them (saved before they existed) loads with a
one-line warning.

Loading (``read_adapter`` for a model config, which needs no model; ``load_adapter`` = ``read_adapter`` + ``apply``)
reads everything as untrusted data, in this order, and refuses with one line at the first problem:
``adapter_config.json`` (a regular file, not a link, bounded size, strict JSON) and its fields' types; the
architecture against the model's; every method option's type and range against the model (``check_method``); the
tensors the method creates on this model, found by applying it to a copy on the meta device (no memory); the
safetensors header (a bounded size, only float dtypes, offsets that tile the file) against those names and shapes;
the digests, while the tensors are read; and only then the method is applied to the model and the tensors copied in.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from stateft import __version__
from stateft.atomic import swap_into_place
from stateft.errors import UserError
from stateft.foreign import (
    MiB,
    open_regular,
    parse_json,
    read_json,
    short,
    want_bool,
    want_dict,
    want_float,
    want_int,
    want_str,
)
from stateft.models.backbone import MAMBA_ARCHS
from stateft.models.config import ADAPTER_ARCH_FIELDS

WEIGHTS_NAME = "adapter_model.safetensors"
CONFIG_NAME = "adapter_config.json"
DIGEST_KEY = "stateft_sha256"
CONFIG_DIGEST_KEY = "stateft_config_sha256"
_CONFIG_KEYS = ("method", "base_model", "architecture", "trainable", "stateft_version")
MAX_CONFIG_BYTES = 64 * MiB  # an sdt selection of a 2.8b model is ~5 MB of JSON
MAX_HEADER_BYTES = 100 * MiB  # safetensors' own limit
MAX_TENSORS = 100_000
MAX_VIRTUAL_TOKENS = 4096  # prompt / prefix (the papers use 16-64)
MAX_EXTRA_STATES = 1024  # additional_scan's n (the papers: 8 and 32)
# safetensors dtype names of the tensors an adapter may hold (the method makes fp32, bf16-true training bf16)
FLOAT_DTYPES = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16}
_SAVE_DTYPES = {
    torch.float64: "F64", torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16", torch.int64: "I64",
    torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8", torch.bool: "BOOL",
}  # fmt: skip


def _arch_of(model: nn.Module) -> dict[str, Any]:
    return {k: getattr(model.config, k) for k in ADAPTER_ARCH_FIELDS}


def check_adapter(directory: str | Path, meta: dict[str, Any], model_config: Any) -> Any:
    """An adapter config (``read_adapter_config``) against the base model's config (a MambaConfig): the same
    architecture, and every method option in range for it. Returns the typed method config. Nothing is built."""
    saved_arch = meta["architecture"]
    arch = {k: getattr(model_config, k) for k in ADAPTER_ARCH_FIELDS}
    diff = [f"{k}: adapter {saved_arch[k]} vs model {arch[k]}" for k in ADAPTER_ARCH_FIELDS if saved_arch[k] != arch[k]]
    if diff:
        base = meta.get("base_model", {}).get("name")
        raise UserError(f"adapter {directory} was trained on another base model ({short(base)}): {'; '.join(diff)}")
    return check_method(meta["method"], model_config, f"adapter {directory}: method")


# -- digests ------------------------------------------------------------------------------------------------------
def _tensor_line(name: str, dtype: str, shape: list[int]) -> bytes:
    return (json.dumps([name, dtype, list(shape)]) + "\n").encode()


def tensors_digest(tensors: dict[str, torch.Tensor]) -> str:
    """``stateft_sha256`` of CPU tensors (see the module docstring)."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").contiguous()
        digest.update(_tensor_line(name, _SAVE_DTYPES[t.dtype], list(t.shape)))
        if t.numel():
            digest.update(t.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def config_digest(meta: dict[str, Any]) -> str:
    """``stateft_config_sha256`` of an adapter config as JSON gives it back."""
    part = {k: meta.get(k) for k in ("method", "architecture", "trainable")}
    return hashlib.sha256(json.dumps(part, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


# -- saving ---------------------------------------------------------------------------------------------------------
def safetensors_bytes(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> bytes:
    """A safetensors file of CPU ``tensors`` with ``metadata``, byte for byte the same for the same input: the header
    lists ``__metadata__`` with its keys sorted, then the tensors sorted by name, stored in that order (safetensors'
    own writer orders the metadata as its hash map does, which differs from one process to the next). The header is
    padded with spaces to a multiple of 8 bytes, as safetensors pads it."""
    header: dict[str, Any] = {"__metadata__": dict(sorted(metadata.items()))}
    chunks, offset = [], 0
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous()
        data = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        end = offset + len(data)
        header[name] = {"dtype": _SAVE_DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, end]}
        chunks.append(data)
        offset = end
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + b"".join(chunks)


def save_adapter(
    directory: str | Path,
    model: nn.Module,
    method_cfg: Any = None,
    trainable: list[str] | None = None,
    base_model: dict[str, Any] | None = None,
    extra_files: dict[str, Any] | None = None,
) -> Path:
    """Write the adapter of ``model`` (after ``apply_method``) to ``directory`` atomically, with its digests.

    method_cfg: optional; must name the method that was applied (the recorded, resolved config is what is written,
    so derived fields such as sdt's selection are kept). trainable: defaults to the names apply_method returned.
    base_model: the model's config node (name, name_or_path...), stored for ``eval.py``.
    extra_files: ``{file name: JSON-serialisable payload}`` written into the same directory in the same atomic swap
    (e.g. the run's config, which ``eval.py`` reads).
    """
    from stateft.models.backbone import is_transformer

    if is_transformer(model):  # a Transformer's adapter is peft's own format (stateft/methods/peft_adapters.py)
        from stateft.methods.peft_adapters import save_peft_adapter

        return save_peft_adapter(directory, model, method_cfg, trainable, base_model, extra_files)
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
    config_text = json.dumps(meta, indent=2, default=str)
    metadata = {
        "format": "pt",
        "method": recorded["name"],
        DIGEST_KEY: tensors_digest(tensors),
        CONFIG_DIGEST_KEY: config_digest(json.loads(config_text)),  # as a reader will parse it back
    }
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; an adapter directory is an ordinary folder
    try:
        (tmp / WEIGHTS_NAME).write_bytes(safetensors_bytes(tensors, metadata))
        (tmp / CONFIG_NAME).write_text(config_text)
        for name, payload in (extra_files or {}).items():
            (tmp / name).write_text(json.dumps(payload, indent=2, default=str))
        for f in tmp.iterdir():
            with open(f, "rb") as handle:
                os.fsync(handle.fileno())
        swap_into_place(tmp, directory)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return directory


# -- the config -----------------------------------------------------------------------------------------------------
def read_adapter_config(directory: str | Path) -> dict[str, Any]:
    """The parsed and type-checked ``adapter_config.json``; UserError (one line) if missing, corrupt or hostile.

    Checked here (no model needed): the file (regular, not a link, at most MAX_CONFIG_BYTES, strict JSON), the
    top-level keys, the architecture record (types), the trainable names, and every method option's type and
    model-independent range. ``base_model`` is only checked to be an object: ``stateft.app.run_config`` validates it
    before a model is built from it.
    """
    from stateft.methods.peft_adapters import is_peft_adapter, read_peft_adapter_config

    if is_peft_adapter(directory):
        return read_peft_adapter_config(directory)
    path = Path(directory) / CONFIG_NAME
    if not path.exists() and not path.is_symlink():
        raise UserError(
            f"{directory} is not an adapter directory (no {CONFIG_NAME}); pass the folder save_adapter wrote"
        )
    meta = read_json(path, "adapter config", MAX_CONFIG_BYTES)
    where = str(path)
    if not isinstance(meta, dict) or not isinstance(meta.get("method"), dict) or "name" not in meta["method"]:
        raise UserError(f"{path} is corrupt (no method name); re-save the adapter")
    unknown = sorted(set(meta) - set(_CONFIG_KEYS))
    if unknown:
        raise UserError(f"{where}: unknown key {unknown[0][:60]!r}; an adapter config holds {', '.join(_CONFIG_KEYS)}")
    check_method(meta["method"], None, f"{where}: method")
    want_dict(meta.get("base_model", {}), f"{where}: base_model")
    want_str(meta.get("stateft_version", ""), f"{where}: stateft_version")
    _check_architecture(meta.get("architecture"), f"{where}: architecture")
    trainable = meta.get("trainable")
    if trainable is not None:
        if not isinstance(trainable, list) or len(trainable) > MAX_TENSORS:
            raise UserError(f"{where}: trainable must be a list of parameter names, got {short(trainable)}")
        for name in trainable:
            want_str(name, f"{where}: trainable entry")
    return meta


def _check_architecture(arch: Any, where: str) -> None:
    arch = want_dict(arch, where)
    if set(arch) != set(ADAPTER_ARCH_FIELDS):
        fields = ", ".join(ADAPTER_ARCH_FIELDS)
        raise UserError(f"{where} must hold exactly {fields}; got {', '.join(sorted(arch))[:200]}")
    want_str(arch["arch"], f"{where}.arch", choices=MAMBA_ARCHS)
    for key in ADAPTER_ARCH_FIELDS[1:]:
        want_int(arch[key], f"{where}.{key}", 1, 1 << 30)


# -- method options: types and ranges ----------------------------------------------------------------------------
Dims = tuple[int, int, int]  # (E = d_inner, N = d_state, n_layer) of the base model


def _unit(value: Any, where: str, dims: Dims | None) -> float:
    want_float(value, where, 0.0, 1.0)
    if value >= 1.0:
        raise UserError(f"{where}={value} must lie in [0, 1)")
    return value


def _rate(value: Any, where: str, dims: Dims | None) -> Any:
    return want_float(value, where, 0.0, 1e6, nullable=True, open_lo=True)


def _scale(value: Any, where: str, dims: Dims | None, nullable: bool = False) -> Any:
    return want_float(value, where, 0.0, 1e6, nullable=nullable, open_lo=True)


def _rank(value: Any, where: str, dims: Dims | None, nullable: bool, limit: Callable[[Dims], int], what: str) -> Any:
    """An integer rank of at least 1 and at most the dimension it factorises."""
    want_int(value, where, 1, 1 << 30, nullable=nullable)
    if value is not None and dims is not None and value > limit(dims):
        raise UserError(f"{where}={value} is larger than the {what} it factorises ({limit(dims)} on this model)")
    return value


def _targets(value: Any, where: str, dims: Dims | None) -> Any:
    if value is None:
        return None
    if not isinstance(value, list) or not 1 <= len(value) <= 16:
        raise UserError(f"{where} must be null or a list of 1 to 16 mixer linears, got {short(value)}")
    for target in value:
        want_str(target, f"{where} entry")
        if len(target) > 64:
            raise UserError(f"{where} entry {target[:64]!r}... is not a mixer linear")
    return value


def _selection(value: Any, where: str, dims: Dims | None) -> Any:
    """Per layer [kept channels, kept states per channel], indices in range (counts and distinctness:
    ``stateft.methods.selective_dims._check_selection`` when the method is applied)."""
    if value is None:
        return None
    if not isinstance(value, list) or len(value) > (dims[2] if dims else 1 << 12):
        raise UserError(f"{where} must be a list with one entry per layer, got {short(value)}")
    E, N = (dims[0], dims[1]) if dims else (1 << 30, 1 << 30)
    for layer, entry in enumerate(value):
        ok = isinstance(entry, list) and len(entry) == 2 and all(isinstance(x, list) for x in entry)
        ok = ok and all(isinstance(c, int) and not isinstance(c, bool) and 0 <= c < E for c in entry[0])
        ok = ok and all(isinstance(s, list) for s in entry[1])
        ok = ok and all(isinstance(n, int) and not isinstance(n, bool) and 0 <= n < N for s in entry[1] for n in s)
        if not ok:
            raise UserError(f"{where}[{layer}] is not [channels < {E}, [states < {N}] per channel]")
    return value


def _parts(value: Any, where: str, dims: Dims | None) -> Any:
    """compose's list of method names (each one's options are checked under its own key)."""
    if not isinstance(value, list) or not 1 <= len(value) <= 16:
        raise UserError(f"{where} must be a list of 1 to 16 method names, got {short(value)}")
    for part in value:
        want_str(part, f"{where} entry")
    return value


def _part(value: Any, where: str, dims: Dims | None) -> Any:
    """One part's options in a composition: null (not a part) or that method's own config, checked as such."""
    if isinstance(value, dict) and value.get("name") == "compose":
        raise UserError(f"{where}: a compose cannot hold a compose")
    return None if value is None else _check_options(value, where, dims)


def _learnable(value: Any, where: str, dims: Dims | None) -> Any:
    """partial's list of parameter kinds."""
    from stateft.methods.configs import PARTIAL_PARAMS

    if not isinstance(value, list) or not 1 <= len(value) <= len(PARTIAL_PARAMS):
        raise UserError(f"{where} must be a list of {', '.join(PARTIAL_PARAMS)}, got {short(value)}")
    for kind in value:
        want_str(kind, f"{where} entry", choices=PARTIAL_PARAMS)
    return value


def _method_checks() -> dict[str, Callable[[Any, str, Dims | None], Any]]:
    """One check per option name of ``stateft.methods.configs`` (a test asserts every option has one)."""
    from stateft.methods.configs import ADDITIONAL_SCAN_A_INITS, COMPOSABLE, PREFIX_POSITIONS

    return {
        "lr": _rate,
        "warmup_lr": _rate,
        "r": lambda v, w, d: _rank(v, w, d, True, lambda dims: dims[0], "mixer width d_inner"),
        "lora_r": lambda v, w, d: _rank(v, w, d, False, lambda dims: dims[0], "mixer width d_inner"),
        "rank": lambda v, w, d: _rank(v, w, d, True, lambda dims: min(dims[0], dims[1]), "state offset (E, N)"),
        "alpha": lambda v, w, d: _scale(v, w, d, nullable=True),
        "lora_alpha": _scale,
        "dropout": _unit,
        "lora_dropout": _unit,
        "freeze_channels": _unit,
        "freeze_states": _unit,
        "target_modules": _targets,
        "num_virtual_tokens": lambda v, w, d: want_int(v, w, 1, MAX_VIRTUAL_TOKENS),
        "init": lambda v, w, d: want_str(v, w, choices=("vocab", "normal")),
        "n": lambda v, w, d: want_int(v, w, 1, MAX_EXTRA_STATES, nullable=True),
        "A_init": lambda v, w, d: want_str(v, w, nullable=True, choices=ADDITIONAL_SCAN_A_INITS),
        "copy_column": lambda v, w, d: want_int(v, w, 0, (d[1] - 1) if d else 1 << 30),
        "num_warmup_it": lambda v, w, d: want_int(v, w, 0, 1 << 40),
        "warmup_schedule_epochs": lambda v, w, d: want_int(v, w, 1, 1 << 20),
        "selection": _selection,
        "conv_state": lambda v, w, d: want_bool(v, w),
        "reparam": lambda v, w, d: want_bool(v, w),
        "position": lambda v, w, d: want_str(v, w, choices=PREFIX_POSITIONS),
        "learnable": _learnable,
        "parts": _parts,
        **{part: _part for part in COMPOSABLE},
    }


def check_method(raw: Any, model_config: Any, where: str) -> Any:
    """The typed method config of an adapter (``stateft.methods.configs``), every option type- and range-checked
    against ``model_config`` (a MambaConfig; None: the model-independent checks only). UserError otherwise."""
    from stateft.methods.configs import validate_method_cfg

    dims = None
    if model_config is not None:
        dims = (model_config.d_inner, model_config.d_state, model_config.n_layer)
    raw = _check_options(raw, where, dims)
    return validate_method_cfg(copy.deepcopy(raw))


def _check_options(raw: Any, where: str, dims: Dims | None) -> dict[str, Any]:
    """Every option of a method config (a dict) type- and range-checked; a composition's parts each in turn."""
    from stateft.methods.configs import METHOD_CONFIGS

    raw = want_dict(raw, where)
    name = raw.get("name")
    if not isinstance(name, str) or name not in METHOD_CONFIGS:
        choices = ", ".join(METHOD_CONFIGS)
        raise UserError(f"{where}: unknown method {short(name)}; an adapter's method is one of: {choices}")
    fields = [f.name for f in dataclasses.fields(METHOD_CONFIGS[name])]
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise UserError(f"{where}: method {name} has no option {unknown[0][:60]!r}; valid: {', '.join(fields)}")
    checks = _method_checks()
    for key, value in raw.items():
        if key != "name":
            checks[key](value, f"{where}.{key}", dims)
    if name in ("sdt", "sdlora") and raw.get("selection") is None:
        raise UserError(f"{where}: {name} adapter without its stored selection (the dimensions it tuned)")
    return raw


# -- the safetensors file -----------------------------------------------------------------------------------------
def _read_header(handle: Any, size: int, where: str) -> tuple[dict[str, dict[str, Any]], dict[str, str], int]:
    """(entries, metadata, start of the data) of a safetensors file, every entry checked: a float dtype, a shape,
    offsets whose span is the tensor's size, and spans that tile the data exactly."""
    if size < 8:
        raise UserError(f"{where} is corrupt (not a safetensors file: {size} bytes); re-save the adapter")
    n = int.from_bytes(handle.read(8), "little")
    if n > min(size - 8, MAX_HEADER_BYTES):
        raise UserError(f"{where} is corrupt (not a safetensors file: a header of {n} bytes in {size}); re-save it")
    header = parse_json(handle.read(n), where)
    header = want_dict(header, f"{where} header")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise UserError(f"{where} is corrupt (its __metadata__ is not a map of strings)")
    if len(header) > MAX_TENSORS:
        raise UserError(f"{where} holds {len(header)} tensors; an adapter holds at most {MAX_TENSORS}")
    entries, spans = {}, []
    for name, info in header.items():
        info = want_dict(info, f"{where}: tensor {name[:80]!r}")
        if set(info) != {"dtype", "shape", "data_offsets"}:
            raise UserError(f"{where} is corrupt (tensor {name[:80]!r} is not dtype, shape, data_offsets)")
        dtype = info["dtype"]
        if dtype not in FLOAT_DTYPES:
            raise UserError(f"{where}: tensor {name[:80]!r} has dtype {short(dtype)}; adapters hold F32, BF16 or F16")
        shape, offsets = info["shape"], info["data_offsets"]
        if not isinstance(shape, list) or len(shape) > 8:
            raise UserError(f"{where} is corrupt (tensor {name[:80]!r} has shape {short(shape)})")
        for dim in shape:
            want_int(dim, f"{where}: a dimension of {name[:80]!r}", 0, 1 << 40)
        if not isinstance(offsets, list) or len(offsets) != 2:
            raise UserError(f"{where} is corrupt (tensor {name[:80]!r} has offsets {short(offsets)})")
        begin = want_int(offsets[0], f"{where}: offset of {name[:80]!r}", 0, 1 << 62)
        end = want_int(offsets[1], f"{where}: offset of {name[:80]!r}", begin, 1 << 62)
        if end > size - 8 - n:
            raise UserError(f"{where} is corrupt (tensor {name[:80]!r} lies past the end of the file: truncated?)")
        if end - begin != math.prod(shape) * FLOAT_DTYPES[dtype].itemsize:
            raise UserError(f"{where} is corrupt (tensor {name[:80]!r}: its bytes do not fit its shape {shape})")
        entries[name] = {"dtype": dtype, "shape": shape, "begin": begin, "end": end}
        spans.append((begin, end, name))
    cursor = 0
    for begin, end, name in sorted(spans):
        if begin != cursor:
            raise UserError(f"{where} is corrupt (tensor {name[:80]!r} overlaps another or leaves a gap)")
        cursor = end
    if cursor != size - 8 - n:
        raise UserError(
            f"{where} is corrupt (the tensors take {cursor} bytes, the file holds {size - 8 - n}: truncated or "
            "padded); re-download or re-save the adapter"
        )
    return entries, metadata, 8 + n


def _read_tensors(handle: Any, entries: dict[str, dict[str, Any]], start: int, where: str) -> tuple[dict, str]:
    """The tensors (CPU, sorted by name) and their ``stateft_sha256``, read straight from the file."""
    digest, tensors = hashlib.sha256(), {}
    for name in sorted(entries):
        e = entries[name]
        buf = bytearray(e["end"] - e["begin"])
        handle.seek(start + e["begin"])
        got = handle.readinto(buf) if buf else 0
        if got != len(buf):
            raise UserError(f"{where} is corrupt (shorter than its header says); re-download or re-save it")
        digest.update(_tensor_line(name, e["dtype"], e["shape"]))
        digest.update(buf)
        dtype = FLOAT_DTYPES[e["dtype"]]
        if sys.byteorder != "little":
            raise UserError("adapters are stored little-endian; this machine is not")
        t = torch.frombuffer(buf, dtype=dtype) if buf else torch.empty(0, dtype=dtype)
        tensors[name] = t.reshape(e["shape"])
    return tensors, digest.hexdigest()


# -- loading --------------------------------------------------------------------------------------------------------
def expected_tensors(model_config: Any, method_cfg: Any) -> dict[str, tuple[int, ...]]:
    """``{name: shape}`` of the trainable tensors the method creates on a model of ``model_config``: the method
    applied to a model built on the meta device, so nothing is allocated whatever the options say."""
    from stateft.methods import apply_method
    from stateft.models.loading import build_model

    with torch.random.fork_rng(devices=[]), torch.device("meta"):
        shadow = build_model(model_config, device="meta")
        try:
            names = apply_method(method_cfg.name, shadow, copy.deepcopy(method_cfg))
        except NotImplementedError as err:  # e.g. prefix on Mamba-2: the adapter is not for this model
            raise UserError(f"method {method_cfg.name} on this model: {err}") from None
    params = dict(shadow.named_parameters())
    return {name: tuple(params[name].shape) for name in names}


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


@dataclass
class VerifiedAdapter:
    """An adapter whose every file passed the checks (``read_adapter``): its config, typed method and tensors."""

    directory: Path
    meta: dict[str, Any]
    method: Any  # the typed method config (stateft.methods.configs)
    tensors: dict[str, torch.Tensor]
    model_config: Any

    def apply(self, model: nn.Module) -> list[str]:
        """Apply the method to ``model`` (a fresh base model of the checked architecture) and copy the tensors in."""
        from stateft.methods import apply_method

        check_adapter(self.directory, self.meta, model.config)
        names = apply_method(self.method.name, model, copy.deepcopy(self.method))
        params = dict(model.named_parameters())
        if sorted(names) != sorted(self.tensors) or any(params[n].shape != self.tensors[n].shape for n in names):
            raise UserError(f"adapter {self.directory} was checked against another model than this one")
        with torch.no_grad():
            for name in names:
                params[name].copy_(self.tensors[name])
        return names


def read_adapter(directory: str | Path, model_config: Any) -> VerifiedAdapter:
    """Read and check an adapter for a base model of ``model_config`` (a MambaConfig) without building it: the
    config, the method's options, the tensors the method makes (meta device), the safetensors header, the digests
    (module docstring). Any problem is one UserError; nothing is allocated beyond the adapter's own tensors."""
    from stateft.methods.peft_adapters import is_peft_adapter, read_peft_adapter

    if is_peft_adapter(directory):
        return read_peft_adapter(directory, model_config)
    directory = Path(directory)
    meta = read_adapter_config(directory)
    method = check_adapter(directory, meta, model_config)
    try:
        expected = expected_tensors(model_config, method)
    except UserError as err:
        raise UserError(f"adapter {directory}: {err}") from None
    if meta.get("trainable") is not None and sorted(meta["trainable"]) != sorted(expected):
        raise UserError(
            f"adapter {directory} does not match method {method.name}: its config lists other trainable tensors "
            "than the method makes"
        )
    weights = directory / WEIGHTS_NAME
    if not weights.exists() and not weights.is_symlink():
        raise UserError(f"{directory} has no {WEIGHTS_NAME}")
    most = 4 * sum(math.prod(s) for s in expected.values())  # fp32; bf16/f16 files are smaller
    handle, size = open_regular(weights, "adapter weights", most + 8 + MAX_HEADER_BYTES)
    with handle:
        entries, metadata, start = _read_header(handle, size, str(weights))
        missing, unexpected = sorted(set(expected) - set(entries)), sorted(set(entries) - set(expected))
        if missing or unexpected:
            raise UserError(
                f"adapter {directory} does not match method {method.name}: "
                f"missing {missing[:3]}, unexpected {[u[:80] for u in unexpected[:3]]}"
            )
        for name, shape in expected.items():
            if tuple(entries[name]["shape"]) != shape:
                raise UserError(
                    f"adapter {directory}: {name} has shape {tuple(entries[name]['shape'])}, the model expects {shape}"
                )
        tensors, digest = _read_tensors(handle, entries, start, str(weights))
    _check_digests(directory, meta, metadata, digest)
    return VerifiedAdapter(directory, meta, method, tensors, model_config)


def load_adapter(directory: str | Path, model: nn.Module) -> list[str]:
    """Apply the saved method to ``model`` (a fresh base model) and load the adapter tensors. Returns their names.

    Everything is checked before anything is allocated or copied (``read_adapter``); any problem is one UserError.
    """
    return read_adapter(directory, model.config).apply(model)


def _check_digests(directory: Path, meta: dict[str, Any], metadata: dict[str, str], digest: str) -> None:
    stored, stored_config = metadata.get(DIGEST_KEY), metadata.get(CONFIG_DIGEST_KEY)
    if stored is None and stored_config is None:
        _warn(f"adapter {directory} has no digest (saved before stateft wrote them): loaded unchecked; re-save it")
        return
    if stored != digest:
        raise UserError(
            f"adapter {directory}: the tensors do not match the digest written when it was saved (damaged or edited "
            f"file); re-download or re-save the adapter"
        )
    if stored_config != config_digest(meta):
        raise UserError(
            f"adapter {directory}: {CONFIG_NAME} is not the config the tensors were saved with (damaged or edited: "
            "method, architecture or trainable changed); re-download or re-save the adapter"
        )


__all__ = [
    "CONFIG_NAME",
    "WEIGHTS_NAME",
    "check_adapter",
    "check_method",
    "config_digest",
    "expected_tensors",
    "VerifiedAdapter",
    "load_adapter",
    "read_adapter",
    "read_adapter_config",
    "save_adapter",
    "tensors_digest",
]
