"""Typed options of every PEFT method, torch-free so that config errors answer before any heavy import.

``conf/method/<name>.yaml`` is checked against ``METHOD_CONFIGS[name]`` at start-up: a misspelt key, a wrong type or
an unknown method name fails with one line naming the valid choices.

Each config class also says which architectures (``model.arch``) its method applies to, ``archs``: the one place this
is decided. ``apply_method`` (``stateft.methods.registry``, through ``MethodSpec.archs``), the start-up check
(``stateft.app.checks``) and the tests read it; ``methods_for(arch)`` lists the methods of an architecture and
``refusal`` is the one line that refuses a method on another. An option that applies to some of a method's
architectures only is refused by its config's ``option_refusal(arch)``; ``arch_refusal`` asks both, so the start-up
check refuses such a config before any model is built, and ``apply_method`` (the Python API) with the same line.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, make_dataclass
from typing import Any, ClassVar

from stateft.errors import UserError
from stateft.models.backbone import MAMBA_ARCHS, S4_ARCHS, TRANSFORMER_ARCHS, VISION_ARCHS  # torch-free

ARCHS = (*MAMBA_ARCHS, *TRANSFORMER_ARCHS, *S4_ARCHS)  # every model.arch a method may name
# Vim (stateft.vision) opts in method by method (``| VIM``): the methods attach to its Mamba-1 scan directions
VIM = frozenset(VISION_ARCHS)
MAMBA = frozenset(MAMBA_ARCHS) - VIM  # the language Mambas
MAMBA1 = frozenset({"mamba1"})
MAMBA2 = frozenset({"mamba2"})
# lora, prefix and prompt also apply to a Transformer, as HF peft's methods (stateft.methods.peft_methods)
WITH_PEFT = frozenset(TRANSFORMER_ARCHS)
# the linears of a GPT-NeoX layer (Pythia), as peft's target_modules name them (suffixes of the module names)
PYTHIA_LINEARS = ("query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h")
# LoRA's targets on each architecture (stateft/methods/lora.py; tests/methods/test_lora.py holds them against the
# modules): a mixer's linears, their named row blocks and the causal conv; on gpt_neox the GPT-NeoX linears (peft).
# Vim: its blocks hold in_proj and out_proj, its scan directions x_proj, dt_proj and conv1d.
_MAMBA1_LORA_TARGETS = ("in_proj", "x_proj", "dt_proj", "out_proj", "in_proj.x", "in_proj.z", "x_proj.dt", "x_proj.B",
                        "x_proj.C", "conv1d")  # fmt: skip
LORA_TARGETS = {
    "mamba1": _MAMBA1_LORA_TARGETS,
    "vim": _MAMBA1_LORA_TARGETS,
    "mamba2": ("in_proj", "out_proj", "in_proj.x", "in_proj.z", "conv1d"),
    "gpt_neox": PYTHIA_LINEARS,
}


@dataclass
class MethodConfig:
    # the architectures (model.arch) the method applies to: a class attribute, not an option
    archs: ClassVar[frozenset[str]] = frozenset()
    name: str = ""
    # each method owns its learning rate (PEFT methods differ by orders of magnitude); None when a sweep sets optim.lr
    lr: float | None = 1e-3

    def option_refusal(self, arch: str) -> str | None:
        """None when the options apply to a model of ``arch`` (one of ``archs``); else the one line refusing them."""
        return None


@dataclass
class FullConfig(MethodConfig):
    archs = MAMBA | VIM


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
    archs = MAMBA | WITH_PEFT | VIM
    r: int | None = None  # rank; None = the papers' per architecture: 8 on Mamba-1, 16 on Mamba-2
    alpha: float | None = None  # the update is scaled by alpha / r; None = r (scale 1, as the papers)
    dropout: float = 0.1
    # null = the paper's targets: Mamba-1 x_proj's dt, B and C row blocks (each its own LoRA) and dt_proj;
    # Mamba-2 in_proj and out_proj. Otherwise mixer linears (in_proj, x_proj, dt_proj, out_proj) or row blocks:
    # x_proj.dt, x_proj.B, x_proj.C (Mamba-1) and in_proj.x, in_proj.z (MambaPEFT's LoRA on X and on Z); conv1d:
    # a low-rank delta on the causal conv's (channels, K) kernel (MambaPEFT's lora_conv1d). LORA_TARGETS lists them
    # per architecture; on gpt_neox: PYTHIA_LINEARS (null: query_key_value, stateft.methods.peft_methods).
    target_modules: list[str] | None = None

    def __post_init__(self) -> None:
        targets = list(self.target_modules or [])
        for target in targets:
            linear = target.partition(".")[0]
            if linear != target and linear in targets:
                raise UserError(
                    f"lora targets overlap: {linear} and its row block {target}; choose the whole linear or its blocks"
                )

    def option_refusal(self, arch: str) -> str | None:
        unknown = [t for t in self.target_modules or [] if t not in LORA_TARGETS[arch]]
        if unknown:
            return (
                f"lora target_modules {unknown} are not targets on {arch}; choose from: {', '.join(LORA_TARGETS[arch])}"
            )
        return None


PROMPT_INITS = ("vocab", "normal")


@dataclass
class PromptConfig(MethodConfig):
    archs = MAMBA | WITH_PEFT | VIM  # on Vim: half the tokens before the patches, half after (stateft.vision)
    num_virtual_tokens: int = 16
    init: str = "vocab"  # vocab: copies of random vocabulary embeddings; normal: N(0, 1) scaled to their norm
    # MambaPEFT's prompt_projection: the virtual tokens are MLP(E) = W2 tanh(W1 E + b1) + b2 (d -> d -> d) of the
    # trained E, as its PrefixEncoder; false: E itself (Lester et al.). Mamba only.
    reparam: bool = False

    def __post_init__(self) -> None:
        if self.init not in PROMPT_INITS:
            raise UserError(f"prompt: unknown init {self.init!r}; choose one of: {', '.join(PROMPT_INITS)}")

    def option_refusal(self, arch: str) -> str | None:
        if self.reparam and arch in WITH_PEFT:
            return "prompt reparam=true (MambaPEFT's MLP) is for Mamba; on a Transformer use reparam=false"
        return None


PREFIX_POSITIONS = ("inner", "outer")


@dataclass
class PrefixConfig(MethodConfig):
    archs = MAMBA1 | WITH_PEFT | VIM  # Mamba-2's in_proj also emits B, C and dt: no affix there
    num_virtual_tokens: int = 3  # P vectors per layer, prepended to the in_proj output
    # MambaPEFT's prefix_type: inner (inner_single_prefix, its Affix-tuning): P vectors (P, 2E) in in_proj's output;
    # outer (outer_single_prefix): P vectors (P, d) at the mixer's input, passed through in_proj. Mamba only.
    position: str = "inner"

    def __post_init__(self) -> None:
        if self.position not in PREFIX_POSITIONS:
            raise UserError(f"prefix: unknown position {self.position!r}; choose one of: {', '.join(PREFIX_POSITIONS)}")

    def option_refusal(self, arch: str) -> str | None:
        if self.position == "outer" and arch in VIM:  # Vim's mixers are scan directions behind a shared in_proj
            return "prefix position=outer is not offered on Vim; use position=inner (its Affix-tuning)"
        if self.position != "inner" and arch in WITH_PEFT:
            return f"prefix position={self.position} is Mamba's; on a Transformer use position=inner"
        return None


ADDITIONAL_SCAN_A_INITS = ("continue", "sst", "sony", "copy")


@dataclass
class AdditionalScanConfig(MethodConfig):
    archs = MAMBA | VIM
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

    def option_refusal(self, arch: str) -> str | None:
        if self.A_init is not None and arch in MAMBA2:
            return (
                "additional_scan A_init does not apply to Mamba-2 (its extra states decay with their head's A, SSD "
                "having one A per head); remove it (method.A_init=null)"
            )
        return None


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
    archs = MAMBA | VIM
    conv_state: bool = False  # also learn the causal conv's starting window P (E, K-1)


@dataclass
class StateOffsetHConfig(MethodConfig):
    archs = MAMBA | VIM
    rank: int | None = None  # null = full h' (E, N); r = low-rank h' = U V with U (E, r) zero-init, V (r, N)


@dataclass
class StateOffsetYConfig(MethodConfig):
    archs = MAMBA | VIM


PARTIAL_PARAMS = ("A", "D", "conv1d", "dt_bias")


@dataclass
class PartialConfig(MethodConfig):
    """MambaPEFT's partial tuning (its learnable_A, learnable_D, learnable_conv1d, learnable_bias): train chosen
    pretrained SSM parameters of every mixer in place (stateft/methods/partial.py)."""

    archs = MAMBA | VIM
    # A: A_log; D; conv1d: the causal conv's weight and bias; dt_bias: dt_proj.bias (Mamba-1) / dt_bias (Mamba-2)
    learnable: list[str] = field(default_factory=lambda: list(PARTIAL_PARAMS))

    def __post_init__(self) -> None:
        unknown = [p for p in self.learnable if p not in PARTIAL_PARAMS]
        if unknown or not self.learnable or len(set(self.learnable)) != len(self.learnable):
            raise UserError(
                f"partial: learnable={list(self.learnable)} must name distinct parameters among "
                f"{', '.join(PARTIAL_PARAMS)} (at least one)"
            )


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
    "partial": PartialConfig,
}
# methods that cannot be a part of compose: compose itself, full (it already trains every weight), and sdt / sdlora
# (their warm-up picks dimensions by training themselves alone)
NOT_COMPOSABLE = {
    "compose": "compose cannot hold a compose; list all the methods in one method.parts",
    "full": "full already trains every weight",
    "sdt": "its warm-up picks the dimensions by training sdt alone",
    "sdlora": "its warm-up picks the dimensions by training sdlora alone",
}
COMPOSABLE = tuple(name for name in METHOD_CONFIGS if name not in NOT_COMPOSABLE)


def _compose_post_init(self: Any) -> None:
    """Check the parts and turn each part's options (``method.<part>``, a dict) into its typed config; the options
    of methods that are not parts are dropped (null), so the recorded config holds the composition only."""
    parts = list(self.parts)
    if not parts:
        raise UserError(
            f"compose: method.parts is empty; name the methods to combine, e.g. method.parts=[lora,additional_scan] "
            f"(composable: {', '.join(COMPOSABLE)})"
        )
    for part in parts:
        if part in NOT_COMPOSABLE:
            raise UserError(f"compose: {part} cannot be a part ({NOT_COMPOSABLE[part]})")
        if part not in COMPOSABLE:
            raise UserError(f"compose: unknown part {part!r}; choose among: {', '.join(COMPOSABLE)}")
    repeated = sorted({p for p in parts if parts.count(p) > 1})
    if repeated:
        raise UserError(f"compose: part {repeated[0]} is listed twice in method.parts; list each method once")
    for name in COMPOSABLE:
        node = getattr(self, name)
        if name not in parts:
            setattr(self, name, None)
            continue
        if isinstance(node, MethodConfig):
            continue
        raw = {} if node is None else dict(node)
        if raw.get("name", name) != name:
            raise UserError(f"compose: method.{name} holds the options of {raw['name']!r}; drop its name")
        setattr(self, name, validate_method_cfg({**raw, "name": name}))


def _compose_part_configs(self: Any) -> dict[str, MethodConfig]:
    """``{part: its typed config}`` in the order of ``parts``."""
    return {part: getattr(self, part) for part in self.parts}


# compose: several methods at once (stateft/methods/compose.py). Its options: parts (the methods, in order; by
# default lora and additional_scan, as conf/method/compose.yaml) and one field per composable method holding that
# method's options (method.lora.r=8; null: the method's defaults), which conf/method/compose.yaml fills from
# conf/method/<part>.yaml. lr: the rate of a part whose own lr is null (each part's lr is its own AdamW group).
ComposeConfig = make_dataclass(
    "ComposeConfig",
    [("parts", list[str], field(default_factory=lambda: ["lora", "additional_scan"]))]
    + [(name, Any, field(default=None)) for name in COMPOSABLE],
    bases=(MethodConfig,),
    namespace={
        "archs": MAMBA | VIM,  # each part is checked against the model too (arch_refusal)
        "__post_init__": _compose_post_init,
        "part_configs": _compose_part_configs,
        "__module__": __name__,
    },
)
METHOD_CONFIGS["compose"] = ComposeConfig


# -- the SDT paper's deep-S4 methods (stateft/s4/peft.py; the SDT code's S4/run_s4.py), for model.arch s4d and s4 ----
# Registered after compose: none of them is a part of a composition.
S4 = frozenset(S4_ARCHS)
S4D = frozenset({"s4d"})  # SDT's choice of channels and states scores S4D's diagonal modes (as the SDT code)
S4_SELECT_BY = ("magnitude", "loss", "grad", "hybrid", "random")  # stateft/s4/choose.py
S4_MODES = ("hard", "soft")
S4_WARMUP_PARAMS = ("all", "ssm")


@dataclass
class S4FrozenConfig(MethodConfig):
    """The deep S4 as it is (the SDT code's ssm_method, lp_method and D_method all freeze)."""

    archs = S4
    lr: float | None = 5e-3  # nothing trains; kept so that optim.lr resolves


@dataclass
class S4FullConfig(MethodConfig):
    """Every parameter (encoder, SSMs, output linears, norms, decoder)."""

    archs = S4
    lr: float | None = 5e-3  # the SDT code's run_s4.py


@dataclass
class S4LoraConfig(MethodConfig):
    """LoRA on each block's output linear (the paper's "LoRA (Proj)") and, with ssm_rank, on its SSM too ("LoRA
    (S4+Proj)")."""

    archs = S4
    lr: float | None = 5e-3
    rank: int | None = 16  # W + B A on the output linears (the SDT code's lp_lora_rank); null: the linears frozen
    # C, log_A_real and A_imag (H, M) each + B A of this rank, log_dt trains (the SDT code's ssm_lora_rank, 4 there);
    # null: the SSM frozen
    ssm_rank: int | None = None
    train_D: bool = True  # D trains (the SDT code's D_method full; false: freeze)

    def __post_init__(self) -> None:
        if self.rank is None and self.ssm_rank is None:
            raise UserError(f"method {self.name}: rank and ssm_rank are both null; set one (nothing would train)")
        if self.ssm_rank is not None and self.ssm_rank < 1:
            raise UserError(f"method {self.name}: ssm_rank must be >= 1 or null, got {self.ssm_rank}")


@dataclass
class S4SDTConfig(MethodConfig):
    """SDT on S4: a warm-up picks channels and states of every S4D layer; C is zeroed outside the kept ones, the
    updated ones get sparse deltas on C and A, log_dt trains, and the output linears get a delta on the updated
    channels' columns (the SDT code's ssm_method ours, lp_method ours, our_mode hard)."""

    archs = S4D
    lr: float | None = 5e-3
    select_channels: int = 16  # channels kept per layer (C zeroed on the others)
    update_channels: int = 16  # of those, channels updated
    select_states: int = 8  # complex modes kept per kept channel
    update_states: int = 8  # of those, modes updated per updated channel
    # how the dimensions are chosen: magnitude (the paper's: warm-up, then contribution and change of A), loss
    # (the loss after zeroing each one), grad (one batch's gradient norms; every dimension kept), hybrid
    # (magnitude keeps, loss picks the updated), random
    select_by: str = "magnitude"
    # hard: the choice above; soft: dense deltas on every channel and state with L1 penalties instead (no warm-up)
    mode: str = "hard"
    select_penalty: float = 0.0  # soft: weight of |C| summed over every (channel, state) (drops states)
    update_penalty: float = 0.0  # soft: weight of the deltas' |.| summed (few entries move)
    warmup_steps: int = 20  # magnitude, hybrid: AdamW updates of the warm-up (the SDT code's warmup_epochs)
    warmup_lr: float | None = 0.01  # null: lr
    warmup_params: str = "all"  # all (every parameter; the SDT code's ssm_warmup_method full) | ssm (the S4D layers)
    train_D: bool = True  # D trains (the SDT code's D_method full; false: freeze)
    seed: int = 0  # select_by random: the choice's seed
    # filled by the choice: per layer {keep_channels, keep_states, update_channels, update_states}
    selection: list[Any] | None = None

    def __post_init__(self) -> None:
        counts = ("select_channels", "update_channels", "select_states", "update_states", "warmup_steps")
        for key in counts:
            if getattr(self, key) < 1:
                raise UserError(f"method {self.name}: {key} must be >= 1, got {getattr(self, key)}")
        for key, options in (("select_by", S4_SELECT_BY), ("mode", S4_MODES), ("warmup_params", S4_WARMUP_PARAMS)):
            if getattr(self, key) not in options:
                raise UserError(
                    f"method {self.name}: unknown {key} {getattr(self, key)!r}; choose one of: {', '.join(options)}"
                )
        for key in ("select_penalty", "update_penalty"):
            if not getattr(self, key) >= 0:
                raise UserError(f"method {self.name}: {key} must be >= 0, got {getattr(self, key)}")


@dataclass
class S4SDLoraConfig(S4SDTConfig):
    """SDLoRA on S4: the SSM part of s4_sdt, LoRA on the output linears (the SDT code's README recipe: the warm-up
    trains the SSMs only)."""

    rank: int = 16  # LoRA rank on the output linears (the SDT code's lp_lora_rank)
    warmup_params: str = "ssm"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.rank < 1:
            raise UserError(f"method {self.name}: rank must be >= 1, got {self.rank}")


METHOD_CONFIGS.update(
    {
        "s4_frozen": S4FrozenConfig,
        "s4_full": S4FullConfig,
        "s4_lora": S4LoraConfig,
        "s4_sdt": S4SDTConfig,
        "s4_sdlora": S4SDLoraConfig,
    }
)


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


def arch_refusal(cfg: MethodConfig, arch: str) -> str | None:
    """None when method config ``cfg`` and its options apply to a model of ``arch``; else the one line refusing it
    (a composition: the first part that does not apply, named as a part)."""
    if arch not in cfg.archs:
        return refusal(cfg.name, arch)
    if cfg.name == "compose":
        for part_cfg in cfg.part_configs().values():
            reason = arch_refusal(part_cfg, arch)
            if reason is not None:
                return f"compose part {reason}"
    return cfg.option_refusal(arch)


def methods_for(arch: str) -> list[str]:
    """The methods that apply to a model of ``arch`` (``model.arch``), in registry order."""
    return [name for name, cls in METHOD_CONFIGS.items() if arch in cls.archs]


def refusal(name: str, arch: str) -> str:
    """The one line that refuses method ``name`` on a model of ``arch``, naming the methods that apply there."""
    names = [a for a in ARCHS if a in METHOD_CONFIGS[name].archs]
    archs = " and ".join(names) if len(names) < 3 else f"{', '.join(names[:-1])} and {names[-1]}"
    return f"{name} applies to {archs} models, not to {arch}; the methods for {arch}: {', '.join(methods_for(arch))}"


__all__ = [
    "ARCHS",
    "COMPOSABLE",
    "METHOD_CONFIGS",
    "MethodConfig",
    "arch_refusal",
    "methods_for",
    "refusal",
    "validate_method_cfg",
]
