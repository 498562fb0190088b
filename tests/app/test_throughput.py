"""The Throughput callback: one logged rate per window of ``every`` batches, counting every batch of the window."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from stateft.app import callbacks as cb


class _Module:
    def __init__(self) -> None:
        self.logged: list[dict[str, float]] = []

    def log_dict(self, values, **kwargs) -> None:
        self.logged.append(values)


def test_one_rate_per_window(monkeypatch):
    clock = iter(float(t) for t in range(100))
    monkeypatch.setattr(cb.time, "perf_counter", lambda: next(clock))
    callback, module, trainer = cb.Throughput(every=3), _Module(), SimpleNamespace(world_size=2)
    batch = {"input_ids": torch.zeros(4, 10, dtype=torch.long)}
    callback.on_train_epoch_start(trainer, module)
    for i in range(7):  # the first batch opens the window; windows close at steps 3 and 6, 1 s per clock read
        trainer.global_step = i + 1
        callback.on_train_batch_end(trainer, module, None, batch, i)
    assert len(module.logged) == 2
    # batches 2 and 3 x 4 rows x 2 devices over the 1 s since the window opened; then 3 batches
    assert module.logged[0] == {"train/samples_per_sec": 16.0, "train/tokens_per_sec": 160.0, "train/longest_batch": 10}
    assert module.logged[1] == {"train/samples_per_sec": 24.0, "train/tokens_per_sec": 240.0, "train/longest_batch": 10}
    callback.on_train_epoch_start(trainer, module)  # a new epoch opens a new window
    trainer.global_step = 9
    callback.on_train_batch_end(trainer, module, None, batch, 0)
    assert len(module.logged) == 2
