"""The Mamba language-model shell shared by Mamba-1 and Mamba-2.

embedding -> n_layer pre-norm residual blocks ``h = h + mixer(RMSNorm(h))`` (residual kept in fp32)
-> final RMSNorm -> LM head tied to the embedding. Parameter names follow mamba_ssm's checkpoints
(``backbone.embedding``, ``backbone.layers.{i}.norm``, ``backbone.layers.{i}.mixer.*``, ``backbone.norm_f``).

Model-level slot: ``prompt``, a module with ``embeddings`` (P, d) prepended to the input embeddings at the start of a
sequence (prompt tuning); their outputs are dropped.

``backend`` (`stateft.ops.backend.Backend`): which implementation each op runs, decided once from ``model.scan_impl``
and the device; the model gives it to its mixers (`MambaLM.set_backend`) and decides again when it moves to another
device type (Lightning builds it on the CPU and moves it to the GPU).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import torch
from torch import Tensor, nn

from stateft.models.cache import MambaCache
from stateft.models.config import MambaConfig
from stateft.models.norm import RMSNorm
from stateft.ops import add_rms_norm
from stateft.ops.backend import Backend


def build_mixer(config: MambaConfig, backend: Backend) -> nn.Module:
    """The mixer class for ``config.arch``."""
    if config.arch == "mamba1":
        from stateft.models.mamba1 import Mamba1Mixer

        return Mamba1Mixer(config, backend)
    if config.arch == "mamba2":
        from stateft.models.mamba2 import Mamba2Mixer

        return Mamba2Mixer(config, backend)
    raise ValueError(f"unknown arch {config.arch!r}; choose mamba1 or mamba2")


class Block(nn.Module):
    """Pre-norm residual block: h + mixer(norm(h))."""

    def __init__(self, config: MambaConfig, backend: Backend) -> None:
        super().__init__()
        self.norm = RMSNorm(config.d_model, config.rms_norm_eps)
        self.mixer = build_mixer(config, backend)


class Backbone(nn.Module):
    def __init__(self, config: MambaConfig, backend: Backend) -> None:
        super().__init__()
        self.embedding = nn.Embedding(config.padded_vocab_size, config.d_model)
        self.layers = nn.ModuleList(Block(config, backend) for _ in range(config.n_layer))
        self.norm_f = RMSNorm(config.d_model, config.rms_norm_eps)


class MambaLM(nn.Module):
    """Mamba language model with adapter slots. ``forward`` for training/prefill, ``step`` for decoding."""

    def __init__(self, config: MambaConfig, backend: Backend | None = None) -> None:
        super().__init__()
        self.config = config
        backend = Backend() if backend is None else backend
        self.backbone = Backbone(config, backend)
        self.lm_head = nn.Linear(config.d_model, config.padded_vocab_size, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.backbone.embedding.weight
        self.prompt: nn.Module | None = None  # slot: prompt tuning
        self.name_or_path: str | None = None  # set by loading; stored in adapter configs
        self.backend = backend
        self.set_backend()  # for the device the parameters were made on

    @torch.no_grad()
    def reset_parameters(self, seed: int | None = None) -> None:
        """Random init (mamba_ssm's scheme); used for tiny test models and benchmarks."""
        if seed is not None:
            torch.manual_seed(seed)
        nn.init.normal_(self.backbone.embedding.weight, std=self.config.init_std)
        for mixer in self.mixers():
            mixer.reset_parameters()
        if not self.config.tie_embeddings:
            nn.init.normal_(self.lm_head.weight, std=self.config.init_std)

    def mixers(self) -> Iterator[nn.Module]:
        for layer in self.backbone.layers:
            yield layer.mixer

    def set_backend(self, backend: Backend | None = None, **request: Any) -> Backend:
        """Decide again which implementation every op runs, for the device the model is on, and give the result to
        every mixer. ``backend`` (default: the current one) with the fields of ``request`` replaced (``impl``,
        ``recompute``, ``settings``): ``model.set_backend(impl="ref")``, ``set_backend(settings=...)``. Returns it."""
        device = self.backbone.embedding.weight.device.type
        self.backend = replace(self.backend if backend is None else backend, **{**request, "device": device})
        for mixer in self.mixers():
            mixer.backend = self.backend
        return self.backend

    def _apply(self, fn, recurse=True):
        """``.to()`` / ``.cuda()`` / ...: after a move to another device type, the backend is decided again for it."""
        out = super()._apply(fn, recurse)
        if self.backbone.embedding.weight.device.type != self.backend.device:
            self.set_backend()
        return out

    def new_cache(self) -> MambaCache:
        """An empty cache; the first ``forward``/``step`` with it applies the start-of-sequence slots."""
        return MambaCache.empty(self.config.n_layer)

    def hidden_states(
        self, input_ids: Tensor, cache: MambaCache | None = None, lengths: Tensor | None = None
    ) -> Tensor:
        """input_ids (b l) -> final-norm hidden states (b l d) for the real tokens.

        With ``cache``: continue from it (or start a sequence if it has not started) and leave the end state in it.
        ``lengths`` (b,): the rows are right-padded to l; row i's state in ``cache`` is the one after its first
        lengths[i] tokens, as if it had run alone (the padding never enters a state or a conv window); hidden states
        past a row's length mean nothing.
        """
        fresh = cache is None or not cache.started
        h = self.backbone.embedding(input_ids)  # (b l d)
        n_virtual = 0
        if fresh and self.prompt is not None:
            virtual = self.prompt.embeddings.to(h.dtype)[None].expand(h.shape[0], -1, -1)  # (b P d)
            h = torch.cat([virtual, h], dim=1)
            n_virtual = virtual.shape[1]
        h = h.float()  # residual stream in fp32
        if lengths is not None:
            lengths = lengths + n_virtual
        y = None
        for i, layer in enumerate(self.backbone.layers):
            layer_cache = None if cache is None else cache.layers[i]
            h, x = self._add_norm(h, y, layer.norm)
            y = layer.mixer(x, layer_cache, fresh, lengths)
        if cache is not None:
            cache.started = True
        return self._add_norm(h, y, self.backbone.norm_f)[1][:, n_virtual:]

    def _add_norm(self, h: Tensor, y: Tensor | None, norm: RMSNorm) -> tuple[Tensor, Tensor]:
        """(h + y, norm(h + y)): the residual stream between mixers (h fp32), fused where the backend says."""
        return add_rms_norm(h=h, y=y, weight=norm.weight, eps=norm.eps, backend=self.backend)

    def forward(self, input_ids: Tensor, cache: MambaCache | None = None) -> Tensor:
        """input_ids (b l) -> logits (b l V_padded)."""
        return self.lm_head(self.hidden_states(input_ids, cache))

    def step(self, input_ids: Tensor, cache: MambaCache) -> Tensor:
        """One token per row: input_ids (b,) -> logits (b V_padded). Starts the sequence if the cache is new."""
        if not cache.started:
            self.hidden_states(input_ids[:, None][:, :0], cache)  # run the start-of-sequence slots on no real tokens
        h = self.backbone.embedding(input_ids).float()  # (b d)
        for i, layer in enumerate(self.backbone.layers):
            h = h + layer.mixer.step(layer.norm(h), cache.layers[i])
        return self.lm_head(self.backbone.norm_f(h))


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts; tied weights counted once (works on the meta device)."""
    total = trainable = 0
    for p in model.parameters():
        total += p.numel()
        if p.requires_grad:
            trainable += p.numel()
    return trainable, total


def format_parameter_summary(model: nn.Module) -> str:
    """peft's wording: ``trainable params: 6,402,048 || all params: 1,378,580,480 || trainable%: 0.4644``."""
    trainable, total = count_parameters(model)
    return f"trainable params: {trainable:,d} || all params: {total:,d} || trainable%: {100 * trainable / total:.4f}"
