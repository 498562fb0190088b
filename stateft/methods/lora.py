"""LoRA (Hu et al., 2021) on the mixer's linears: W x + (alpha / r) B A dropout(x).

A linear is replaced by a ``LoRALinear`` that wraps it (``mixer.x_proj.base`` holds the frozen layer). A row block of
a linear can get its own LoRA: by default on Mamba-1 the dt, B and C blocks of ``x_proj`` each get one (as the
reference did), plus ``dt_proj``; on Mamba-2 ``in_proj`` and ``out_proj``. ``in_proj.x`` and ``in_proj.z`` are
MambaPEFT's LoRA on X and on Z (the halves of in_proj that feed the conv and the gate); ``conv1d`` its LoRA on the
causal conv's kernel (``ConvLoRA``). Trainable per target: A (r, in) Kaiming-uniform(a=sqrt 5), B (out_block, r)
zeros, so the model is unchanged at init. ``fold`` adds s B A into W and puts the base linear back
(``stateft.merge``).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrize

from stateft.methods.base import (
    MethodSpec,
    fan_in_uniform,
    freeze_all,
    init_generator,
    new_parameter,
    trainable_names,
)
from stateft.methods.configs import LoraConfig
from stateft.ops import recompute
from stateft.ops.layout import matmul_channels_first

DEFAULT_TARGETS = {
    "mamba1": ["x_proj.dt", "x_proj.B", "x_proj.C", "dt_proj"],
    "mamba2": ["in_proj", "out_proj"],
    "vim": ["x_proj"],  # each scan direction's x_proj (MambaPEFT's lora_x_proj / lora_x_proj_b on Vim)
}
DEFAULT_RANK = {
    "mamba1": 8,
    "mamba2": 16,
    "vim": 64,
}  # State-offset paper: LoRA r 8 (alpha 8) on Mamba-1, r 16 (alpha 16) on Mamba-2; MambaPEFT's dim 64 on Vim
WHOLE = "w"  # block key of a LoRA on the whole linear
CONV = "conv1d"  # the target of a LoRA on the causal conv's kernel (``ConvLoRA``)


class WrappedLinear(nn.Module):
    """A module around a frozen ``nn.Linear`` (``self.base``) that reads like it: what code reading a linear's
    attributes expects (the fast paths' ``weight`` / ``bias``, the sizes). LoRA's wrapper and the server's routed one
    (`stateft.serve.routed_lora`) are such modules."""

    @property
    def weight(self) -> Tensor:
        return self.base.weight

    @property
    def bias(self) -> Tensor | None:
        return self.base.bias

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features


class LoRALinear(WrappedLinear):
    """A frozen linear plus one low-rank update per output row block: blocks = {key: (start, end)}.

    In a Mamba-1 projection's place it offers ``channels_first`` (the mixer's fast path,
    ``stateft.models.mamba1.Projection``), not ``remakeable``: its dropout draws, so its output is kept for the
    backward rather than remade."""

    def __init__(
        self,
        base: nn.Linear,
        blocks: dict[str, tuple[int, int]],
        r: int,
        alpha: float,
        dropout: float,
        generator: torch.Generator,
    ) -> None:
        super().__init__()
        self.base = base
        self.blocks = dict(sorted(blocks.items(), key=lambda item: item[1]))
        self.scaling = alpha / r
        self.p = dropout
        self.lora_A = nn.ParameterDict()
        self.lora_B = nn.ParameterDict()
        for key, (start, end) in self.blocks.items():
            A = fan_in_uniform((r, base.in_features), base.in_features, generator, base.weight.device)
            self.lora_A[key] = new_parameter(A)
            self.lora_B[key] = new_parameter(torch.zeros(end - start, r, device=base.weight.device))

    def update_factors(self) -> tuple[Tensor, Tensor]:
        """All blocks' factors as one pair: A (k r, in) stacked, B (out, k r) block-diagonal, zero on rows no block
        covers, so the update is two matrix products whatever the number of blocks."""
        A = torch.cat(list(self.lora_A.values()), dim=0)
        rows, cursor = [], 0
        for key, (start, end) in self.blocks.items():
            B_k = self.lora_B[key]
            if start > cursor:
                rows.append(B_k.new_zeros(start - cursor, 0))
            rows.append(B_k)
            cursor = end
        if cursor < self.base.out_features:
            rows.append(A.new_zeros(self.base.out_features - cursor, 0))
        return A, torch.block_diag(*rows)

    def dropout(self, x: Tensor) -> tuple[Tensor, float]:
        """Inverted dropout on the update's input as (x with the dropped entries zeroed, the factor 1 / (1 - p) that
        the caller folds into A): one pass, a boolean mask kept for the backward. Where x is remade in the backward
        (`stateft.ops.recompute`), so is the output, and the A product keeps neither."""
        if not self.training or self.p == 0:
            return x, 1.0
        keep = torch.empty_like(x, dtype=torch.bool).bernoulli_(1.0 - self.p)  # one pass, a boolean mask
        out = torch.where(keep, x, 0.0)
        recompute.derive(out, x, lambda x_: torch.where(keep, x_, 0.0))
        return out, 1.0 / (1.0 - self.p)

    def forward(self, x: Tensor) -> Tensor:
        out = self.base(x)
        A, B = self.update_factors()
        xd, factor = self.dropout(x)
        update = F.linear(F.linear(xd, (A * factor).to(x.dtype)), (B * self.scaling).to(x.dtype))
        return out + update.to(out.dtype)

    def channels_first(self, x: Tensor) -> Tensor:
        """The same map, without the bias, for x (b in l) with the features first: W x + s B A dropout(x) as
        (b out l), three matrix products and no transposes (the Mamba-1 mixer's fast path calls this)."""
        A, B = self.update_factors()
        xd, factor = self.dropout(x)
        down = matmul_channels_first((A * factor).to(x.dtype), xd)
        update = matmul_channels_first((B * self.scaling).to(x.dtype), down)
        return matmul_channels_first(self.base.weight.to(x.dtype), x) + update


def _linear_blocks(mixer: nn.Module, linear: str) -> dict[str, tuple[int, int]]:
    """Named row blocks of a mixer linear: Mamba-1 x_proj's dt, B, C; in_proj's x and z halves (MambaPEFT's LoRA on
    X and on Z), rows [x, z] on Mamba-1 and [z, x, ...] on Mamba-2 (whose in_proj goes on with B, C and dt)."""
    mamba1 = hasattr(mixer, "dt_rank")
    if linear == "x_proj" and mamba1:
        R, N = mixer.dt_rank, mixer.d_state
        return {"dt": (0, R), "B": (R, R + N), "C": (R + N, R + 2 * N)}
    if linear == "in_proj":
        E = mixer.d_inner
        first, second = getattr(mixer, "in_proj_halves", ("x", "z") if mamba1 else ("z", "x"))
        return {first: (0, E), second: (E, 2 * E)}
    return {}


def _parse_targets(mixer: nn.Module, targets: list[str]) -> dict[str, dict[str, tuple[int, int]]]:
    """{linear name: {block key: row range}} for targets that name linears of ``mixer`` or their row blocks (the
    config's ``LORA_TARGETS`` for the architecture, without overlaps: ``LoraConfig`` checks them)."""
    plan: dict[str, dict[str, tuple[int, int]]] = {}
    for target in targets:
        linear, _, block = target.partition(".")
        if block:
            plan.setdefault(linear, {})[block] = _linear_blocks(mixer, linear)[block]
        else:
            plan.setdefault(linear, {})[WHOLE] = (0, getattr(mixer, linear).out_features)
    return plan


class ConvLoRA(nn.Module):
    """MambaPEFT's LoRA on the causal conv (its lora_conv1d): a parametrisation of ``conv1d.weight`` (C, 1, K) that
    returns W + s B A over the (C, K) kernel, A (r, K) Kaiming-uniform(a=sqrt 5), B (C, r) zeros, no dropout (it
    changes a kernel, not an input). Every reader of ``conv1d.weight`` (the fused conv, the decoding step) sees the
    sum."""

    def __init__(self, weight: Tensor, r: int, alpha: float, generator: torch.Generator) -> None:
        super().__init__()
        channels, _, K = weight.shape
        self.scaling = alpha / r
        self.lora_A = new_parameter(fan_in_uniform((r, K), K, generator, weight.device))
        self.lora_B = new_parameter(torch.zeros(channels, r, device=weight.device))

    def forward(self, weight: Tensor) -> Tensor:
        return weight + (self.scaling * (self.lora_B @ self.lora_A)).to(weight.dtype)[:, None, :]


def wrap_targets(mixer: nn.Module, targets: list[str], cfg: LoraConfig, generator: torch.Generator) -> None:
    """Wrap the targets (linears, or row blocks ``linear.block``) of ``mixer`` in place; ``conv1d``: a ``ConvLoRA``
    parametrisation of its weight."""
    if CONV in targets:
        conv = ConvLoRA(mixer.conv1d.weight, cfg.r, cfg.alpha, generator)
        parametrize.register_parametrization(mixer.conv1d, "weight", conv)
    for linear, blocks in _parse_targets(mixer, [t for t in targets if t != CONV]).items():
        setattr(mixer, linear, LoRALinear(getattr(mixer, linear), blocks, cfg.r, cfg.alpha, cfg.dropout, generator))


def apply(model: nn.Module, cfg: LoraConfig) -> list[str]:
    freeze_all(model)
    # per-architecture defaults filled into cfg itself, so adapter_config.json records the rank used
    if cfg.r is None:
        cfg.r = DEFAULT_RANK[model.config.arch]
    if cfg.alpha is None:
        cfg.alpha = float(cfg.r)
    targets = list(cfg.target_modules or DEFAULT_TARGETS[model.config.arch])
    generator = init_generator()
    holders = list(linear_holders(model))
    for target in targets:  # LORA_TARGETS names a target that no module holds: a bug, not a choice
        if not any(_holds(holder, target) for holder in holders):
            raise ValueError(f"lora target {target!r} is held by no module of this {model.config.arch} model")
    for holder in holders:
        wrap_targets(holder, [t for t in targets if _holds(holder, t)], cfg, generator)
    return trainable_names(model)


def linear_holders(model: nn.Module) -> Iterator[nn.Module]:
    """The modules whose linears LoRA targets: the mixers, or what a backbone names (``linear_holders``: Vim's blocks
    hold in_proj and out_proj, shared by both scan directions, and each direction its x_proj and dt_proj)."""
    return model.linear_holders() if hasattr(model, "linear_holders") else model.mixers()


def _holds(holder: nn.Module, target: str) -> bool:
    """Whether ``holder`` has the linear (or the conv) that ``target`` names."""
    if target == CONV:
        return isinstance(getattr(holder, CONV, None), nn.Conv1d)
    return isinstance(getattr(holder, target.partition(".")[0], None), nn.Linear | LoRALinear)


@torch.no_grad()
def merged_weight(layer: LoRALinear) -> Tensor:
    """W + s B A in W's dtype (summed in fp32): the map ``layer`` computes in eval mode, where dropout is off."""
    A, B = layer.update_factors()
    W = layer.base.weight
    return (W.float() + layer.scaling * (B.float() @ A.float())).to(W.dtype)


def fold(model: nn.Module) -> None:
    """Replace every ``LoRALinear`` of the mixers by its base linear holding W + s B A, and a ``ConvLoRA``'s conv
    weight by the sum it returns (``MethodSpec.fold``)."""
    for mixer in linear_holders(model):
        if hasattr(mixer, CONV) and parametrize.is_parametrized(mixer.conv1d, "weight"):
            if any(isinstance(p, ConvLoRA) for p in mixer.conv1d.parametrizations.weight):
                with torch.no_grad():
                    parametrize.remove_parametrizations(mixer.conv1d, "weight", leave_parametrized=True)
        for name, child in list(mixer.named_children()):
            if isinstance(child, LoRALinear):
                child.base.weight = nn.Parameter(merged_weight(child), requires_grad=False)
                setattr(mixer, name, child.base)


SPEC = MethodSpec(LoraConfig, apply, fold=fold)
