"""Build a Vim from its model config, and load the released checkpoints (hustvl/Vim) in their own key layout.

The release (``vim_t_midclstok_76p1acc.pth``, ``vim_s_midclstok_80p5acc.pth``) is a torch pickle holding the
state dict under ``"model"`` (DeiT's training script also stores its optimizer and arguments beside it). It is read
with ``torch.load(weights_only=True)`` (tensors and plain containers only; argparse's Namespace, the one other class
such a file holds, is allowed as data), or from a ``.safetensors`` file holding the same keys:

    patch_embed.proj.{weight,bias}, cls_token, pos_embed, norm_f.weight, head.{weight,bias},
    layers.{i}.norm.weight, layers.{i}.mixer.{in_proj,out_proj}.weight,
    layers.{i}.mixer.{conv1d,x_proj,dt_proj}.*, A_log, D          (forward direction)
    layers.{i}.mixer.{conv1d_b,x_proj_b,dt_proj_b}.*, A_b_log, D_b (backward direction)

Our names put each direction's tensors under ``mixer.forward_scan`` / ``mixer.backward_scan`` (`stateft.vision.vim`);
``to_ours`` renames. The architecture comes from the model config (the release has no config file) and every
tensor's shape is checked against it. The ImageNet head is kept only when the config asks for its 1000 classes;
otherwise the task head starts at zero (`VisionMamba.reset_head`).
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

import torch

from stateft.errors import UserError
from stateft.models.config import config_from_node
from stateft.models.loading import cast_model, random_init
from stateft.ops.backend import Backend
from stateft.vision.config import VimConfig
from stateft.vision.vim import VisionMamba

# hub ids of the checkpoints the configs in conf/model/ name
KNOWN_MODELS: dict[str, str] = {
    "vim-tiny": "hustvl/Vim-tiny-midclstok",
    "vim-small": "hustvl/Vim-small-midclstok",
}
_WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")
_DIRECTION = re.compile(r"^(layers\.\d+\.mixer\.)(conv1d|x_proj|dt_proj|A_log|D)(_b)?(\.|$)")
_BACKWARD_PARAM = {"A_b_log": "A_log", "D_b": "D"}
_NO_DECAY = ("cls_token", "pos_embed", "norm_f.weight")


def to_ours(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The released key layout -> ours (each direction's tensors under ``forward_scan`` / ``backward_scan``)."""
    out = {}
    for key, value in state.items():
        for theirs, ours in _BACKWARD_PARAM.items():  # A_b_log -> A_log_b: one pattern for both directions
            key = re.sub(rf"(\.mixer\.){theirs}$", rf"\g<1>{ours}_b", key)
        match = _DIRECTION.match(key)
        if match:
            prefix, name, backward, rest = match.groups()
            scan = "backward_scan" if backward else "forward_scan"
            key = f"{prefix}{scan}.{name}{rest}{key[match.end() :]}"
        out[key] = value
    return out


