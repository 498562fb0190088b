"""SDT's selection modes on a DeepS4 (stateft.s4.choose): each against an independent computation of its ranking,
and none changes the model."""

from __future__ import annotations

import copy

import pytest
import torch

from stateft.methods.configs import validate_method_cfg
from stateft.s4.choose import choose
from stateft.s4.model import DeepS4, theory_config

H, N, LAYERS, L = 6, 8, 2, 12  # 4 complex modes
COUNTS = {"select_channels": 3, "update_channels": 2, "select_states": 2, "update_states": 1}


def model() -> DeepS4:
    torch.manual_seed(0)
    return DeepS4(theory_config(H, LAYERS, N)).eval()


def batches(seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    while True:
        x = torch.rand(4, L, H, generator=g)
        yield x, torch.sin(x.cumsum(1))


def cfg(select_by: str, **options):
    return validate_method_cfg({"name": "s4_sdt", "select_by": select_by, "warmup_steps": 3, **COUNTS, **options})


@pytest.mark.parametrize("select_by", ["magnitude", "loss", "grad", "hybrid", "random"])
def test_every_mode_fits_the_counts_and_leaves_the_model(select_by):
    m = model()
    before = copy.deepcopy(m.state_dict())
    chosen = choose(m, cfg(select_by), batches(), L)
    assert len(chosen) == LAYERS
    for sel in chosen:
        assert len(sel.update_channels) == 2
        assert set(sel.update_channels) <= set(sel.keep_channels)
        kept = dict(zip(sel.keep_channels, sel.keep_states))
        assert all(len(s) == 1 and set(s) <= set(kept[h]) for h, s in zip(sel.update_channels, sel.update_states))
        if select_by == "grad":  # every dimension kept, as the SDT code
            assert sel.keep_channels == list(range(H))
            assert all(s == list(range(4)) for s in sel.keep_states)
        else:
            assert len(sel.keep_channels) == 3
            assert all(len(s) == 2 for s in sel.keep_states)
    for k, v in m.state_dict().items():
        torch.testing.assert_close(v, before[k])


def test_random_follows_its_seed():
    m = model()
    first = choose(m, cfg("random", seed=3), batches(), L)
    assert choose(m, cfg("random", seed=3), batches(), L) == first
    assert choose(m, cfg("random", seed=4), batches(), L) != first


def test_loss_keeps_the_channels_whose_removal_costs_most():
    m = model()
    x, y = next(batches())
    costs = []
    for h in range(H):
        work = copy.deepcopy(m)
        with torch.no_grad():
            work.layers[0].ssm.C[h] = 0
            costs.append(torch.nn.functional.mse_loss(work(x), y).item())
    expected = sorted(sorted(range(H), key=lambda h: -costs[h])[:3])
    chosen = choose(m, cfg("loss"), batches(), L)
    assert chosen[0].keep_channels == expected
    assert chosen[0].update_channels == sorted(sorted(expected, key=lambda h: -costs[h])[:2])


def test_grad_updates_the_channels_of_largest_gradient():
    m = model()
    x, y = next(batches())
    work = copy.deepcopy(m)
    work.requires_grad_(True)
    torch.nn.functional.mse_loss(work(x), y).backward()
    ssm, W = work.layers[1].ssm, work.layers[1].output_linear.weight
    norms = [
        (ssm.C.grad[h].pow(2).sum() + ssm.log_A_real.grad[h].pow(2).sum() + ssm.A_imag.grad[h].pow(2).sum()
         + W.grad[:, h].pow(2).sum()).sqrt().item()
        for h in range(H)
    ]  # fmt: skip
    expected = sorted(sorted(range(H), key=lambda h: -norms[h])[:2])
    assert choose(m, cfg("grad"), batches(), L)[1].update_channels == expected


def test_hybrid_keeps_what_magnitude_keeps():
    m = model()
    magnitude = choose(m, cfg("magnitude"), batches(), L)
    hybrid = choose(m, cfg("hybrid"), batches(), L)
    for a, b in zip(magnitude, hybrid):
        assert (a.keep_channels, a.keep_states) == (b.keep_channels, b.keep_states)
