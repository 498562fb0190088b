"""A deep S4 model: a linear encoder, ``n_layers`` S4 blocks with (pre)norm and residual, and a head.

For each layer, on x (B, L, H) (state-spaces' ``example.py``, ``S4Model``):
    z = LayerNorm(x) if prenorm else x;  z = dropout(S4Block(z));  x = x + z (residual) or z;
    x = LayerNorm(x) if postnorm.
Heads: ``regression`` maps every position, y (B, L, d_output); ``classification`` averages over the positions and
maps the mean, logits (B, d_output). ``d_input`` / ``d_output`` None means no encoder / no decoder (the sequence is
already d_model wide / the last block's output is the prediction).

The SDT code's synthetic ("theory") models are ``theory_config``: no encoder, decoder, norm or residual, ReLU
blocks, random A; a stack of ReLU(W (K * u + D u) + b).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from stateft.errors import UserError
from stateft.s4.block import LAYERS, STYLES, S4Block
from stateft.s4.s4d import A_INITS, check_sizes

HEADS = ("regression", "classification")


@dataclass
class S4ModelConfig:
    d_model: int = 64
    n_layers: int = 4
    d_state: int = 64  # real state size N per channel: N/2 complex modes
    d_input: int | None = None  # None: no encoder (inputs are d_model wide)
    d_output: int | None = None  # None: no decoder
    head: str = "regression"  # regression (per position) | classification (mean over positions)
    dropout: float = 0.0
    style: str = "glu"  # glu (GELU, Linear 2H, GLU) | relu (Linear H, ReLU)
    norm: bool = True  # LayerNorm per layer
    prenorm: bool = True  # before the block (else after the residual sum)
    residual: bool = True
    A_init: str = "s4d_lin"  # s4d_lin | random
    layer: str = "s4d"  # s4d (diagonal A) | s4 (S4's diagonal plus low-rank A, HiPPO-LegS init; A_init unused)

    def __post_init__(self) -> None:
        check_sizes(self.d_model, self.d_state)
        if not isinstance(self.n_layers, int) or self.n_layers < 1:
            raise UserError(f"S4 n_layers must be an integer >= 1, got {self.n_layers!r}")
        for name in ("d_input", "d_output"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise UserError(f"S4 {name} must be an integer >= 1 or None, got {value!r}")
        if self.head not in HEADS:
            raise UserError(f"unknown S4 head {self.head!r}; choose one of: {', '.join(HEADS)}")
        if self.head == "classification" and self.d_output is None:
            raise UserError("an S4 classification head needs d_output (the number of classes)")
        if self.style not in STYLES:
            raise UserError(f"unknown S4 block style {self.style!r}; choose one of: {', '.join(STYLES)}")
        if self.layer not in LAYERS:
            raise UserError(f"unknown S4 layer {self.layer!r}; choose one of: {', '.join(LAYERS)}")
        if self.A_init not in A_INITS:
            raise UserError(f"unknown S4D A_init {self.A_init!r}; choose one of: {', '.join(A_INITS)}")
        if not 0.0 <= self.dropout < 1.0:
            raise UserError(f"S4 dropout must be in [0, 1), got {self.dropout}")

    @property
    def arch(self) -> str:
        """The architecture name the method registry reads (``stateft.models.backbone.S4_ARCHS``): the layer's."""
        return self.layer

    def as_dict(self) -> dict:
        return asdict(self)


def theory_config(d_model: int, n_layers: int, d_state: int) -> S4ModelConfig:
    """The SDT code's synthetic models: ReLU blocks, random A, nothing else."""
    return S4ModelConfig(
        d_model=d_model, n_layers=n_layers, d_state=d_state, style="relu", norm=False, residual=False, A_init="random"
    )


class DeepS4(nn.Module):
    """(B, L, d_input or d_model) -> (B, L, d_output) (regression) or (B, d_output) (classification)."""

    def __init__(self, cfg: S4ModelConfig) -> None:
        super().__init__()
        self.config = cfg
        H = cfg.d_model
        self.encoder = nn.Linear(cfg.d_input, H) if cfg.d_input is not None else nn.Identity()
        self.layers = nn.ModuleList(
            S4Block(H, cfg.d_state, cfg.dropout, cfg.style, cfg.A_init, cfg.layer) for _ in range(cfg.n_layers)
        )
        self.norms = nn.ModuleList(nn.LayerNorm(H) if cfg.norm else nn.Identity() for _ in range(cfg.n_layers))
        self.dropouts = nn.ModuleList(
            nn.Dropout1d(cfg.dropout) if cfg.dropout > 0 else nn.Identity() for _ in range(cfg.n_layers)
        )
        self.decoder = nn.Linear(H, cfg.d_output) if cfg.d_output is not None else nn.Identity()

    def ssms(self) -> list:
        """The S4D layers, first to last (what SDT selects dimensions of)."""
        return [block.ssm for block in self.layers]

    def _check_input(self, x: Tensor, dims: int) -> None:
        width = self.config.d_input or self.config.d_model
        if x.dim() != dims or x.shape[-1] != width:
            shape = "(batch, length, {})" if dims == 3 else "(batch, {})"
            raise ValueError(f"DeepS4 expects input {shape.format(width)}, got {tuple(x.shape)}")

    def _layer(self, i: int, x: Tensor, block_fn) -> Tensor:
        """One residual layer around ``block_fn`` (the block's forward or one step of it)."""
        cfg = self.config
        z = self.norms[i](x) if cfg.prenorm else x
        z = block_fn(z)
        if z.dim() == 3:
            z = self.dropouts[i](z.transpose(1, 2)).transpose(1, 2)
        x = x + z if cfg.residual else z
        return x if cfg.prenorm else self.norms[i](x)

    def forward(self, x: Tensor) -> Tensor:
        self._check_input(x, 3)
        x = self.encoder(x)
        for i, block in enumerate(self.layers):
            x = self._layer(i, x, block)
        if self.config.head == "classification":
            x = x.mean(dim=1)
        return self.decoder(x)

    def loss(self, x: Tensor, y: Tensor) -> Tensor:
        """The head's training loss on a batch: MSE against targets y like the output (regression), cross-entropy
        against class indices y (B,) (classification)."""
        pred = self(x)
        if self.config.head == "classification":
            return F.cross_entropy(pred, y)
        return F.mse_loss(pred, y)

    def initial_state(self, batch: int) -> list[Tensor]:
        """Zero states, one (B, H, M) complex per layer."""
        return [block.ssm.initial_state(batch) for block in self.layers]

    def step(self, x_t: Tensor, states: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
        """One position of a regression model: x_t (B, d_input) -> (B, d_output), in eval mode (no dropout)."""
        if self.config.head != "regression":
            raise UserError("DeepS4.step needs a regression head (a classification head pools the whole sequence)")
        self._check_input(x_t, 2)
        x = self.encoder(x_t)
        new_states = []
        for i, block in enumerate(self.layers):

            def one_step(z: Tensor, block=block, state=states[i]) -> Tensor:
                y, next_state = block.step(z, state)
                new_states.append(next_state)
                return y

            x = self._layer(i, x, one_step)
        return self.decoder(x), new_states
