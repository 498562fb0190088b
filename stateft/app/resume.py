"""``+resume=<run dir or last.ckpt>``: the checkpoint read as data and checked against this run before anything is
written; then the interrupted run's leftovers removed and its files carried into this run's directory.

A resumed run may write to the interrupted run's directory (``output_dir=<run>``) or to a new one (Hydra's
default). Either way it ends with what the uninterrupted run would have written: the checkpoint is the commit point
(``stateft.app.checkpoint``), the best adapter and the validation predictions as of the checkpoint are carried
over (``prepare``), and the logger files continue (``stateft.app.log_resume``). The interrupted run's directory
keeps its files; only the temporary files its killed writers left are removed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from stateft.app.files import copy_atomic, remove_leftovers
from stateft.errors import UserError

IDENTITY = ("method", "dataset", "model")  # a resume must train the same method on the same data and model
CARRIED = ("adapter", "predictions_validation.jsonl")  # files of the interrupted run a resumed run continues


def checkpoint_path(cfg: DictConfig) -> Path | None:
    """The checkpoint named by ``+resume=`` / ``+ckpt_path=`` (a .ckpt file or a run directory), or None."""
    value = cfg.get("resume") or cfg.get("ckpt_path")
    if value is None:
        return None
    path = Path(str(value)).expanduser()
    if path.is_dir():
        path = path / "checkpoints" / "last.ckpt"
    if not path.is_file():
        raise UserError(f"no checkpoint at {path} (pass a last.ckpt or the run directory that holds checkpoints/)")
    return path


@dataclass
class Resume:
    """What this run continues from."""

    checkpoint: Path
    run_dir: Path | None  # the directory of the run that wrote it (None: a .ckpt outside a run's checkpoints/)
    global_step: int
    record: dict[str, Any] = field(default_factory=dict)  # the checkpoint's stateft record
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)  # the trainable tensors it holds

    def check_tensors(self, model: Any, trainable: list[str]) -> None:
        """The checkpoint holds exactly this run's trainable tensors, with the same shapes (else: one line)."""
        params = dict(model.named_parameters())
        expected = {f"model.{name}": tuple(params[name].shape) for name in trainable}
        missing, unexpected = sorted(set(expected) - set(self.shapes)), sorted(set(self.shapes) - set(expected))
        wrong = [k for k in expected if k in self.shapes and self.shapes[k] != expected[k]]
        if missing or unexpected or wrong:
            detail = f"missing {missing[:2]}" if missing else f"unexpected {unexpected[:2]}" if unexpected else ""
            detail = detail or f"{wrong[0]} is {self.shapes[wrong[0]]}, this run's is {expected[wrong[0]]}"
            raise UserError(
                f"checkpoint {self.checkpoint} holds other trainable tensors than this run's method makes ({detail}); "
                "resume with the interrupted run's method options"
            )

    def prepare(self, out: Path) -> None:
        """Remove the temporary files the interrupted run's killed writers left, then carry its best adapter and
        validation predictions into ``out`` (when ``out`` is another directory)."""
        dirs = {self.checkpoint.parent, out, out / "checkpoints"}
        if self.run_dir is not None:
            dirs |= {self.run_dir, self.run_dir / "checkpoints"}
        for directory in sorted(dirs):
            remove_leftovers(directory)
        if self.run_dir is None or self.run_dir.resolve() == out.resolve():
            return
        for name in CARRIED:
            if (self.run_dir / name).exists():
                copy_atomic(self.run_dir / name, out / name)


def open_resume(cfg: DictConfig) -> Resume | None:
    """Read the checkpoint ``+resume=`` names (``weights_only``, memory-mapped: no tensor is read into memory) and
    refuse, in one line, one that cannot be read or that another method, dataset or model wrote."""
    from stateft.app.checkpoint import RECORD_KEY, read_checkpoint

    path = checkpoint_path(cfg)
    if path is None:
        return None
    checkpoint = read_checkpoint(path, mmap=True)
    record = checkpoint.get(RECORD_KEY)
    step = checkpoint.get("global_step")
    if not isinstance(record, dict):
        record = {}
    if isinstance(step, bool) or not isinstance(step, int):
        raise UserError(f"{path} is not a training checkpoint (no global_step); pass the last.ckpt a run wrote")
    shapes = {k: tuple(v.shape) for k, v in checkpoint["state_dict"].items() if hasattr(v, "shape")}
    run_dir = path.parent.parent if path.parent.name == "checkpoints" else None
    resume = Resume(path, run_dir, step, record, shapes)
    _check_same_run(resume, cfg)
    return resume


def run_identity(cfg: DictConfig) -> dict[str, str]:
    """The names a resumed run must share with the interrupted one (recorded in every checkpoint)."""
    return {key: str(cfg[key].name) for key in IDENTITY}


def _check_same_run(resume: Resume, cfg: DictConfig) -> None:
    saved = resume.record.get("run") or _run_config_identity(resume.run_dir)
    if not isinstance(saved, dict):
        return
    ours = run_identity(cfg)
    diff = [k for k in IDENTITY if k in saved and str(saved[k]) != ours[k]]
    if diff:
        theirs = ", ".join(f"{k}={str(saved[k])[:60]}" for k in diff)
        mine = ", ".join(f"{k}={ours[k]}" for k in diff)
        raise UserError(
            f"checkpoint {resume.checkpoint} is from a run with {theirs}, not {mine}: resume with that run's "
            "overrides, or drop +resume to start a new run"
        )


def _run_config_identity(run_dir: Path | None) -> dict[str, str] | None:
    """The identity in ``<run>/adapter/run_config.json`` (checkpoints written before they recorded it), read as
    plain JSON data; None when it is missing or unreadable."""
    if run_dir is None:
        return None
    path = run_dir / "adapter" / "run_config.json"
    try:
        config = json.loads(path.read_text()) if path.is_file() and path.stat().st_size < 16 << 20 else None
    except (OSError, ValueError):
        return None
    if not isinstance(config, dict):
        return None
    names = {k: config[k].get("name") for k in IDENTITY if isinstance(config.get(k), dict)}
    return {k: v for k, v in names.items() if isinstance(v, str)}
