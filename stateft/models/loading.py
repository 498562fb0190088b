"""Build Mamba models from configs, and load pretrained checkpoints in either layout.

Layouts:
- mamba_ssm (``state-spaces/mamba-130m``): ``config.json`` with ``d_model``/``n_layer``/``ssm_cfg``,
  ``pytorch_model.bin`` (or safetensors); keys ``backbone.embedding.weight``, ``backbone.layers.{i}.mixer.*``,
  ``backbone.norm_f.weight``.
- transformers (``state-spaces/mamba-130m-hf``): ``config.json`` with ``model_type: mamba``, ``hidden_size``...;
  keys ``backbone.embeddings.weight``, otherwise the same names (``stateft.models.transformers_layout`` holds the
  config keys and the rename, both ways).
Our parameter names are mamba_ssm's, so only the embedding key is renamed.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch

from stateft.errors import UserError
from stateft.models.backbone import is_transformer, is_vision
from stateft.models.config import MambaConfig, config_from_node
from stateft.models.lm import MambaLM
from stateft.models.transformers_layout import config_from_transformers, to_ours
from stateft.ops.backend import Backend

# hub ids of the checkpoints the configs in conf/model/ name
KNOWN_MODELS: dict[str, str] = {
    "mamba-130m": "state-spaces/mamba-130m",
    "mamba-370m": "state-spaces/mamba-370m",
    "mamba-790m": "state-spaces/mamba-790m",
    "mamba-1.4b": "state-spaces/mamba-1.4b",
    "mamba-2.8b": "state-spaces/mamba-2.8b",
    "mamba2-130m": "state-spaces/mamba2-130m",
    "mamba2-370m": "state-spaces/mamba2-370m",
    "mamba2-780m": "state-spaces/mamba2-780m",
    "mamba2-1.3b": "state-spaces/mamba2-1.3b",
    "mamba2-2.7b": "state-spaces/mamba2-2.7b",
}
_WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
_FP32_PARAMS = ("A_log", "D", "dt_bias")  # kept in fp32 whatever the model dtype (as mamba_ssm does)

DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


def build_model(
    config: MambaConfig,
    *,
    device: str | torch.device = "cpu",
    backend: Backend | str = "auto",
    seed: int | None = 0,
    dtype: torch.dtype = torch.float32,
) -> MambaLM:
    """A randomly initialised model (``device="meta"``: shapes only, for parameter counts and dry runs).
    ``backend``: a `Backend` request or a ``scan_impl`` name, decided for ``device`` (`MambaLM.set_backend`)."""
    if is_transformer(config):  # another backbone family (stateft.models.backbone)
        from stateft.models import pythia_loading

        return pythia_loading.build_model(config, device=device, seed=seed, dtype=dtype)
    if is_vision(config):  # Vision Mamba (stateft.vision)
        from stateft.vision.loading import build_vim

        return build_vim(config, device=device, backend=backend, seed=seed, dtype=dtype)
    cast = partial(cast_model, dtype=dtype)
    return random_init(MambaLM, config, device=device, backend=backend, seed=seed, cast=cast)


def random_init(
    network: Callable[[Any, Backend], torch.nn.Module],
    config: Any,
    *,
    device: str | torch.device,
    backend: Backend | str,
    seed: int | None,
    cast: Callable[[torch.nn.Module], Any],
) -> torch.nn.Module:
    """``network(config, backend)`` made on ``device``, its parameters drawn from ``seed`` and then ``cast``; on the
    meta device shapes only (nothing drawn or cast)."""
    backend = Backend(impl=backend) if isinstance(backend, str) else backend
    with torch.device(device):
        model = network(config, backend)
    if str(device) != "meta":
        model.reset_parameters(seed)
        cast(model)
    return model


def cast_model(model: MambaLM, dtype: torch.dtype) -> MambaLM:
    """Cast to ``dtype``, keeping A_log, D (and Mamba-2's dt_bias) in fp32 and out of weight decay
    (loading with ``assign=True`` replaces the Parameter objects, so the tag is set again here).

    With a method applied (trainer.precision=bf16-true casts then), the tensors attached to those stay fp32 too: a
    name with A_log, D or dt_bias anywhere in its path, as sdt's ``mixer.parametrizations.A_log.original`` and
    ``....A_log.0.values`` or additional_scan's ``extra_states.A_log``; only the parameters named so are tagged.
    """
    for name, p in model.named_parameters():
        parts = name.split(".")
        keep = any(part in _FP32_PARAMS for part in parts)
        p.data = p.data.to(torch.float32 if keep else dtype)
        if parts[-1] in _FP32_PARAMS:
            p._no_weight_decay = True
    return model


# -- layouts ----------------------------------------------------------------------------------------------------
def config_from_json(raw: dict[str, Any]) -> tuple[MambaConfig, str]:
    """(config, layout) from a checkpoint's config.json; layout is ``mamba_ssm`` or ``transformers``."""
    if raw.get("model_type") in ("mamba", "mamba2"):
        return config_from_transformers(raw), "transformers"
    if "d_model" in raw and "n_layer" in raw:
        ssm_cfg = dict(raw.get("ssm_cfg") or {})
        if ssm_cfg.get("layer") == "Mamba2":  # Mamba-2 defaults differ (d_state 128, headdim 64...)
            from stateft.models.mamba2_loading import mamba2_config_from_mamba_ssm

            return mamba2_config_from_mamba_ssm(raw), "mamba_ssm"
        known = {"d_state", "d_conv", "expand", "dt_rank", "dt_min", "dt_max", "dt_init_floor", "conv_bias", "bias"}
        extra = {k: v for k, v in ssm_cfg.items() if k in known}
        return MambaConfig(
            d_model=raw["d_model"],
            n_layer=raw["n_layer"],
            vocab_size=raw["vocab_size"],
            arch="mamba1",
            pad_vocab_size_multiple=raw.get("pad_vocab_size_multiple", 8),
            tie_embeddings=raw.get("tie_embeddings", True),
            **extra,
        ), "mamba_ssm"
    raise UserError(
        "config.json is neither a mamba_ssm config (d_model, n_layer) nor a transformers Mamba config "
        "(model_type: mamba/mamba2)"
    )


# -- files ------------------------------------------------------------------------------------------------------
def _read_weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    if (folder / "model.safetensors").exists():
        return load_file(folder / "model.safetensors")
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index = folder / index_name
        if index.exists():
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            state: dict[str, torch.Tensor] = {}
            for shard in shards:
                path = folder / shard
                state.update(load_file(path) if shard.endswith(".safetensors") else _torch_load(path))
            return state
    if (folder / "pytorch_model.bin").exists():
        return _torch_load(folder / "pytorch_model.bin")
    raise UserError(f"{folder} holds no checkpoint: expected one of {', '.join(_WEIGHT_FILES)}")


def _torch_load(path: Path) -> dict[str, torch.Tensor]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # corrupt or non-tensor pickle: weights_only refuses arbitrary code
        raise UserError(f"cannot read {path} as a tensor checkpoint ({type(err).__name__}); re-download it") from err


def resolve_folder(name_or_path: str) -> Path:
    """A local folder holding config.json and weights: the path itself, or a hub snapshot."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists():
            raise UserError(
                f"{path} has no config.json: pass a folder holding a Mamba checkpoint "
                f"(config.json + {' or '.join(_WEIGHT_FILES[::2])})"
            )
        return path
    looks_like_path = name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1
    if looks_like_path:
        raise UserError(f"model folder {name_or_path} does not exist")
    repo_id = KNOWN_MODELS.get(name_or_path, name_or_path)
    if "/" not in repo_id:
        raise UserError(
            f"unknown model {name_or_path!r}; known models: {', '.join(KNOWN_MODELS)} "
            "(or pass a hub id like state-spaces/mamba-130m, or a local folder)"
        )
    return _download(repo_id)


def _download(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download

    patterns = ["config.json", "*.safetensors", "*.bin", "*.index.json"]
    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns))
    except Exception as err:  # offline, unreachable, missing repo: all end the same way for the user
        reason = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
        raise UserError(
            f"could not fetch {repo_id} from the Hugging Face hub ({reason}); without hub access, "
            f"download the checkpoint elsewhere and pass its folder: model.name_or_path=/path/to/folder"
        ) from None


def load_pretrained(
    name_or_path: str,
    *,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    backend: Backend | str = "auto",
    expected: MambaConfig | None = None,
) -> MambaLM:
    """Load a pretrained Mamba (either layout) from a local folder, a known name (``mamba-1.4b``) or a hub id.

    ``expected``: the architecture the caller's config promises; a different checkpoint is an error.
    Pythia: a known name (``pythia-160m``) or ``expected`` a ``PythiaConfig`` (``stateft.models.pythia_loading``).
    """
    from stateft.models import pythia_loading

    if name_or_path in pythia_loading.KNOWN_MODELS or is_transformer(expected):
        return pythia_loading.load_pretrained(name_or_path, dtype=dtype, device=device, expected=expected)
    folder = resolve_folder(name_or_path)
    config, layout = config_from_json(json.loads((folder / "config.json").read_text()))
    if expected is not None:
        _check_expected(config, expected, name_or_path)
    state = _read_weights(folder)
    if layout == "transformers":
        state = to_ours(state)
    model = build_model(config, device="meta", backend=backend)
    _check_state(model, state, folder)
    if config.tie_embeddings:
        state.pop("lm_head.weight", None)
    model.load_state_dict(state, strict=False, assign=True)
    if config.tie_embeddings:
        model.lm_head.weight = model.backbone.embedding.weight
    cast_model(model, dtype).to(device)  # the backend is decided again for ``device`` (`MambaLM._apply`)
    model.name_or_path = name_or_path
    return model


def _check_expected(found: MambaConfig, expected: MambaConfig, name: str) -> None:
    keys = ("arch", "d_model", "n_layer", "d_state", "expand")
    diff = [
        f"{k}={getattr(found, k)} (config says {getattr(expected, k)})"
        for k in keys
        if getattr(found, k) != getattr(expected, k)
    ]
    if diff:
        raise UserError(f"checkpoint {name} does not match its model config: {', '.join(diff)}")


def _check_state(model: MambaLM, state: dict[str, torch.Tensor], folder: Path) -> None:
    want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if model.config.tie_embeddings:
        want.pop("lm_head.weight")
    got = {k: tuple(v.shape) for k, v in state.items() if not (model.config.tie_embeddings and k == "lm_head.weight")}
    missing = sorted(set(want) - set(got))
    unexpected = sorted(set(got) - set(want))
    wrong = [f"{k} {got[k]} vs {want[k]}" for k in sorted(set(want) & set(got)) if got[k] != want[k]]
    problems = []
    if wrong:
        problems.append(f"{len(wrong)} tensors have shapes that do not match config.json, e.g. {wrong[0]}")
    if missing:
        problems.append(f"{len(missing)} tensors missing, e.g. {missing[0]}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected tensors, e.g. {unexpected[0]}")
    if problems:
        raise UserError(f"checkpoint in {folder} does not fit its config.json: {'; '.join(problems)}")


def save_pretrained(model: MambaLM, folder: str | Path) -> Path:
    """Write ``config.json`` (mamba_ssm layout) and ``model.safetensors``; ``load_pretrained`` reads it back."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    c = model.config
    ssm_cfg = {"d_state": c.d_state, "d_conv": c.d_conv, "expand": c.expand, "dt_rank": c.dt_rank}
    if c.arch == "mamba2":
        ssm_cfg = {
            "layer": "Mamba2",
            "d_state": c.d_state,
            "d_conv": c.d_conv,
            "expand": c.expand,
            "headdim": c.headdim,
            "ngroups": c.ngroups,
            "chunk_size": c.chunk_size,
            "rmsnorm": c.rmsnorm,
            "norm_before_gate": c.norm_before_gate,
            "dt_limit": list(c.dt_limit),
        }
    ssm_cfg.update(conv_bias=c.conv_bias, bias=c.bias)  # mamba_ssm's Mamba and Mamba2 take both
    raw = {
        "d_model": c.d_model,
        "n_layer": c.n_layer,
        "vocab_size": c.vocab_size,
        "ssm_cfg": ssm_cfg,
        "rms_norm": True,
        "residual_in_fp32": True,
        "pad_vocab_size_multiple": c.pad_vocab_size_multiple,
        "tie_embeddings": c.tie_embeddings,
    }
    (folder / "config.json").write_text(json.dumps(raw, indent=2))
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    if c.tie_embeddings:
        state.pop("lm_head.weight")
    save_file(state, str(folder / "model.safetensors"))
    return folder


# -- from a Hydra model config ------------------------------------------------------------------------------------
def config_from_model_cfg(cfg: Any) -> MambaConfig:
    """The architecture part of a ``conf/model/*.yaml`` node (a ``PythiaConfig`` for ``arch: gpt_neox``): every
    field of the config class, any other key but ``RUN_KEYS`` refused (``stateft.models.config.config_from_node``)."""
    if is_transformer(str(cfg.get("arch"))):
        from stateft.models import pythia_loading

        return pythia_loading.config_from_model_cfg(cfg)
    if is_vision(str(cfg.get("arch"))):
        from stateft.vision.loading import config_from_model_cfg as vim_config

        return vim_config(cfg)
    return config_from_node(MambaConfig, cfg)


def model_from_config(cfg: Any, *, device: str | torch.device = "cpu") -> MambaLM:
    """Build the model a ``conf/model/*.yaml`` node describes: pretrained weights, or random init when
    ``pretrained: false`` (or ``device="meta"``: shapes only, no download)."""
    config = config_from_model_cfg(cfg)
    # auto: train.py and eval.py settle it for their device and precision (stateft.app.fast_path); a model built
    # from a config node directly is stored in fp32
    dtype_name = cfg.get("dtype", "float32")
    dtype_name = "float32" if dtype_name == "auto" else dtype_name
    if dtype_name not in DTYPES:
        raise UserError(f"model.dtype={dtype_name!r} is not one of {', '.join(DTYPES)}")
    dtype = DTYPES[dtype_name]
    if is_transformer(str(cfg.get("arch"))):
        from stateft.models import pythia_loading

        return pythia_loading.model_from_config(cfg, device=device, dtype=dtype)
    if is_vision(str(cfg.get("arch"))):
        from stateft.vision.loading import model_from_config as vim_from_config

        return vim_from_config(cfg, device=device, dtype=dtype)
    recompute = cfg.get("recompute", True)
    if not isinstance(recompute, bool):
        raise UserError(f"model.recompute={recompute!r} must be true or false")
    # scan_impl: which implementation every op runs; recompute: Mamba-1 remakes u and delta in the backward
    backend = Backend(impl=cfg.get("scan_impl", "auto"), recompute=recompute)
    if str(device) == "meta" or not cfg.get("pretrained", False):
        model = build_model(config, device=device, backend=backend, seed=cfg.get("seed", 0), dtype=dtype)
        model.name_or_path = cfg.get("name")
    else:
        model = load_pretrained(cfg["name_or_path"], dtype=dtype, device=device, backend=backend, expected=config)
        model.name_or_path = cfg["name_or_path"]
    return model
