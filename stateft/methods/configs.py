"""Typed options of every PEFT method, torch-free so that config errors answer before any heavy import.

``conf/method/<name>.yaml`` is checked against ``METHOD_CONFIGS[name]`` at start-up: a misspelt key, a wrong type or
an unknown method name fails with one line naming the valid choices.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from stateft.errors import UserError


@dataclass
class MethodConfig:
    name: str = ""
    # each method owns its learning rate (PEFT methods differ by orders of magnitude); None when a sweep sets optim.lr
    lr: float | None = 1e-3


@dataclass
class FullConfig(MethodConfig):
    pass


@dataclass
class FullS6Config(MethodConfig):
    pass


@dataclass
class FullSSDConfig(MethodConfig):
    pass


@dataclass
class BitFitConfig(MethodConfig):
    pass


@dataclass
class LoraConfig(MethodConfig):
    r: int | None = None  # rank; None = the papers' per architecture: 8 on Mamba-1, 16 on Mamba-2
    alpha: float | None = None  # the update is scaled by alpha / r; None = r (scale 1, as the papers)
    dropout: float = 0.1
    # null = the paper's targets: Mamba-1 x_proj's dt, B and C row blocks (each its own LoRA) and dt_proj;
    # Mamba-2 in_proj and out_proj. Otherwise mixer linears (in_proj, x_proj, dt_proj, out_proj) or
    # row blocks of x_proj (x_proj.dt, x_proj.B, x_proj.C).
    target_modules: list[str] | None = None


@dataclass
class PromptConfig(MethodConfig):
    num_virtual_tokens: int = 16
    init: str = "vocab"  # vocab: copies of random vocabulary embeddings; normal: N(0, 1) scaled to their norm


@dataclass
class PrefixConfig(MethodConfig):
    num_virtual_tokens: int = 3  # P vectors per layer, prepended to the in_proj output


@dataclass
class AdditionalScanConfig(MethodConfig):
    n: int = 8  # extra state dimensions per channel
    A_init: str = "continue"  # continue: A_log_new[:, j] = log(N + 1 + j); copy: copy pretrained column copy_column
    copy_column: int = 0


@dataclass
class SDTConfig(MethodConfig):
    warmup_steps: int = 500  # phase 1: dense A_log delta + LoRA on out_proj, trained to score dimensions
    warmup_lr: float | None = None  # null = lr
    channel_ratio: float = 0.01  # keep the top (1 - 0.99) of channels
    rho_s: float = 0.75  # within a kept channel keep the top (1 - rho_s) of the states (0.75 / 0.9 / 0.95)
    lora_r: int = 8
    lora_alpha: float = 8.0
    lora_dropout: float = 0.0
    # filled by the warm-up: per layer [kept channels, kept states per channel]; stored in adapter_config.json
    selection: list[Any] | None = None


@dataclass
class InitStateConfig(MethodConfig):
    conv_state: bool = False  # also learn the causal conv's starting window P (E, K-1)


@dataclass
class StateOffsetHConfig(MethodConfig):
    rank: int | None = None  # null = full h' (E, N); r = low-rank h' = U V with U (E, r) zero-init, V (r, N)


@dataclass
class StateOffsetYConfig(MethodConfig):
    pass


METHOD_CONFIGS: dict[str, type[MethodConfig]] = {
    "full": FullConfig,
    "full_s6": FullS6Config,
    "full_ssd": FullSSDConfig,
    "bitfit": BitFitConfig,
    "lora": LoraConfig,
    "prompt": PromptConfig,
    "prefix": PrefixConfig,
    "additional_scan": AdditionalScanConfig,
    "sdt": SDTConfig,
    "init_state": InitStateConfig,
    "state_offset_h": StateOffsetHConfig,
    "state_offset_y": StateOffsetYConfig,
}


def validate_method_cfg(node: Any) -> MethodConfig:
    """A typed method config from a dict/DictConfig/dataclass; raises UserError naming the valid choices."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    if isinstance(node, MethodConfig):
        return node
    raw = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else dict(node)
    name = raw.get("name")
    if name not in METHOD_CONFIGS:
        raise UserError(f"unknown method {name!r}; choose one of: {', '.join(METHOD_CONFIGS)}")
    cls = METHOD_CONFIGS[name]
    try:
        merged = OmegaConf.merge(OmegaConf.structured(cls), raw)
    except OmegaConfBaseException as err:
        valid = ", ".join(f.name for f in cls.__dataclass_fields__.values())
        key = getattr(err, "key", None) or getattr(err, "full_key", None)
        raise UserError(
            f"method {name}: bad option {key!r} ({str(err).splitlines()[0]}); valid options: {valid}"
        ) from None
    return OmegaConf.to_object(merged)


__all__ = ["METHOD_CONFIGS", "MethodConfig", "validate_method_cfg"]
