"""Running one Hydra job: validate, pick a GPU, run, and keep a sweep going when one job fails."""

from __future__ import annotations

import logging
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from stateft.app.checks import validate_cfg
from stateft.app.failures import show_traceback, user_message
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


def run_job(cfg: DictConfig, job: Callable[[DictConfig], dict[str, Any]]) -> float | None:
    """Run ``job(cfg)`` (``train`` or ``evaluate``). A single run prints a user-caused failure (a UserError, a full
    disk, a damaged or non-UTF-8 file: ``stateft.app.failures``) as one ``error:`` line and exits with code 2; a bug
    keeps its traceback. In a multirun any failure is written to ``<job folder>/error.txt``, reported in one line, and
    the sweep goes on."""
    multirun = _is_multirun()
    out = Path(cfg.output_dir)
    try:
        validate_cfg(cfg)
        if not cfg.get("dry_run"):
            from stateft.app.devices import check_devices

            check_devices(cfg)
        if cfg.get("gpu_pool") is not None:
            from stateft.app.gpu_pool import acquire_gpu

            gpu = acquire_gpu(cfg.gpu_pool, out.parent / ".gpu_locks")
            print(f"job on GPU {gpu}")
        if not cfg.get("dry_run"):
            lightning_info_to_stdout()
        return metric_value(job(cfg), cfg.get("optimized_metric"))
    except UserError as err:
        if not multirun:
            _exit_with(str(err))
        _record_failure(out, f"error: {err}\n")
    except Exception as err:
        message = user_message(err)
        if not multirun:
            if message is None or show_traceback():
                raise
            _exit_with(message + _resume_hint(out, err))
        _record_failure(out, traceback.format_exc() + (f"error: {message}\n" if message else ""))
        print(f"job failed ({type(err).__name__}: {err}); the sweep goes on", file=sys.stderr)
    return None


def lightning_info_to_stdout() -> None:
    """Lightning's console lines (seed, devices, "Trainer.fit stopped") go to stdout with the rest of the run's
    progress, so stderr holds warnings and errors only: a failure reads as one ``error:`` line there."""
    import lightning  # noqa: F401  (its import adds the console handlers moved here; the job imports it anyway)

    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        for handler in logging.getLogger(name).handlers:
            if type(handler) is logging.StreamHandler:
                handler.setStream(sys.stdout)


def _exit_with(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def _resume_hint(out: Path, err: BaseException) -> str:
    """A run stopped by an I/O error keeps its last checkpoint: say how to continue from it."""
    if isinstance(err, OSError) and (out / "checkpoints" / "last.ckpt").is_file():
        return f" (+resume={out} continues from its last checkpoint)"
    return ""


def _record_failure(out: Path, text: str) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / "error.txt").write_text(text)
    except OSError as err:  # a full disk cannot take error.txt either: the sweep still goes on
        print(f"job failed; cannot write {out / 'error.txt'} ({err.strerror or err}):", file=sys.stderr)
        print(text.rstrip().splitlines()[-1] if text.strip() else "", file=sys.stderr)
        return
    print(f"job failed: details in {out / 'error.txt'}", file=sys.stderr)
