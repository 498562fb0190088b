"""``paper.exact=true``: train as the released runs did, beyond the table's numbers.

Two things change (each one flag away without ``paper.exact`` too):
- the precision: the released configs' (``trainer.precision=bf16-true``, or a cell's own; `stateft.app.precision`);
- Additional-scan on Mamba-1 takes SST's init of the new decays (``method.A_init=sst``: the raw value 16.0, see
  `stateft.methods.additional_scan`) unless ``method.A_init`` is given. Every released Additional-scan run is SST's
  and on Mamba-1; Mamba-2's extra states have no A of their own, so nothing changes there.
Torch-free: `stateft.app.checks` and the dry run use it before torch is imported.
"""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf, open_dict

from stateft.app.precision import resolve_precision

# (method, architecture) -> the method options the released runs used where stateft's default differs
RELEASED_METHOD_OPTIONS = {("additional_scan", "mamba1"): {"A_init": "sst"}}


def is_exact(cfg: DictConfig) -> bool:
    return OmegaConf.select(cfg, "paper.exact", default=False) is True


def resolve_exact(cfg: DictConfig) -> DictConfig:
    """A copy of ``cfg`` with the precision settled and, under ``paper.exact``, the released method options
    filled in where the config leaves them null."""
    out = resolve_precision(cfg)
    if not is_exact(out):
        return out
    key = (OmegaConf.select(out, "method.name"), OmegaConf.select(out, "model.arch"))
    with open_dict(out):
        for option, value in RELEASED_METHOD_OPTIONS.get(key, {}).items():
            if OmegaConf.select(out.method, option) is None:
                out.method[option] = value
    return out
