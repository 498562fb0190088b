"""One AdamW loop for deep S4: the warm-up and tuning take the same steps on the same losses; tuning records the
task loss of each step, which a penalty adds to without being recorded."""

from __future__ import annotations

import copy

import torch

from stateft.s4.model import DeepS4, theory_config
from stateft.s4.train import fit
from stateft.s4.warmup import warm_up


def test_warm_up_and_fit_take_the_same_adamw_steps():
    torch.manual_seed(3)
    model = DeepS4(theory_config(4, 2, 4))
    x, y = torch.rand(2, 8, 4), torch.rand(2, 8, 4)
    start = model.loss(x, y).item()
    warmed = warm_up(model, lambda m: m.loss(x, y), steps=3, lr=0.01, params="all")
    tuned = copy.deepcopy(model)
    losses = fit(tuned, iter([(x, y)] * 3), 3, 0.01)
    assert not warmed.training
    assert not tuned.training
    for (name, a), b in zip(warmed.state_dict().items(), tuned.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    assert losses[0] == start
    assert len(losses) == 3
    assert losses[-1] < losses[0]
    # a penalty steers the update but is not in the recorded loss
    penalised = copy.deepcopy(model)
    with_penalty = fit(penalised, iter([(x, y)] * 3), 3, 0.01, lambda m: sum(p.abs().sum() for p in m.parameters()))
    assert with_penalty[0] == start
    assert not torch.equal(penalised.layers[0].ssm.C, tuned.layers[0].ssm.C)


def test_the_loop_is_the_sdt_codes_adamw():
    """Against a loop written here: torch's AdamW at its defaults (weight decay 0.01), no schedule, no clipping."""
    torch.manual_seed(4)
    model = DeepS4(theory_config(4, 2, 4))
    x, y = torch.rand(2, 8, 4), torch.rand(2, 8, 4)
    by_hand = copy.deepcopy(model)
    fit(model, iter([(x, y)] * 4), 4, 0.02)
    optimizer = torch.optim.AdamW([p for p in by_hand.parameters() if p.requires_grad], lr=0.02)
    by_hand.train()
    for _ in range(4):
        optimizer.zero_grad()
        by_hand.loss(x, y).backward()
        optimizer.step()
    for (name, a), b in zip(model.state_dict().items(), by_hand.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
