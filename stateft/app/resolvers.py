"""OmegaConf resolvers used by the configs (registered on import; torch-free)."""

from __future__ import annotations

import math

from omegaconf import OmegaConf


def lr_ladder(low: float, high: float) -> str:
    """The papers' learning-rate grid {1, 2, 4} x 10^k within [low, high], as a Hydra sweep string.

    ``lr_ladder(1e-5, 0.4)`` -> ``"1e-05,2e-05,4e-05,...,0.2,0.4"`` (15 points).
    """
    low, high = float(low), float(high)
    if not 0 < low <= high:
        raise ValueError(f"lr_grid range must satisfy 0 < min <= max, got min={low} max={high}")
    values = []
    for k in range(math.floor(math.log10(low)) - 1, math.ceil(math.log10(high)) + 1):
        for mantissa in (1, 2, 4):
            value = float(f"{mantissa}e{k}")  # parse, do not multiply: 4 * 10**-5 is 4.0000000000000003e-05
            if low * (1 - 1e-9) <= value <= high * (1 + 1e-9):
                values.append(value)
    return ",".join(repr(v) for v in values)


def paper_method(name: str, rank: int | None) -> str:
    """The key of a method in the papers' learning-rate table: low-rank State-offset Tuning has its own row."""
    return f"{name}_lowrank" if name == "state_offset_h" and rank is not None else name


def dir_suffix(overrides: str) -> str:
    """``"_" + overrides`` for a run directory name, or nothing when the command line overrides nothing."""
    return f"_{overrides}" if overrides else ""


def register() -> None:
    """Register the resolvers once (idempotent)."""
    for name, fn in (("lr_ladder", lr_ladder), ("dir_suffix", dir_suffix), ("paper_method", paper_method)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)


register()
