"""Vision Mamba (Vim, Zhu et al. 2024) as a stateft backbone: the image classifier MambaPEFT tunes on VTAB-1k.

    x = patch_embed(image)                                   # (b M d), M = (img / patch)^2, row-major patches
    x = [x[:, :M//2], cls, x[:, M//2:]] + pos_embed          # the class token in the middle (L = M + 1)
    h = x; per layer: h = h + drop_path(mixer(RMSNorm(h)))   # residual stream in fp32 (pre-norm, as MambaLM)
    features = RMSNorm_f(h)[:, M//2]; logits = head(features)

The mixer is Vim's bidirectional Mamba-1 ("v2" bimamba, `BiMambaMixer`): one in_proj and one out_proj shared by
two directions, each with its own conv1d, x_proj, dt_proj, A_log and D (the released checkpoints' ``*_b`` tensors for
the backward one):

    xz = in_proj(h)                                          # (b L 2E)
    y_f = S6_f(xz)                                           # causal conv + selective scan, gated by silu(z)
    y_b = flip(S6_b(flip(xz)))                               # the same on the reversed sequence, flipped back
    out = out_proj((y_f + y_b) / 2)                          # / 2: Vim's if_devide_out (``divide_out``)

Each direction is a `stateft.models.mamba1.Mamba1Mixer` whose in_proj and out_proj are identities (`ScanDirection`):
it runs the same conv + scan (the op the backend picks: the Triton scan on a GPU, in both directions) and offers the
same adapter slots. ``mixers()`` yields the 2 n_layer directions (forward then backward per layer), so stateft's
methods attach to each direction as MambaPEFT's attach a copy per direction (``lora_x_proj`` / ``lora_x_proj_b``,
``A_log_scan_addi`` / ``A_b_log_scan_addi``...): a prefix (Affix-tuning) leads each direction's own scan, that is the
start of the image for the forward scan and its end for the backward one.

Model-level slot ``prompt``: ``embeddings`` (P, d), after the position embedding, the first ceil(P/2) before the
sequence and the rest after it (MambaPEFT's ``prefix_suffix`` prompts: each scan direction meets half of them before
the image); their outputs are dropped and the class token is read at its shifted position.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import torch
from torch import Tensor, nn

from stateft.models.config import MambaConfig
from stateft.models.mamba1 import Mamba1Mixer
from stateft.models.norm import RMSNorm
from stateft.ops import add_rms_norm
from stateft.ops.backend import Backend
from stateft.vision.config import VimConfig


class _Through(nn.Identity):
    """In a `ScanDirection`, the place of in_proj and out_proj: the mixer's input is already xz, its output y."""

    def reset_parameters(self) -> None:
        pass


def direction_config(config: VimConfig) -> MambaConfig:
    """The Mamba-1 numbers of one scan direction of a Vim block."""
    return MambaConfig(
        d_model=config.d_model, n_layer=config.n_layer, vocab_size=config.num_classes, arch="mamba1",
        d_state=config.d_state, d_conv=config.d_conv, expand=config.expand, dt_rank=config.dt_rank,
        rms_norm_eps=config.rms_norm_eps, conv_bias=config.conv_bias, bias=config.bias, dt_min=config.dt_min,
        dt_max=config.dt_max, dt_init_floor=config.dt_init_floor,
    )  # fmt: skip


class ScanDirection(Mamba1Mixer):
    """One direction of a Vim block: xz (b l 2E) -> silu(z)-gated S6 output y (b l E). A `Mamba1Mixer` without its
    projections (those are shared by both directions, `BiMambaMixer`): conv1d, x_proj, dt_proj, A_log, D and the
    adapter slots."""

    def __init__(self, config: MambaConfig, backend: Backend) -> None:
        super().__init__(config, backend)
        self.in_proj = _Through()
        self.out_proj = _Through()


