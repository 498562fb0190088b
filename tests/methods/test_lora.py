"""LoRALinear's row blocks against the update written out block by block."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from stateft.errors import UserError
from stateft.methods import apply_method
from stateft.methods.lora import LoRALinear
from stateft.models.loading import build_model
from tests.conftest import TINY


def test_blocks_with_gaps_update_only_their_rows():
    base = nn.Linear(10, 12)
    lora = LoRALinear(base, {"b": (5, 8), "a": (1, 3)}, r=2, alpha=4.0, dropout=0.0, generator=torch.Generator())
    with torch.no_grad():
        for B in lora.lora_B.values():
            B.normal_()
    x = torch.randn(3, 10)
    expected = base(x).detach().clone()
    for key, (start, end) in lora.blocks.items():
        expected[:, start:end] += (x @ lora.lora_A[key].T @ lora.lora_B[key].T) * (4.0 / 2)
    torch.testing.assert_close(lora(x), expected)
    untouched = [0, 3, 4, 8, 9, 10, 11]
    torch.testing.assert_close(lora(x)[:, untouched], base(x)[:, untouched])


def test_overlapping_targets_are_refused():
    with pytest.raises(UserError, match="overlap"):
        apply_method("lora", build_model(TINY), {"name": "lora", "target_modules": ["x_proj", "x_proj.dt"]})
