"""Recurrent decoding cache: per layer, the causal conv's input window and the SSM state."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor


@dataclass
class LayerCache:
    """conv: the last K-1 conv inputs (b c K-1); ssm: the SSM state, fp32 ((b E N) Mamba-1, (b H P N) Mamba-2)."""

    conv: Tensor | None = None
    ssm: Tensor | None = None


@dataclass
class MambaCache:
    """Cache for the whole model. ``started`` is False until the first forward/step has run: only then do the
    start-of-sequence slots (prompt, prefix, initial state) apply."""

    layers: list[LayerCache] = field(default_factory=list)
    started: bool = False

    @classmethod
    def empty(cls, n_layer: int) -> MambaCache:
        return cls(layers=[LayerCache() for _ in range(n_layer)])

    @classmethod
    def cat(cls, caches: list[MambaCache]) -> MambaCache:
        """The rows of several started caches, one after the other (prompts prefilled in groups, decoded as one
        batch)."""
        layers = [
            LayerCache(
                conv=torch.cat([c.layers[i].conv for c in caches]), ssm=torch.cat([c.layers[i].ssm for c in caches])
            )
            for i in range(len(caches[0].layers))
        ]
        return cls(layers=layers, started=True)

    def reorder(self, index: Tensor) -> None:
        """Select batch rows (beam search): index (b',) into the batch dimension. With as many rows as before the
        rows are copied into the same tensors (a recorded decoding step reads fixed buffers: `decode_graph`)."""
        for layer in self.layers:
            for name in ("conv", "ssm"):
                old = getattr(layer, name)
                new = old.index_select(0, index)
                if new.shape == old.shape:
                    old.copy_(new)
                else:
                    setattr(layer, name, new)
