"""The protocol a run followed: every choice that moves a reported number, in one flat record.

Written to ``metrics.json`` (``protocol``) and logged with the config (W&B, TensorBoard, CSV) under ``protocol``, so a
number can be traced to how it was obtained without the run's config: which recipe (``paper`` when an
``experiment=paper/*`` composed it), the learning rate, schedule, batch and epochs, the precision trained at, the
method with its options, and each data and metric choice the reference differs on (how prompts are tokenised,
out-of-class GLUE predictions, which Spider gold runs and under which semantics). A key the dataset does not have
(``gold_sql`` off Spider) is left out. Torch-free.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

# config keys recorded as they resolve (missing ones are skipped)
RECORDED = (
    "seed",
    "optim.lr",
    "optim.schedule",
    "optim.warmup_ratio",
    "optim.weight_decay",
    "dataset.batch_size",
    "trainer.max_epochs",
    "trainer.gradient_clip_val",
    "trainer.precision",
    "model.name",
    "model.dtype",
    "paper.exact",
    "dataset.name",
    "dataset.protocol",
    "dataset.prefix_tokenization",
    "dataset.drop_out_of_class",
    "dataset.gold_sql",
    "dataset.semantics",
    "dataset.max_length",
    "dataset.num_beams",
    "dataset.max_new_tokens",
)
_UNSET = object()


def protocol_record(cfg: DictConfig, precision: str | None = None) -> dict[str, Any]:
    """``{"recipe": "paper" | "stateft", "<key>": value, ..., "method": {...}}``; ``precision``: the precision the run
    actually trains at when it differs from ``trainer.precision`` (``paper.exact``)."""
    record: dict[str, Any] = {"recipe": "paper" if OmegaConf.select(cfg, "paper") is not None else "stateft"}
    # scoring a file with eval.py knows no recipe: only the dataset's choices
    if OmegaConf.select(cfg, "method") is None and OmegaConf.select(cfg, "optim") is None:
        record.pop("recipe")
    for key in RECORDED:
        value = OmegaConf.select(cfg, key, default=_UNSET)
        if value is not _UNSET:
            record[key] = OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
    if precision is not None:
        record["trainer.precision"] = precision
    if OmegaConf.select(cfg, "method") is not None:
        method = OmegaConf.to_container(cfg.method, resolve=True)
        method.pop("selection", None)  # the warm-up's per-layer choice: in the adapter's config, too long to record
        record["method"] = method
    return record


def scoring_record(dataset: Any) -> dict[str, Any]:
    """The data and metric choices of a dataset config alone (eval.py scoring a predictions file or an adapter)."""
    return protocol_record(OmegaConf.create({"dataset": dataset}))
