"""Train / validation / test protocols and the learning-rate-search subset."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

PROTOCOLS = ("clean", "paper")


def train_val_split(rows: Sequence[Any], val_fraction: float = 0.2, seed: int = 123) -> tuple[list, list]:
    """Split ``rows`` into (train, validation) the way ``datasets.Dataset.train_test_split(test_size, seed)`` does.

    Same permutation (``np.random.default_rng(seed).permutation``) and sizes (validation = ceil(fraction * n)), so the
    80/20 split of the clean protocol equals the one made with ``datasets`` by the SDT paper's code.
    """
    n = len(rows)
    n_val = math.ceil(val_fraction * n)
    perm = np.random.default_rng(seed).permutation(n)
    val_idx, train_idx = perm[:n_val], perm[n_val:]
    return [rows[int(i)] for i in train_idx], [rows[int(i)] for i in val_idx]


def subset(rows: Sequence[Any], size: int | None, seed: int = 123) -> list:
    """A seeded random subset of ``size`` rows (all rows when ``size`` is None or not smaller than the data)."""
    if size is None or size >= len(rows):
        return list(rows)
    if size <= 0:
        raise ValueError(f"subset_size must be positive, got {size}")
    perm = np.random.default_rng(seed).permutation(len(rows))[:size]
    return [rows[int(i)] for i in perm]
