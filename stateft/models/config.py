"""Architecture numbers of a Mamba language model: enough to build it (also on ``meta``) without a download."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal


@dataclass
class MambaConfig:
    """Mamba-1 (``arch="mamba1"``) or Mamba-2 (``arch="mamba2"``) language-model architecture.

    Names follow mamba_ssm's ``MambaConfig`` so its ``config.json`` maps one to one.
    """

    d_model: int
    n_layer: int
    vocab_size: int = 50277
    arch: Literal["mamba1", "mamba2"] = "mamba1"
    d_state: int = 16  # N
    d_conv: int = 4  # K
    expand: int = 2  # E = expand * d_model
    dt_rank: int | str = "auto"  # R = ceil(d_model / 16)
    pad_vocab_size_multiple: int = 8  # 50277 -> 50280
    rms_norm_eps: float = 1e-5
    conv_bias: bool = True
    bias: bool = False  # in_proj / out_proj bias
    tie_embeddings: bool = True
    # random-init ranges for dt (mamba_ssm's defaults); irrelevant when weights are loaded
    dt_min: float = 0.001
    dt_max: float = 0.1
    dt_init_floor: float = 1e-4
    init_std: float = 0.02  # std of the random embedding init (mamba_ssm: 0.02); irrelevant when weights are loaded
    # Mamba-2 only
    headdim: int = 64  # P
    ngroups: int = 1
    chunk_size: int = 256  # SSD chunk length Q (cost and rounding only, not the result)
    norm_before_gate: bool = False  # False: y = RMSNorm(y * silu(z)) (all state-spaces checkpoints)
    rmsnorm: bool = True  # gated RMSNorm after the scan; False: y * silu(z) without a norm
    dt_limit: tuple[float, float] = (0.0, math.inf)  # clamp of softplus(dt + dt_bias)

    @property
    def d_inner(self) -> int:
        return self.expand * self.d_model

    @property
    def dt_rank_value(self) -> int:
        return math.ceil(self.d_model / 16) if self.dt_rank == "auto" else int(self.dt_rank)

    @property
    def padded_vocab_size(self) -> int:
        m = self.pad_vocab_size_multiple
        return self.vocab_size if m <= 1 else ((self.vocab_size + m - 1) // m) * m

    @property
    def nheads(self) -> int:
        return self.d_inner // self.headdim

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> MambaConfig:
        """Build from a dict, rejecting unknown keys with the list of valid ones."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"unknown model config keys {unknown}; valid keys: {sorted(names)}")
        return cls(**values)
