"""Callbacks of a training run: best-epoch adapter, last checkpoint (``stateft.app.checkpoint``), predictions files,
throughput, W&B samples."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import lightning as L

from stateft.adapters import save_adapter
from stateft.app.checkpoint import AtomicCheckpointIO, LastCheckpoint
from stateft.data.predictions import write_predictions

__all__ = ["AtomicCheckpointIO", "BestAdapter", "LastCheckpoint", "SampleTable", "Throughput", "ValidationPredictions"]


class BestAdapter(L.Callback):
    """After each validation: if ``monitor`` improved, save the adapter (only the trainable tensors) to ``directory``.

    The best score travels in the Lightning checkpoint, so a resumed run keeps comparing against it. A validation
    after the last checkpoint is redone by a resumed run, which then writes the same adapter again (the write
    itself is atomic: ``stateft.adapters.save_adapter``).
    """

    def __init__(
        self,
        directory: Path,
        monitor: str,
        mode: str,
        method_cfg: dict,
        base_model: dict,
        extra_files: dict[str, Any] | None = None,
    ) -> None:
        self.directory, self.monitor, self.mode = Path(directory), monitor, mode
        self.method_cfg, self.base_model, self.extra_files = method_cfg, base_model, extra_files or {}
        self.best: float | None = None
        self.best_epoch: int | None = None

    def _better(self, value: float) -> bool:
        if self.best is None:
            return True
        return value > self.best if self.mode == "max" else value < self.best

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or self.monitor not in trainer.callback_metrics:
            return
        value = float(trainer.callback_metrics[self.monitor])
        if not self._better(value):
            return
        self.best, self.best_epoch = value, trainer.current_epoch
        if trainer.is_global_zero:
            self.save(pl_module)
            pl_module.print(f"epoch {trainer.current_epoch}: {self.monitor}={value:.4f} (best) -> {self.directory}")
        trainer.strategy.barrier("best_adapter")

    def save(self, pl_module: L.LightningModule) -> Path:
        """Write the current adapter (atomically) with the run's config files beside it."""
        save_adapter(
            self.directory, pl_module.model, self.method_cfg, pl_module.trainable, self.base_model, self.extra_files
        )
        return self.directory

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best, self.best_epoch = state_dict.get("best"), state_dict.get("best_epoch")


class ValidationPredictions(L.Callback):
    """Writes the latest validation predictions (``predictions_validation.jsonl``, rank 0)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero and not trainer.sanity_checking and pl_module.predictions.get("val"):
            write_predictions(self.path, pl_module.predictions["val"], pl_module.tokenizer)


class Throughput(L.Callback):
    """Logs ``train/samples_per_sec`` and ``train/tokens_per_sec`` (all input tokens, padding included) over windows
    of ``every`` training batches (the trainer's ``log_every_n_steps``), the window's ``train/longest_batch`` (tokens
    per row) and on a GPU ``train/peak_gib``.

    On a GPU the host only queues work and may run ahead of the device, so a window is closed by waiting for the
    device (one synchronisation per window, at the steps where Lightning hands values to the loggers) and timed from
    the end of the previous window: data loading, the step and the optimiser all inside. The first window of an epoch
    starts at its first batch's end.
    """

    # what this callback logs: measurements of the run's windows, not results (a resumed run's windows differ)
    KEYS = ("train/samples_per_sec", "train/tokens_per_sec", "train/longest_batch", "train/peak_gib")

    def __init__(self, every: int = 10) -> None:
        self.every = max(int(every), 1)
        self._start: float | None = None
        self._samples = self._tokens = self._batches = self._longest = 0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = None

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        ids = batch["input_ids"]
        if self._start is None:  # the window opens at the first batch's end (a known point after a wait below)
            _wait_for_device(ids)
            self._start, self._samples, self._tokens, self._batches = time.perf_counter(), 0, 0, 0
            self._longest = 0
            return
        self._samples, self._tokens, self._batches = (
            self._samples + ids.shape[0],
            self._tokens + ids.numel(),
            self._batches + 1,
        )
        self._longest = max(self._longest, ids.shape[1])
        if getattr(trainer, "global_step", self._batches) % self.every:  # close on the steps Lightning logs at
            return
        _wait_for_device(ids)
        now = time.perf_counter()
        seconds, world = max(now - self._start, 1e-9), trainer.world_size
        rates = {
            "train/samples_per_sec": self._samples * world / seconds,
            "train/tokens_per_sec": self._tokens * world / seconds,
        }
        rates["train/longest_batch"] = float(self._longest)  # tokens per row of the window's longest batch
        if ids.is_cuda:  # this device's peak since the run began (CUDA graphs allocate their pools when recorded)
            rates["train/peak_gib"] = _peak_gib(ids.device)
        pl_module.log_dict(rates, on_step=True, on_epoch=False)
        self._start, self._samples, self._tokens, self._batches, self._longest = now, 0, 0, 0, 0


def is_measurement(key: str) -> bool:
    """A logged key that measures the run (speed, memory) rather than its result: it differs between runs of one
    config, and between a resumed run and an uninterrupted one."""
    return key in Throughput.KEYS or key.endswith("/examples_per_sec")


def _peak_gib(device: Any) -> float:
    import torch

    return torch.cuda.max_memory_allocated(device) / 2**30


def _wait_for_device(tensor: Any) -> None:
    import torch

    if tensor.is_cuda:
        torch.cuda.synchronize(tensor.device)


class SampleTable(L.Callback):
    """A W&B table of the first ``n`` validation predictions after every validation (prompt, prediction, reference)."""

    def __init__(self, logger: Any, tokenizer: Any, n: int = 8) -> None:
        self.logger, self.tokenizer, self.n = logger, tokenizer, n

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        records = pl_module.predictions.get("val", [])[: self.n]
        if not trainer.is_global_zero or trainer.sanity_checking or not records:
            return
        rows = []
        for r in records:
            example = {k: v for k, v in r["example"].items() if k != "index"}
            prompt = self.tokenizer.decode(r.get("prompt_ids", []))[-500:]
            rows.append([trainer.current_epoch, prompt, r["prediction"], json.dumps(example, default=str)[:500]])
        try:
            self.logger.log_table(
                key="val/samples",
                columns=["epoch", "prompt", "prediction", "reference"],
                data=rows,
                step=trainer.global_step,
            )
        except Exception as err:  # logging must never end a training run
            pl_module.print(f"W&B: could not log the sample table ({type(err).__name__}: {err})")
