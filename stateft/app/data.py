"""Batches in a resumable, device-count-independent order.

The training order of epoch ``e`` is ``randperm(n, seed + e)`` with the run's ``seed`` (the permutation
``DistributedSampler`` draws; ``dataset.seed`` only fixes the train/validation split). With ``w`` devices, rank ``r``
takes positions
``r, r + w, r + 2w, ...``, so global batch ``j`` of a ``w``-device run holds exactly the examples of batch ``j`` of a
one-device run with a ``w`` times larger batch. After a resume mid-epoch the sampler skips the batches the
checkpoint already trained on, so an interrupted run sees the same data as an uninterrupted one.
With ``n`` not a multiple of ``w`` the permutation wraps around (a few examples twice per epoch, as
``DistributedSampler`` does) so every rank runs the same number of batches. Validation and test sets are split by
the same stride; ``lit_module.gather_records`` puts predictions back in order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Sampler


class ResumableSampler(Sampler[int]):
    """Epoch-seeded permutation, strided over ``world_size`` ranks, minus the first ``skip()`` batches."""

    def __init__(
        self,
        n: int,
        seed: int,
        batch_size: int,
        rank: int = 0,
        world_size: int = 1,
        skip: Callable[[], int] = lambda: 0,
    ) -> None:
        self.n, self.seed, self.batch_size = n, seed, batch_size
        self.rank, self.world_size, self.skip, self.epoch = rank, world_size, skip, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _indices(self) -> list[int]:
        order = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed + self.epoch)).tolist()
        # every rank gets the same number of examples (else the rank with one more batch waits forever in the
        # gradient all-reduce): like DistributedSampler, wrap around to a multiple of world_size
        padded = len(self) * self.world_size
        order = (order * (padded // max(self.n, 1) + 1))[:padded]
        return order[self.rank :: self.world_size]

    def __iter__(self) -> Iterator[int]:
        return iter(self._indices()[self.skip() * self.batch_size :])

    def __len__(self) -> int:
        return -(-self.n // self.world_size)  # ceil(n / world_size), the same on every rank


def _batches_done_this_epoch(trainer: L.Trainer) -> int:
    """Batches of the current epoch a restored checkpoint already trained on (0 unless resuming mid-epoch)."""
    loop = trainer.fit_loop
    if not loop.restarting:
        return 0
    return loop.epoch_loop.batch_progress.current.completed


def _rebuild(loader: DataLoader, sampler: Sampler, generator: torch.Generator | None = None) -> DataLoader:
    return DataLoader(
        loader.dataset,
        batch_size=loader.batch_size,
        sampler=sampler,
        collate_fn=loader.collate_fn,
        num_workers=loader.num_workers,
        pin_memory=loader.pin_memory,
        drop_last=loader.drop_last,
        generator=generator,
    )


class _Shard(Sampler[int]):
    def __init__(self, n: int, rank: int, world_size: int) -> None:
        self.indices = list(range(rank, n, world_size))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class ResumableDataModule(L.LightningDataModule):
    """Wraps a benchmark DataModule: same data and task, training order as described in the module docstring."""

    def __init__(self, inner: L.LightningDataModule, seed: int | None = None) -> None:
        super().__init__()
        self.inner = inner
        self.seed = seed if seed is not None else getattr(inner, "seed", 0)

    def __getattr__(self, name: str) -> Any:  # task, name, tokenizer... of the wrapped module
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    def prepare_data(self) -> None:
        self.inner.prepare_data()

    def setup(self, stage: str | None = None) -> None:
        self.inner.setup(stage)

    def _rank_world(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def train_dataloader(self) -> DataLoader:
        loader = self.inner.train_dataloader()
        rank, world = self._rank_world()
        trainer = self.trainer
        skip = (lambda: _batches_done_this_epoch(trainer)) if trainer is not None else (lambda: 0)
        sampler = ResumableSampler(len(loader.dataset), self.seed, loader.batch_size, rank, world, skip)
        # its own generator: creating the iterator (also right after a resume) then draws no number from the global
        # RNG, whose restored state the training steps (dropout) must see unchanged
        return _rebuild(loader, sampler, torch.Generator().manual_seed(self.seed))

    def _eval_loader(self, loader: DataLoader) -> DataLoader:
        rank, world = self._rank_world()
        if world == 1:
            return loader
        return _rebuild(loader, _Shard(len(loader.dataset), rank, world))

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader(self.inner.val_dataloader())

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader(self.inner.test_dataloader())

    def teardown(self, stage: str | None = None) -> None:
        self.inner.teardown(stage)


class TrainBatches:
    """A re-iterable over the training batches (sdt's warm-up iterates it more than once)."""

    def __init__(self, datamodule: L.LightningDataModule) -> None:
        self.datamodule = datamodule

    def __iter__(self) -> Iterator[dict[str, Any]]:
        self.datamodule.setup("fit")
        return iter(self.datamodule.inner.train_dataloader())
