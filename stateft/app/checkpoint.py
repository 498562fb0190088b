"""``checkpoints/last.ckpt``: what a resume continues from, when it is written, and how it is read back.

The checkpoint is the commit point of a run. Everything a run writes between two checkpoints (the best adapter, the
validation predictions, logger rows) is either counted by the next checkpoint or redone by a run resumed from the
previous one, so a kill at any moment loses nothing and duplicates nothing:

- it is *taken* where Lightning's restart logic continues exactly: after an optimizer step that no validation
  follows (every ``every_n_train_steps`` steps), and after each epoch's validation;
- it is *written* once that step's or epoch's logging is done (at the start of the next batch or epoch, or at the
  end of training), after the loggers have flushed, and records how many rows each CSV log had then;
- it is written to a temporary file, synced and renamed (``AtomicCheckpointIO``), and read back with
  ``weights_only=True`` (``read_checkpoint``): it holds tensors, numbers, strings, lists and dicts only.

Besides Lightning's state (adapter tensors, optimizer and scheduler state, loop progress, callbacks' state, the
module's random state) it holds a ``stateft`` record: the run's method, dataset and model (a resume with others is
refused), the CSV row counts, the W&B run id, the partial sums of the epoch's on-epoch metrics and of the module's
epoch loss (so a mid-epoch resume ends the epoch with the same ``train/loss_epoch`` and printed loss), and the last
training metrics, validation metrics and epoch losses (a run resumed from its final checkpoint trains nothing and
still reports them).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.trainer.connectors.logger_connector.result import _ResultMetric

from stateft.app.log_resume import csv_row_count
from stateft.atomic import replacing
from stateft.errors import UserError

RECORD_KEY = "stateft"  # the checkpoint entry LastCheckpoint adds beside Lightning's


def read_checkpoint(path: Path, mmap: bool = False, map_location: Any = "cpu") -> dict[str, Any]:
    """A checkpoint loaded with ``weights_only=True`` (tensors and plain data; no object is unpickled). A missing,
    truncated or corrupt file, or one holding anything else, is a one-line UserError."""
    import pickle

    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except FileNotFoundError:
        raise UserError(
            f"no checkpoint at {path} (pass a last.ckpt or the run directory that holds checkpoints/)"
        ) from None
    except pickle.UnpicklingError:  # what weights_only refuses (an object to build) or cannot parse
        raise UserError(
            f"checkpoint {path} is refused: it is damaged or holds objects other than tensors and plain data "
            "(checkpoints are read with weights_only=True); resume from an intact last.ckpt that stateft wrote"
        ) from None
    except Exception as err:  # truncated or damaged: torch reports it in many ways
        if mmap:  # read it again without mmap: some file systems cannot map, and the reason is clearer
            return read_checkpoint(path, mmap=False, map_location=map_location)
        reason = str(err).strip().splitlines()[0][:120] if str(err).strip() else type(err).__name__
        if isinstance(err, OSError):  # torch's reader seeking past the end of a cut file: EINVAL says nothing
            reason = "the file ends early or its archive is damaged"
        raise UserError(
            f"checkpoint {path} cannot be read ({reason}): it is truncated or corrupt; resume from an intact "
            "last.ckpt or start the run again without +resume"
        ) from None
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        raise UserError(f"{path} is not a Lightning checkpoint (no state_dict); pass the last.ckpt a run wrote")
    return checkpoint


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes checkpoints to a temporary file in the same folder, synced, then renamed: a kill never leaves half a
    file. Reads them with ``weights_only=True`` whatever the caller asks."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        with replacing(Path(path)) as tmp, open(tmp, "wb") as handle:
            torch.save(checkpoint, handle)

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        return read_checkpoint(Path(path), map_location=map_location or "cpu")


class LastCheckpoint(L.Callback):
    """``last.ckpt`` every ``every_n_train_steps`` optimizer steps and after every epoch (see the module docstring).

    ``run``: the run's identity (method, dataset and model names) recorded for the resume check.
    """

    def __init__(self, path: Path, every_n_train_steps: int = 0, run: dict[str, str] | None = None) -> None:
        self.path, self.every, self.run = Path(path), every_n_train_steps, dict(run or {})
        self._staged: tuple[dict[str, Any], dict[str, Any] | None] | None = None
        self._restored: dict[str, Any] = {}  # the stateft record of the checkpoint this run resumed from

    # -- taking a checkpoint ---------------------------------------------------------------------------------------
    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        sums = self._restored.pop("epoch_sums", None)
        if sums:  # the first step after a mid-epoch resume: the epoch's metrics continue from the checkpoint's sums
            _add_epoch_sums(trainer, sums)
        stepped = (batch_idx + 1) % trainer.accumulate_grad_batches == 0
        if self.every > 0 and not trainer.fast_dev_run and stepped and trainer.global_step % self.every == 0:
            # a checkpoint taken right before a validation would make Lightning skip that validation on resume
            # (and would predate its best-adapter update); the next checkpoint, after it, covers this step
            if not _validation_follows(trainer, batch_idx):
                self._stage(trainer, mid_epoch=True)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.fast_dev_run:
            self._stage(trainer, mid_epoch=False)

    def _stage(self, trainer: L.Trainer, mid_epoch: bool) -> None:
        # Lightning's checkpoint as Trainer.save_checkpoint would write it now (lightning is pinned: ==2.6.6); its
        # tensors are the live ones, which no optimizer step changes before _write runs
        checkpoint = trainer._checkpoint_connector.dump_checkpoint(weights_only=False)
        self._staged = checkpoint, _epoch_sums(trainer) if mid_epoch else None

    # -- writing it, once the step's or the epoch's logging is done ------------------------------------------------
    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._write(trainer, pl_module)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._write(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._write(trainer, pl_module)

    def _write(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._staged is None:
            return
        checkpoint, sums = self._staged
        self._staged = None
        for logger in trainer.loggers:  # the rows logged so far reach the disk before the checkpoint that counts them
            logger.save()
        checkpoint[RECORD_KEY] = {
            "run": self.run,
            "csv_rows": _csv_rows(trainer, self.path.parent.parent),
            "wandb_id": next((str(lg.version) for lg in trainer.loggers if type(lg).__name__ == "WandbLogger"), None),
            "epoch_sums": sums or {},
            # FineTuneModule's running sum of the epoch's losses (its printed loss per epoch), mid-epoch only
            "loss_partial": [float(pl_module._loss_sum), int(pl_module._loss_count)]
            if sums is not None and hasattr(pl_module, "_loss_sum")
            else None,
            "train_metrics": {
                k: torch.as_tensor(v).detach().cpu().clone()
                for k, v in trainer.callback_metrics.items()
                if k.startswith("train/")
            },
            "val_metrics": {k: float(v) for k, v in getattr(pl_module, "metrics", {}).get("val", {}).items()},
            "epoch_losses": [float(x) for x in getattr(pl_module, "epoch_losses", [])],
        }
        trainer.strategy.save_checkpoint(checkpoint, self.path)
        trainer.strategy.barrier("last_checkpoint")

    # -- resuming --------------------------------------------------------------------------------------------------
    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        self._restored = dict(checkpoint.get(RECORD_KEY) or {})
        losses, partial = self._restored.get("epoch_losses"), self._restored.get("loss_partial")
        if losses is not None and hasattr(pl_module, "epoch_losses"):
            pl_module.epoch_losses[:] = [float(x) for x in losses]
        if partial and hasattr(pl_module, "_loss_sum"):
            pl_module._loss_sum, pl_module._loss_count = float(partial[0]), int(partial[1])

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # a run resumed from its final checkpoint trains no step: the training and validation metrics that
        # metrics.json reports come from the checkpoint (a run that trained has its own)
        for key, value in self._restored.get("train_metrics", {}).items():
            trainer.callback_metrics.setdefault(key, value)
        metrics = getattr(pl_module, "metrics", None)
        if isinstance(metrics, dict) and not metrics.get("val") and self._restored.get("val_metrics"):
            metrics["val"] = dict(self._restored["val_metrics"])


def _validation_follows(trainer: L.Trainer, batch_idx: int) -> bool:
    """Whether the epoch loop runs a validation right after batch ``batch_idx`` (or the epoch ends there), as
    Lightning decides it: every ``val_check_batch`` batches of the epoch, or of the run without an epoch interval."""
    every = trainer.val_check_batch if isinstance(trainer.val_check_batch, int) else 0
    by_run = trainer.check_val_every_n_epoch is None
    position = trainer.fit_loop.epoch_loop.total_batch_idx if by_run else batch_idx
    return batch_idx + 1 >= trainer.num_training_batches or (every > 0 and (position + 1) % every == 0)


def _csv_rows(trainer: L.Trainer, run_dir: Path) -> dict[str, int]:
    """Data rows in each CSV logger's metrics.csv, by its path relative to the run directory."""
    from lightning.pytorch.loggers import CSVLogger

    if not trainer.is_global_zero:
        return {}
    rows = {}
    for logger in trainer.loggers:
        if isinstance(logger, CSVLogger):
            path = Path(logger.log_dir) / "metrics.csv"
            rows[os.path.relpath(path, run_dir)] = csv_row_count(path)
    return rows