def from_ours(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our key layout -> the released one (to write a checkpoint as the release lays it out)."""
    out = {}
    for key, value in state.items():
        match = re.match(r"^(layers\.\d+\.mixer\.)(forward|backward)_scan\.(\w+)(.*)$", key)
        if match:
            prefix, direction, name, rest = match.groups()
            if direction == "backward":
                name = {"A_log": "A_b_log", "D": "D_b"}.get(name, f"{name}_b")
            key = f"{prefix}{name}{rest}"
        out[key] = value
    return out


def build_vim(
    config: VimConfig, *, device: str | torch.device = "cpu", backend: Backend | str = "auto", seed: int | None = 0,
    dtype: torch.dtype = torch.float32,
) -> VisionMamba:  # fmt: skip
    """A randomly initialised Vim (``device="meta"``: shapes only, for parameter counts and dry runs)."""
    return random_init(
        VisionMamba, config, device=device, backend=backend, seed=seed, cast=lambda m: cast_vim(m, dtype)
    )


def cast_vim(model: VisionMamba, dtype: torch.dtype) -> VisionMamba:
    """`stateft.models.loading.cast_model` (``dtype``, A_log and D in fp32 and out of weight decay), and besides them
    the biases, the norms, the class token and the position embedding out of weight decay (MambaPEFT's paramwise
    settings). Loading with ``assign=True`` replaces the Parameter objects, so the tags are set here."""
    cast_model(model, dtype)
    for name, p in model.named_parameters():
        if name.split(".")[-1] == "bias" or name in _NO_DECAY or name.endswith("norm.weight"):
            p._no_weight_decay = True
    return model


def resolve_weights(name_or_path: str) -> Path:
    """The checkpoint file: a file, the one weights file of a local folder, or that of a hub snapshot."""
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        return _weights_in(path)
    if name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1:
        raise UserError(f"Vim checkpoint {name_or_path} does not exist (pass a folder or a .pth/.safetensors file)")
    repo_id = KNOWN_MODELS.get(name_or_path, name_or_path)
    if "/" not in repo_id:
        raise UserError(f"unknown Vim {name_or_path!r}; known: {', '.join(KNOWN_MODELS)} (or a hub id, or a folder)")
    from huggingface_hub import snapshot_download

    try:
        folder = snapshot_download(repo_id, allow_patterns=[f"*{s}" for s in _WEIGHT_SUFFIXES])
    except Exception as err:  # offline, unreachable, missing repo: all end the same way for the user
        reason = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
        raise UserError(
            f"could not fetch {repo_id} from the Hugging Face hub ({reason}); download its .pth elsewhere and pass "
            "its folder: model.name_or_path=/path/to/folder"
        ) from None
    return _weights_in(Path(folder))


def _weights_in(folder: Path) -> Path:
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in _WEIGHT_SUFFIXES)
    safetensors = [p for p in files if p.suffix == ".safetensors"]
    files = safetensors or files  # the safetensors copy when both are there
    if len(files) != 1:
        found = ", ".join(p.name for p in files) or "none"
        raise UserError(f"{folder} should hold one Vim checkpoint (.safetensors or .pth), found {found}")
    return files[0]


def read_state(path: Path) -> dict[str, torch.Tensor]:
    """The state dict of a released checkpoint, read as data (module docstring)."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # not a tensor pickle: weights_only refuses to run anything
        raise UserError(f"cannot read {path} as a tensor checkpoint ({type(err).__name__}); re-download it") from None
    if isinstance(raw, dict) and isinstance(raw.get("model"), dict):
        raw = raw["model"]
    if not isinstance(raw, dict) or not all(isinstance(v, torch.Tensor) for v in raw.values()):
        raise UserError(f"{path} is not a Vim state dict (a map of tensors, or one under 'model')")
    return {k.removeprefix("module."): v for k, v in raw.items()}


def load_vim(
    name_or_path: str, config: VimConfig, *, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu",
    backend: Backend | str = "auto",
) -> VisionMamba:  # fmt: skip
    """A released Vim (or one in its layout) for ``config``: a local folder or file, a known name, or a hub id."""
    path = resolve_weights(name_or_path)
    state = to_ours(read_state(path))
    model = build_vim(config, device="meta", backend=backend)
    want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    keep_head = tuple(state.get("head.weight", torch.empty(0)).shape) == want["head.weight"]
    if not keep_head:  # another task's classes: a fresh head
        state = {k: v for k, v in state.items() if not k.startswith("head.")}
        want = {k: v for k, v in want.items() if not k.startswith("head.")}
    got = {k: tuple(v.shape) for k, v in state.items()}
    problems = []
    wrong = [f"{k} {got[k]} vs {want[k]}" for k in sorted(set(want) & set(got)) if got[k] != want[k]]
    if wrong:
        problems.append(f"{len(wrong)} tensors have shapes that do not match the model config, e.g. {wrong[0]}")
    missing, unexpected = sorted(set(want) - set(got)), sorted(set(got) - set(want))
    if missing:
        problems.append(f"{len(missing)} tensors missing, e.g. {missing[0]}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected tensors, e.g. {unexpected[0]}")
    if problems:
        raise UserError(f"Vim checkpoint {path} does not fit the model config: {'; '.join(problems)}")
    model.load_state_dict(state, strict=False, assign=True)
    if not keep_head:
        model.head.to_empty(device="cpu")
        model.reset_head()
    cast_vim(model, dtype).to(device)
    model.name_or_path = name_or_path
    return model


def config_from_model_cfg(cfg: Any) -> VimConfig:
    """The architecture part of a ``conf/model/vim-*.yaml`` node (any other key but ``RUN_KEYS`` refused)."""
    return config_from_node(VimConfig, cfg)


def model_from_config(cfg: Any, *, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> Any:
    """The Vim a model node describes: released weights, or random init when ``pretrained: false`` (or ``meta``)."""
    config = config_from_model_cfg(cfg)
    backend = Backend(impl=cfg.get("scan_impl", "auto"), recompute=bool(cfg.get("recompute", False)))
    if str(device) == "meta" or not cfg.get("pretrained", False):
        model = build_vim(config, device=device, backend=backend, seed=cfg.get("seed", 0), dtype=dtype)
        model.name_or_path = cfg.get("name")
        return model
    return load_vim(cfg["name_or_path"], config, dtype=dtype, device=device, backend=backend)
