"""The training sampler gives every rank the same number of batches (else DDP waits forever) and covers the data."""

from __future__ import annotations

import pytest

from stateft.app.data import ResumableSampler


@pytest.mark.parametrize(("n", "world"), [(17, 2), (2490, 4), (16, 2), (5, 8)])
def test_every_rank_gets_the_same_count_and_all_examples_are_seen(n, world):
    ranks = [list(ResumableSampler(n, seed=3, batch_size=4, rank=r, world_size=world)) for r in range(world)]
    assert len({len(order) for order in ranks}) == 1
    assert all(len(order) == len(ResumableSampler(n, 3, 4, rank, world)) for rank, order in enumerate(ranks))
    seen = [i for order in ranks for i in order]
    assert set(seen) == set(range(n))
    assert len(seen) - n < world  # only the wrap-around repeats


def test_one_device_order_is_the_seeded_permutation():
    one = list(ResumableSampler(10, seed=1, batch_size=2))
    assert sorted(one) == list(range(10))
    assert one != list(ResumableSampler(10, seed=2, batch_size=2))