def _on_epoch_metrics(trainer: L.Trainer) -> dict[str, _ResultMetric]:
    # the training metrics Lightning accumulates over the epoch (its results collection is not in its checkpoint)
    results = trainer.fit_loop.epoch_loop._results
    return {k: m for k, m in results.items() if isinstance(m, _ResultMetric) and m.is_tensor and m.meta.on_epoch}


def _epoch_sums(trainer: L.Trainer) -> dict[str, dict[str, torch.Tensor]]:
    sums = {}
    for key, metric in _on_epoch_metrics(trainer).items():
        entry = {"value": metric.value.detach().cpu().clone()}
        if metric.meta.is_mean_reduction:
            entry["count"] = metric.cumulated_batch_size.detach().cpu().clone()
        sums[key] = entry
    return sums


def _add_epoch_sums(trainer: L.Trainer, sums: dict[str, dict[str, torch.Tensor]]) -> None:
    """Fold the checkpoint's partial sums into the resumed epoch's: (new + saved) is bit for bit the (saved + new)
    of an uninterrupted run, since floating-point addition is commutative."""
    metrics = _on_epoch_metrics(trainer)
    for key, entry in sums.items():
        metric = metrics.get(key)
        if metric is None:
            continue
        value = entry["value"].to(metric.value.device)
        if metric.meta.is_max_reduction or metric.meta.is_min_reduction:
            metric.value = metric.meta.reduce_fx(metric.value, value)
        else:
            metric.value = metric.value + value
        if "count" in entry and metric.meta.is_mean_reduction:
            metric.cumulated_batch_size = metric.cumulated_batch_size + entry["count"].to(metric.value.device)
        metric._computed = None  # no cached result from before the sums