class BiMambaMixer(nn.Module):
    """Vim's bidirectional mixer (module docstring): (b l d) -> (b l d)."""

    in_proj_halves = ("x", "z")  # in_proj's rows, as Mamba-1's: LoRA's row blocks in_proj.x / in_proj.z

    def __init__(self, config: VimConfig, backend: Backend) -> None:
        super().__init__()
        d, E = config.d_model, config.d_inner
        self.d_inner = E
        self.divide_out = config.divide_out
        self.in_proj = nn.Linear(d, 2 * E, bias=config.bias)
        self.forward_scan = ScanDirection(direction_config(config), backend)
        self.backward_scan = ScanDirection(direction_config(config), backend)
        self.out_proj = nn.Linear(E, d, bias=config.bias)

    @torch.no_grad()
    def reset_parameters(self) -> None:
        self.in_proj.reset_parameters()
        self.out_proj.reset_parameters()
        self.forward_scan.reset_parameters()
        self.backward_scan.reset_parameters()

    def directions(self) -> tuple[ScanDirection, ScanDirection]:
        return self.forward_scan, self.backward_scan

    def forward(self, hidden: Tensor) -> Tensor:
        xz = self.in_proj(hidden)  # (b l 2E)
        y = self.forward_scan(xz) + self.backward_scan(xz.flip(1)).flip(1)  # (b l E)
        if self.divide_out:
            y = y / 2
        return self.out_proj(y)


class VimBlock(nn.Module):
    def __init__(self, config: VimConfig, backend: Backend) -> None:
        super().__init__()
        self.norm = RMSNorm(config.d_model, config.rms_norm_eps)
        self.mixer = BiMambaMixer(config, backend)


class PatchEmbed(nn.Module):
    """A strided conv over the image, patches flattened row-major: (b C H W) -> (b M d)."""

    def __init__(self, config: VimConfig) -> None:
        super().__init__()
        self.img_size = config.img_size
        self.proj = nn.Conv2d(config.channels, config.d_model, kernel_size=config.patch_size, stride=config.stride)

    def forward(self, images: Tensor) -> Tensor:
        return self.proj(images).flatten(2).transpose(1, 2)


def drop_path(y: Tensor, rate: float, training: bool) -> Tensor:
    """Stochastic depth: each sample's branch output kept with probability 1 - rate, scaled by 1 / (1 - rate)."""
    if not training or rate == 0.0:
        return y
    keep = torch.empty(y.shape[0], *([1] * (y.dim() - 1)), device=y.device).bernoulli_(1.0 - rate)
    return y * (keep / (1.0 - rate)).to(y.dtype)


