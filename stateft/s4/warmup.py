"""SDT's warm-up: a few AdamW updates of a copy of the model, whose change from the original and whose SSM
contributions then choose the dimensions (``stateft.s4.selection``); the copy is then dropped and the method is
applied to the original weights.

``params``: ``all`` (the SDT code's default ``ssm_warmup_method`` ``full``: every parameter) or ``ssm`` (its
``ssm``, the SDLoRA recipe of its README: the S4D layers' log_dt, A, C and D). The SDT code's optimiser
(``stateft.s4.adamw``), as in tuning.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

from torch import Tensor, nn

from stateft.errors import UserError
from stateft.methods.configs import S4_WARMUP_PARAMS as WARMUP_PARAMS
from stateft.s4.adamw import adamw_steps


def warm_up(
    model: nn.Module, loss_fn: Callable[[nn.Module], Tensor], steps: int, lr: float, params: str = "all"
) -> nn.Module:
    """A warmed deep copy of ``model`` (which is left as it was): ``steps`` updates of ``loss_fn(copy)``.

    ``model`` is a ``DeepS4`` (``ssms()`` lists its S4D layers)."""
    if params not in WARMUP_PARAMS:
        raise UserError(f"unknown warm-up params {params!r}; choose one of: {', '.join(WARMUP_PARAMS)}")
    if steps < 1:
        raise UserError(f"the SDT warm-up needs at least one step, got {steps}")
    work = copy.deepcopy(model)
    work.requires_grad_(params == "all")
    if params == "ssm":
        for ssm in work.ssms():
            ssm.requires_grad_(True)
    adamw_steps(work, loss_fn, steps, lr)
    return work
