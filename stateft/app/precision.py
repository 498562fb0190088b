"""The training precision: the dtype of the frozen weights, of the trainable tensors and of AdamW's moments.

``trainer.precision`` takes Lightning's values. Two regimes:
- ``32-true`` (the default) and ``bf16-mixed`` (trainer=gpu) are Lightning's. The trainable tensors are fp32
  whatever ``model.dtype`` (the frozen base's storage dtype), so AdamW updates fp32 master weights with fp32 moments.
- ``bf16-true``: the reference runs' pure-bf16 training. SST and SSP load the model in bf16 and train it without
  autocast: the adapters are bf16 and AdamW's moments follow them. stateft does this itself rather than through
  Lightning: the base is stored in bf16 (``model.dtype`` becomes bfloat16), the method's trainable tensors are cast
  to bf16 once the method is applied, and Lightning runs at 32-true (no autocast, no conversion). A_log, D and
  Mamba-2's dt_bias stay fp32, and so does every tensor attached to them (the deltas sdt/sdlora put on A_log,
  additional_scan's new A_log columns), trainable or not, as mamba_ssm and the reference code keep them. Lightning's
  own bf16-true would cast those to bf16 too, and make bf16 the default dtype inside the forward.

``paper.exact=true`` (experiment=paper/*) trains at the precision of the released run config: bf16-true, or the
cell's ``paper.cell.<method>.<dataset>.precision`` where that config trained otherwise. It overrides
``trainer.precision`` (trainer=gpu's bf16-mixed included).

Only OmegaConf is imported at module level (`stateft.app.checks` uses this before torch is imported).
"""

from __future__ import annotations

import copy
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

PURE_BF16 = "bf16-true"


def requested_precision(cfg: DictConfig) -> str:
    """The precision the run trains at: ``trainer.precision``, or the reference run's with ``paper.exact=true``."""
    if OmegaConf.select(cfg, "paper.exact", default=False) is True:
        method = OmegaConf.select(cfg, "method.name")
        dataset = OmegaConf.select(cfg, "dataset.name")
        cell = OmegaConf.select(cfg, f"paper.cell.{method}.{dataset}.precision", default=None)
        return str(cell or PURE_BF16)
    return str(OmegaConf.select(cfg, "trainer.precision", default="32-true"))


def resolve_precision(cfg: DictConfig) -> DictConfig:
    """A copy of ``cfg`` with the precision settled: ``trainer.precision`` the one the run trains at and, under
    bf16-true, ``model.dtype`` bfloat16, so every record of the run (the adapter's base model, run_config.json, the
    loggers) says what was trained and eval.py loads the base as it was trained."""
    precision = requested_precision(cfg)
    out = copy.deepcopy(cfg)
    with open_dict(out):
        out.trainer.precision = precision
        if precision == PURE_BF16:
            out.model.dtype = "bfloat16"
    return out


def lightning_precision(precision: Any) -> str:
    """What Lightning is told: stateft carries out bf16-true itself, Lightning runs without autocast."""
    return "32-true" if str(precision) == PURE_BF16 else str(precision)


def cast_trainable_to_bf16(model: Any) -> None:
    """Under bf16-true, after ``apply_method``: the trainable tensors to bf16 (the base already is), A_log, D,
    dt_bias and the tensors attached to them kept fp32 (`stateft.models.loading.cast_model`)."""
    import torch

    from stateft.models.loading import cast_model

    cast_model(model, torch.bfloat16)
