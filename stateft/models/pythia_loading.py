"""Build a ``PythiaLM`` from a ``conf/model/pythia-*.yaml`` node: random init or on the meta device from the
architecture numbers (dry runs, tests: no download), or the pretrained EleutherAI checkpoint through transformers'
``from_pretrained`` (a hub id or a local folder; its config must match the node's numbers)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from stateft.errors import UserError
from stateft.models.config import config_from_node
from stateft.models.pythia import PythiaConfig, PythiaLM

# hub ids of the checkpoints the configs in conf/model/ name (the final training step, 143000, is their main)
KNOWN_MODELS: dict[str, str] = {
    "pythia-70m": "EleutherAI/pythia-70m",
    "pythia-160m": "EleutherAI/pythia-160m",
    "pythia-410m": "EleutherAI/pythia-410m",
    "pythia-1.4b": "EleutherAI/pythia-1.4b",
}


def config_from_model_cfg(cfg: Any) -> PythiaConfig:
    """The architecture part of a ``conf/model/pythia-*.yaml`` node (``stateft.models.config.config_from_node``)."""
    return config_from_node(PythiaConfig, cfg)


def build_model(
    config: PythiaConfig,
    *,
    device: str | torch.device = "cpu",
    seed: int | None = 0,
    dtype: torch.dtype = torch.float32,
) -> PythiaLM:
    """A randomly initialised model (transformers' init: N(0, init_std) linears and embeddings); ``device="meta"``:
    shapes only."""
    if seed is not None and str(device) != "meta":
        torch.manual_seed(seed)
    with torch.device(device):
        model = PythiaLM(config)
    return model if str(device) == "meta" else model.to(dtype)


def load_pretrained(
    name_or_path: str,
    *,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    expected: PythiaConfig | None = None,
) -> PythiaLM:
    """A pretrained Pythia from a known name (``pythia-160m``), a hub id or a local folder."""
    from transformers import GPTNeoXForCausalLM

    source = KNOWN_MODELS.get(name_or_path, name_or_path)
    if Path(source).expanduser().is_dir():
        source = str(Path(source).expanduser())
    try:
        hf = GPTNeoXForCausalLM.from_pretrained(source, dtype=dtype)
    except (OSError, ValueError) as err:  # offline, unreachable, missing repo or files: one line for the user
        reason = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
        raise UserError(
            f"could not load {source} ({reason}); without hub access, download the checkpoint elsewhere and pass "
            "its folder: model.name_or_path=/path/to/folder"
        ) from None
    config = expected or _config_of(hf.config)
    _check_expected(hf.config, config, name_or_path)
    model = PythiaLM(config, hf).to(device)
    model.name_or_path = name_or_path
    return model


def _config_of(hf_config: Any) -> PythiaConfig:
    rope = hf_config.rope_parameters or {}
    return PythiaConfig(
        d_model=hf_config.hidden_size,
        n_layer=hf_config.num_hidden_layers,
        n_head=hf_config.num_attention_heads,
        vocab_size=hf_config.vocab_size,
        pad_vocab_size_multiple=1,
        intermediate_size=hf_config.intermediate_size,
        rotary_pct=rope.get("partial_rotary_factor", 0.25),
        rotary_emb_base=int(rope.get("rope_theta", 10000)),
        max_position_embeddings=hf_config.max_position_embeddings,
        layer_norm_eps=hf_config.layer_norm_eps,
        use_parallel_residual=hf_config.use_parallel_residual,
        tie_embeddings=hf_config.tie_word_embeddings,
    )


def _check_expected(hf_config: Any, expected: PythiaConfig, name: str) -> None:
    """The checkpoint's numbers against the model config's (the embedding has ``padded_vocab_size`` rows)."""
    found = _config_of(hf_config)
    pairs = {
        "d_model": (found.d_model, expected.d_model),
        "n_layer": (found.n_layer, expected.n_layer),
        "n_head": (found.n_head, expected.n_head),
        "intermediate_size": (found.d_ff, expected.d_ff),
        "padded_vocab_size": (found.vocab_size, expected.padded_vocab_size),
        "rotary_pct": (found.rotary_pct, expected.rotary_pct),
        "use_parallel_residual": (found.use_parallel_residual, expected.use_parallel_residual),
    }
    diff = [f"{k}={a} (config says {b})" for k, (a, b) in pairs.items() if a != b]
    if diff:
        raise UserError(f"checkpoint {name} does not match its model config: {', '.join(diff)}")


def model_from_config(cfg: Any, *, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> PythiaLM:
    """The model a ``conf/model/pythia-*.yaml`` node describes: pretrained weights, or random init when
    ``pretrained: false`` (or ``device="meta"``: shapes only, no download)."""
    config = config_from_model_cfg(cfg)
    if str(device) == "meta" or not cfg.get("pretrained", False):
        model = build_model(config, device=device, seed=cfg.get("seed", 0), dtype=dtype)
        model.name_or_path = cfg.get("name")
        return model
    model = load_pretrained(cfg["name_or_path"], dtype=dtype, device=device, expected=config)
    model.name_or_path = cfg["name_or_path"]
    return model


__all__ = ["KNOWN_MODELS", "build_model", "config_from_model_cfg", "load_pretrained", "model_from_config"]
