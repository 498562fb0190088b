"""An S4 block: the SSM layer (S4D, or S4 with a DPLR state matrix: ``layer``) followed by its position-wise output
transform, on (B, L, H) sequences.

Two output styles (``style``):
- ``glu``, state-spaces' S4D block (``s4d.py``; the SDT code's "default" mode): y = S4D(u);
  y = dropout(GELU(y)); out = GLU(W y + b) with W (2H, H) (a kernel-1 Conv1d there, a Linear here: the same map);
- ``relu``, the SDT code's "theory" block of its synthetic experiment: out = ReLU(W S4D(u) + b) with W (H, H).
The linear map is ``output_linear`` in both, the module the PEFT methods put LoRA or column deltas on.
Dropout (glu only) drops whole channels for the whole sequence (the reference's DropoutNd / Dropout1d).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from stateft.errors import UserError
from stateft.s4.dplr import S4DPLR
from stateft.s4.s4d import S4D

STYLES = ("glu", "relu")
LAYERS = ("s4d", "s4")  # the SSM: S4D (diagonal, stateft.s4.s4d) or S4 (DPLR, stateft.s4.dplr)


class S4Block(nn.Module):
    """(B, L, H) -> (B, L, H); ``step`` (B, H) -> (B, H) with the S4D state."""

    def __init__(
        self,
        d_model: int,
        d_state: int,
        dropout: float = 0.0,
        style: str = "glu",
        A_init: str = "s4d_lin",
        layer: str = "s4d",
    ) -> None:
        super().__init__()
        if style not in STYLES:
            raise UserError(f"unknown S4 block style {style!r}; choose one of: {', '.join(STYLES)}")
        if layer not in LAYERS:
            raise UserError(f"unknown S4 layer {layer!r}; choose one of: {', '.join(LAYERS)}")
        if not 0.0 <= dropout < 1.0:
            raise UserError(f"S4 dropout must be in [0, 1), got {dropout}")
        self.style = style
        self.ssm = S4D(d_model, d_state, A_init=A_init) if layer == "s4d" else S4DPLR(d_model, d_state)
        self.dropout = nn.Dropout1d(dropout) if dropout > 0 and style == "glu" else nn.Identity()
        width = 2 * d_model if style == "glu" else d_model
        self.output_linear = nn.Linear(d_model, width)

    def pointwise(self, y: Tensor) -> Tensor:
        """The output transform of the SSM's output y (B, L, H) or (B, H) (position-wise)."""
        if self.style == "relu":
            return F.relu(self.output_linear(y))
        y = F.gelu(y)
        if y.dim() == 3:
            y = self.dropout(y.transpose(1, 2)).transpose(1, 2)
        return F.glu(self.output_linear(y), dim=-1)

    def forward(self, u: Tensor) -> Tensor:
        return self.pointwise(self.ssm(u.transpose(1, 2)).transpose(1, 2))

    def step(self, u_t: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        """One position (eval mode: dropout is off in ``step``)."""
        y, state = self.ssm.step(u_t, state)
        return self.pointwise(y), state
