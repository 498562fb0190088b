"""Typed options of every PEFT method, torch-free so that config errors answer before any heavy import.

``conf/method/<name>.yaml`` is checked against ``METHOD_CONFIGS[name]`` at start-up: a misspelt key, a wrong type or
an unknown method name fails with one line naming the valid choices.

Each config class also says which architectures (``model.arch``) its method applies to, ``archs``: the one place this
is decided. ``apply_method`` (``stateft.methods.registry``, through ``MethodSpec.archs``), the start-up check
(``stateft.app.checks``) and the tests read it; ``methods_for(arch)`` lists the methods of an architecture and
``refusal`` is the one line that refuses a method on another.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, ClassVar

from stateft.errors import UserError
from stateft.models.backbone import MAMBA_ARCHS, TRANSFORMER_ARCHS  # torch-free

ARCHS = (*MAMBA_ARCHS, *TRANSFORMER_ARCHS)  # every model.arch a method may name
MAMBA = frozenset(MAMBA_ARCHS)
MAMBA1 = frozenset({"mamba1"})
MAMBA2 = frozenset({"mamba2"})
# lora, prefix and prompt also apply to a Transformer, as HF peft's methods (stateft.methods.peft_methods)
WITH_PEFT = frozenset(TRANSFORMER_ARCHS)


@dataclass
class MethodConfig:
    # the architectures (model.arch) the method applies to: a class attribute, not an option
    archs: ClassVar[frozenset[str]] = frozenset()
    name: str = ""
    # each method owns its learning rate (PEFT methods differ by orders of magnitude); None when a sweep sets optim.lr
    lr: float | None = 1e-3


@dataclass
class FullConfig(MethodConfig):
    archs = MAMBA


@dataclass
class FullS6Config(MethodConfig):
    archs = MAMBA1  # the S6 parameters


@dataclass
class FullSSDConfig(MethodConfig):
    archs = MAMBA2  # the SSD parameters


@dataclass
class BitFitConfig(MethodConfig):
    archs = MAMBA  # the mixers' biases


@dataclass
class LoraConfig(MethodConfig):
    archs = MAMBA | WITH_PEFT
    r: int | None = None  # rank; None = the papers' per architecture: 8 on Mamba-1, 16 on Mamba-2
    alpha: float | None = None  # the update is scaled by alpha / r; None = r (scale 1, as the papers)
    dropout: float = 0.1
    # null = the paper's targets: Mamba-1 x_proj's dt, B and C row blocks (each its own LoRA) and dt_proj;
    # Mamba-2 in_proj and out_proj. Otherwise mixer linears (in_proj, x_proj, dt_proj, out_proj) or
    # row blocks of x_proj (x_proj.dt, x_proj.B, x_proj.C).
    target_modules: list[str] | None = None


@dataclass
class PromptConfig(MethodConfig):
    archs = MAMBA | WITH_PEFT
    num_virtual_tokens: int = 16
    init: str = "vocab"  # vocab: copies of random vocabulary embeddings; normal: N(0, 1) scaled to their norm


@dataclass
class PrefixConfig(MethodConfig):
    archs = MAMBA1 | WITH_PEFT  # Mamba-2's in_proj also emits B, C and dt: no affix there
    num_virtual_tokens: int = 3  # P vectors per layer, prepended to the in_proj output


ADDITIONAL_SCAN_A_INITS = ("continue", "sst", "sony", "copy")


@dataclass
class AdditionalScanConfig(MethodConfig):
    archs = MAMBA
    # extra states; None = the papers' per architecture: 8 per channel on Mamba-1, 32 per group on Mamba-2
    n: int | None = None
    # Mamba-1 only (Mamba-2's extra states decay with their head's A). None = continue: A_log_new[:, j] = log(N+1+j);
    # sst: the raw value N (SST's runs); sony: pretrained column 0 and a random W_C (SONY's); copy: pretrained column
    # copy_column, W_C zero. See stateft/methods/additional_scan.py.
    A_init: str | None = None
    copy_column: int = 0  # read by A_init copy only

    def __post_init__(self) -> None:
        if self.n is not None and self.n < 1:
            raise UserError(f"additional_scan: n must be a positive number of extra states, got {self.n}")
        if self.A_init is not None and self.A_init not in ADDITIONAL_SCAN_A_INITS:
            choices = ", ".join(ADDITIONAL_SCAN_A_INITS)
            raise UserError(f"additional_scan: unknown A_init {self.A_init!r}; choose one of: {choices} (or null)")
        if self.copy_column < 0:
            raise UserError(f"additional_scan: copy_column must be >= 0, got {self.copy_column}")


@dataclass
class SDTConfig(MethodConfig):
    """SDT as the State-offset paper ran it (stateft/methods/sdt.py): sparse deltas on S6 only, no LoRA."""

    archs = MAMBA1  # S6's per-channel states (sdlora too)
    lr: float | None = 4e-2
    # warm-up (phase 1) that picks the dimensions: num_warmup_it + 1 optimizer updates (the SDT code's count;
    # its configs: 499, and 248 for RTE, whose first epoch ends before 500 updates)
    num_warmup_it: int = 499
    warmup_lr: float | None = None  # null = lr (conf/method/*.yaml points it at optim.lr: the run's learning rate)
    # the warm-up follows the run's linear decay: it spans warmup_schedule_epochs x batches per epoch
    warmup_schedule_epochs: int = 10
    freeze_channels: float = 0.5  # keep the top E - round(freeze_channels E) channels (S6 channels, d_inner)
    freeze_states: float = 0.75  # in a kept channel keep the top N - round(freeze_states N) states (16 -> 4)
    # filled by the warm-up: per layer [kept channels, kept states per channel]; stored in adapter_config.json
    selection: list[Any] | None = None

    def __post_init__(self) -> None:
        if self.num_warmup_it < 0 or self.warmup_schedule_epochs < 1:
            raise UserError(f"method {self.name}: num_warmup_it must be >= 0 and warmup_schedule_epochs >= 1")
        for key in ("freeze_channels", "freeze_states"):
            if not 0.0 <= getattr(self, key) < 1.0:
                raise UserError(f"method {self.name}: {key}={getattr(self, key)} must lie in [0, 1)")


@dataclass
class SDLoraConfig(SDTConfig):
    """SDLoRA of the SDT paper (ssm-peft sd_lora; stateft/methods/sdlora.py): the sparse S6 deltas of sdt with 1% of
    the channels, plus LoRA on out_proj in both phases."""

    lr: float | None = 1e-3
    freeze_channels: float = 0.99  # 130m: 15 of 1536 channels kept; 1.4b: 41 of 4096
    lora_r: int = 8
    lora_alpha: float = 8.0
    lora_dropout: float = 0.1

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.lora_r < 1 or not 0.0 <= self.lora_dropout < 1.0:
            raise UserError(f"method {self.name}: lora_r must be >= 1 and lora_dropout in [0, 1)")


@dataclass
class InitStateConfig(MethodConfig):
    archs = MAMBA
    conv_state: bool = False  # also learn the causal conv's starting window P (E, K-1)


@dataclass
class StateOffsetHConfig(MethodConfig):
    archs = MAMBA
    rank: int | None = None  # null = full h' (E, N); r = low-rank h' = U V with U (E, r) zero-init, V (r, N)


@dataclass
class StateOffsetYConfig(MethodConfig):
    archs = MAMBA


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
    "sdlora": SDLoraConfig,
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
        valid = ", ".join(f.name for f in fields(cls))
        key = getattr(err, "key", None) or getattr(err, "full_key", None)
        raise UserError(
            f"method {name}: bad option {key!r} ({str(err).splitlines()[0]}); valid options: {valid}"
        ) from None
    return OmegaConf.to_object(merged)


def methods_for(arch: str) -> list[str]:
    """The methods that apply to a model of ``arch`` (``model.arch``), in registry order."""
    return [name for name, cls in METHOD_CONFIGS.items() if arch in cls.archs]


def refusal(name: str, arch: str) -> str:
    """The one line that refuses method ``name`` on a model of ``arch``, naming the methods that apply there."""
    archs = " and ".join(a for a in ARCHS if a in METHOD_CONFIGS[name].archs)
    return f"{name} applies to {archs} models, not to {arch}; the methods for {arch}: {', '.join(methods_for(arch))}"


__all__ = ["ARCHS", "METHOD_CONFIGS", "MethodConfig", "methods_for", "refusal", "validate_method_cfg"]
