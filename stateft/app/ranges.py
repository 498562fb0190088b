"""Value ranges of the config's numeric and choice keys, checked at start-up (before torch is imported).

A key absent from the composed config (``dataset.timeout`` outside Spider, ``method.r`` outside LoRA) is skipped.
A bad value ends the program with one line naming the key, what it must be and what was given.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig, OmegaConf

from stateft.errors import UserError

_ABSENT = object()


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


# each rule: (accepts the value, what the value must be)
Rule = tuple[Callable[[Any], bool], str]


def int_at_least(low: int, null: bool = False) -> Rule:
    text = f"an integer >= {low}" + (" or null" if null else "")
    return (lambda v: (null and v is None) or (_is_int(v) and v >= low)), text


def number_above(low: float, null: bool = False) -> Rule:
    text = f"a finite number > {low:g}" + (" or null" if null else "")
    return (lambda v: (null and v is None) or (_is_number(v) and v > low)), text


def number_in(low: float, high: float, high_open: bool = False, null: bool = False) -> Rule:
    bracket = ")" if high_open else "]"
    text = f"a number in [{low:g}, {high:g}{bracket}" + (" or null" if null else "")

    def ok(v: Any) -> bool:
        if null and v is None:
            return True
        return _is_number(v) and low <= v and (v < high if high_open else v <= high)

    return ok, text


def choice(*options: str) -> Rule:
    return (lambda v: v in options), "one of: " + ", ".join(options)


EPOCHS: Rule = (lambda v: v is None or (_is_int(v) and (v >= 1 or v == -1))), "an integer >= 1, or -1 (no limit)"
STEPS: Rule = (lambda v: v is None or (_is_int(v) and (v >= 1 or v == -1))), "an integer >= 1, or -1 (no limit)"
# Lightning's limit_*_batches: a fraction of the batches (float in [0, 1]) or a number of batches (int >= 0)
BATCH_LIMIT: Rule = (
    lambda v: v is None or (_is_int(v) and v >= 0) or (isinstance(v, float) and 0.0 <= v <= 1.0),
    "a fraction in [0.0, 1.0] or a number of batches >= 0",
)
FAST_DEV_RUN: Rule = (lambda v: isinstance(v, bool) or (_is_int(v) and v >= 0)), "true, false or an integer >= 0"
BETAS: Rule = (
    lambda v: isinstance(v, (list, tuple)) and len(v) == 2 and all(_is_number(b) and 0 <= b < 1 for b in v),
    "two numbers in [0, 1), e.g. [0.9,0.999]",
)
SEED: Rule = (lambda v: _is_int(v) and v >= 0), "an integer >= 0"

RULES: dict[str, Rule] = {
    # learning-rate search first: trainer.max_epochs and dataset.subset_size take their values from these
    "lr_grid.subset_size": int_at_least(1),
    "lr_grid.epochs": int_at_least(1),
    "seed": SEED,
    "samples_per_validation": int_at_least(0),
    # data
    "dataset.batch_size": int_at_least(1),
    "dataset.eval_batch_size": int_at_least(1),
    "dataset.max_length": int_at_least(1),
    "dataset.num_beams": int_at_least(1),
    "dataset.max_new_tokens": int_at_least(1),
    "dataset.num_workers": int_at_least(0),
    "dataset.subset_size": int_at_least(1, null=True),
    "dataset.max_eval_examples": int_at_least(1, null=True),
    "dataset.seed": SEED,
    "dataset.timeout": number_above(0),
    "dataset.max_rows": int_at_least(1),
    # training loop
    "trainer.max_epochs": EPOCHS,
    "trainer.min_epochs": int_at_least(0, null=True),
    "trainer.max_steps": STEPS,
    "trainer.num_nodes": int_at_least(1),
    "trainer.accumulate_grad_batches": int_at_least(1),
    "trainer.gradient_clip_val": (lambda v: v is None or (_is_number(v) and v >= 0), "a number >= 0 or null"),
    "trainer.check_val_every_n_epoch": int_at_least(1, null=True),
    "trainer.log_every_n_steps": int_at_least(0),
    "trainer.num_sanity_val_steps": int_at_least(-1),
    "trainer.limit_train_batches": BATCH_LIMIT,
    "trainer.limit_val_batches": BATCH_LIMIT,
    "trainer.limit_test_batches": BATCH_LIMIT,
    "trainer.fast_dev_run": FAST_DEV_RUN,
    # optimiser
    "optim.weight_decay": (lambda v: _is_number(v) and v >= 0, "a finite number >= 0"),
    "optim.eps": number_above(0),
    "optim.betas": BETAS,
    "optim.warmup_ratio": number_in(0.0, 1.0),
    "optim.schedule": choice("linear", "constant", "cosine"),
    "checkpoint.every_n_train_steps": int_at_least(0),
    "checkpoint.mode": choice("min", "max"),
    # method options shared by several methods (each method's own checks: stateft/methods/configs.py)
    "method.lr": number_above(0, null=True),
    "method.warmup_lr": number_above(0, null=True),
    "method.r": int_at_least(1, null=True),
    "method.rank": int_at_least(1, null=True),
    "method.n": int_at_least(1, null=True),
    "method.num_virtual_tokens": int_at_least(1),
    "method.lora_r": int_at_least(1),
    "method.alpha": number_above(0, null=True),
    "method.lora_alpha": number_above(0),
    "method.dropout": number_in(0.0, 1.0, high_open=True),
    "method.lora_dropout": number_in(0.0, 1.0, high_open=True),
    # model architecture (random-init models are built from these; pretrained ones must agree with them)
    **{
        f"model.{key}": int_at_least(1)
        for key in (
            "d_model",
            "n_layer",
            "vocab_size",
            "d_state",
            "d_conv",
            "expand",
            "headdim",
            "ngroups",
            "chunk_size",
            "pad_vocab_size_multiple",
        )
    },
    "model.init_std": number_above(0),
}


def check_ranges(cfg: DictConfig) -> None:
    """Every key of ``RULES`` present in ``cfg`` holds an accepted value; else a one-line UserError."""
    for key, (ok, text) in RULES.items():
        value = OmegaConf.select(cfg, key, default=_ABSENT, throw_on_missing=False)
        if value is _ABSENT:
            continue
        if OmegaConf.is_config(value):
            value = OmegaConf.to_container(value, resolve=True)
        if not ok(value):
            raise UserError(f"{key} must be {text}, got {value!r}")