class VisionMamba(nn.Module):
    """Vim image classifier with adapter slots (module docstring). ``forward(images)`` -> logits (b num_classes)."""

    def __init__(self, config: VimConfig, backend: Backend | None = None) -> None:
        super().__init__()
        self.config = config
        backend = Backend() if backend is None else backend
        d = config.d_model
        self.patch_embed = PatchEmbed(config)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_embed = nn.Parameter(torch.zeros(1, config.num_patches + 1, d))
        self.cls_token._no_weight_decay = True
        self.pos_embed._no_weight_decay = True
        self.layers = nn.ModuleList(VimBlock(config, backend) for _ in range(config.n_layer))
        self.norm_f = RMSNorm(d, config.rms_norm_eps)
        self.head = nn.Linear(d, config.num_classes)
        # mixer j's output is dropped at rate linspace(0, drop_path_rate, n_layer)[j] (Vim's schedule)
        self.drop_rates = torch.linspace(0, config.drop_path_rate, config.n_layer, device="cpu").tolist()
        self.prompt: nn.Module | None = None  # slot: prompt tuning
        self.name_or_path: str | None = None  # set by loading; stored in adapter configs
        self.backend = backend
        self.set_backend()

    @torch.no_grad()
    def reset_parameters(self, seed: int | None = None) -> None:
        """Vim's random init: lecun-normal patch conv, trunc-normal class token and position embedding, mamba_ssm's
        mixer init, and a zero head (`reset_head`)."""
        if seed is not None:
            torch.manual_seed(seed)
        w = self.patch_embed.proj.weight
        fan_in = w[0].numel()
        nn.init.trunc_normal_(w, std=(1.0 / fan_in) ** 0.5 / 0.87962566103423978)
        nn.init.zeros_(self.patch_embed.proj.bias)
        nn.init.trunc_normal_(self.cls_token, std=self.config.init_std)
        nn.init.trunc_normal_(self.pos_embed, std=self.config.init_std)
        for layer in self.layers:
            layer.mixer.reset_parameters()
            layer.norm.weight.fill_(1.0)
        self.norm_f.weight.fill_(1.0)
        self.reset_head()

    @torch.no_grad()
    def reset_head(self) -> None:
        """A fresh task head: zeros, as mmpretrain's VisionTransformerClsHead starts (MambaPEFT's heads)."""
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    # -- the backbone contract -----------------------------------------------------------------------------------
    @property
    def lm_head(self) -> nn.Linear:
        """The classification head (the contract's name for the layer that maps features to outputs)."""
        return self.head

    def task_head(self) -> nn.Module:
        """What every method trains besides its own tensors: the head of the task's classes."""
        return self.head

    def mixers(self) -> Iterator[nn.Module]:
        """The scan directions, forward then backward per layer: the modules with adapter slots."""
        for layer in self.layers:
            yield from layer.mixer.directions()

    def linear_holders(self) -> Iterator[nn.Module]:
        """The modules whose linears LoRA may target (`stateft.methods.lora`): each block's mixer (in_proj and
        out_proj, shared by its two directions), then its directions (x_proj, dt_proj, conv1d)."""
        for layer in self.layers:
            yield layer.mixer
            yield from layer.mixer.directions()

    def set_backend(self, backend: Backend | None = None, **request: Any) -> Backend:
        """As `MambaLM.set_backend`: decide again for the device the parameters are on, give it to every direction."""
        device = self.pos_embed.device.type
        self.backend = replace(self.backend if backend is None else backend, **{**request, "device": device})
        for mixer in self.mixers():
            mixer.backend = self.backend
        return self.backend

    def _apply(self, fn, recurse=True):
        out = super()._apply(fn, recurse)
        if self.pos_embed.device.type != self.backend.device:
            self.set_backend()
        return out

    def embed(self, images: Tensor) -> tuple[Tensor, int, int]:
        """images (b C H W) -> the token sequence (b L' d) before the first block, the class token's position in it
        and the number of prompt tokens before the image (L' = L + P with a prompt)."""
        c = self.config
        if images.shape[-2:] != (c.img_size, c.img_size):
            raise ValueError(f"images of {tuple(images.shape[-2:])} pixels; this Vim takes {c.img_size}x{c.img_size}")
        x = self.patch_embed(images.to(self.patch_embed.proj.weight.dtype))  # (b M d)
        b, m = x.shape[0], c.cls_position
        cls = self.cls_token.to(x.dtype).expand(b, -1, -1)
        x = torch.cat([x[:, :m], cls, x[:, m:]], dim=1) + self.pos_embed.to(x.dtype)
        before = 0
        if self.prompt is not None:
            virtual = self.prompt.embeddings.to(x.dtype)[None].expand(b, -1, -1)  # (b P d)
            before = (virtual.shape[1] + 1) // 2
            x = torch.cat([virtual[:, :before], x, virtual[:, before:]], dim=1)
        return x, m + before, before

    def hidden_states(self, images: Tensor, cache: Any = None) -> Tensor:
        """images (b C H W) -> final-norm hidden states (b L d) of every position (prompt positions dropped)."""
        if cache is not None:
            raise NotImplementedError("Vim classifies whole images: it has no decoding cache")
        x, _, before = self.embed(images)
        return self._blocks(x)[:, before : before + self.config.num_patches + 1]

    def _blocks(self, x: Tensor) -> Tensor:
        h, y = x.float(), None  # residual stream in fp32
        for rate, layer in zip(self.drop_rates, self.layers):
            h, normed = add_rms_norm(h=h, y=y, weight=layer.norm.weight, eps=layer.norm.eps, backend=self.backend)
            y = drop_path(layer.mixer(normed), rate, self.training)
        return add_rms_norm(h=h, y=y, weight=self.norm_f.weight, eps=self.norm_f.eps, backend=self.backend)[1]

    def features(self, images: Tensor) -> Tensor:
        """images (b C H W) -> the class token's final-norm hidden state (b d)."""
        x, m, _ = self.embed(images)
        return self._blocks(x)[:, m]

    def forward(self, images: Tensor, cache: Any = None) -> Tensor:
        """images (b C H W) -> logits (b num_classes)."""
        if cache is not None:
            raise NotImplementedError("Vim classifies whole images: it has no decoding cache")
        features = self.features(images)
        return self.head(features.to(self.head.weight.dtype))

    def new_cache(self) -> Any:
        raise NotImplementedError("Vim classifies whole images: it does not decode")

    def step(self, input_ids: Tensor, cache: Any) -> Tensor:
        raise NotImplementedError("Vim classifies whole images: it does not decode")
