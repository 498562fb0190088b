"""A shuffling sampler whose order depends only on (seed, epoch), so a resumed run sees the same data order."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class SeededShuffleSampler(Sampler[int]):
    """Random permutation of ``range(n)`` drawn from ``torch.Generator().manual_seed(seed + epoch)``.

    Lightning calls ``set_epoch`` on samplers that have it at the start of every epoch (also after a resume), so
    the order of epoch ``e`` is the same whether or not the run was interrupted before it.
    """

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(torch.randperm(self.n, generator=generator).tolist())

    def __len__(self) -> int:
        return self.n
