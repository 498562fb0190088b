"""Running one Hydra job: validate, pick a GPU, run, and keep a sweep going when one job fails."""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from stateft.app.checks import validate_cfg
from stateft.errors import UserError


def _is_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def metric_value(metrics: dict[str, Any], name: str | None) -> float | None:
    """The value a sweeper optimises (``optimized_metric``), if the run produced it."""
    if not name:
        return None
    for key in (name, name + "_best", "last_" + name):
        if isinstance(metrics.get(key), (int, float)):
            return float(metrics[key])
    return None


def run_job(cfg: DictConfig, task: Callable[[DictConfig], dict[str, Any]]) -> float | None:
    """Run ``task(cfg)``. A single run prints a UserError as one line (exit 2); in a multirun any failure is written
    to ``<job>/error.txt``, reported in one line, and the sweep goes on."""
    multirun = _is_multirun()
    out = Path(cfg.output_dir)
    try:
        validate_cfg(cfg)
        if cfg.get("gpu_pool") is not None:
            from stateft.app.gpu_pool import acquire_gpu

            gpu = acquire_gpu(cfg.gpu_pool, out.parent / ".gpu_locks")
            print(f"job on GPU {gpu}")
        return metric_value(task(cfg), cfg.get("optimized_metric"))
    except UserError as err:
        if not multirun:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)
        _record_failure(out, f"error: {err}\n")
    except Exception as err:
        if not multirun:
            raise
        _record_failure(out, traceback.format_exc())
        print(f"job failed ({type(err).__name__}: {err}); the sweep goes on", file=sys.stderr)
    return None


def _record_failure(out: Path, text: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "error.txt").write_text(text)
    print(f"job failed: details in {out / 'error.txt'}", file=sys.stderr)
