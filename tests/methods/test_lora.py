"""LoRALinear's row blocks against the update written out block by block."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from stateft.errors import UserError
from stateft.methods import apply_method
from stateft.methods.configs import LORA_TARGETS
from stateft.methods.lora import LoRALinear, _linear_blocks, linear_holders
from stateft.models.loading import build_model
from tests.conftest import TINY, TINY2


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


def test_adapter_init_follows_the_run_seed():
    from stateft.methods import apply_method
    from stateft.models.loading import build_model
    from tests.conftest import TINY

    def lora_a(seed):
        model = build_model(TINY, seed=0)
        torch.manual_seed(seed)  # what seed=... does (seed_everything)
        apply_method("lora", model, {"name": "lora"})
        return next(p for n, p in model.named_parameters() if ".lora_A." in n).detach()

    assert torch.equal(lora_a(1), lora_a(1))
    assert not torch.equal(lora_a(1), lora_a(2))


def test_adapter_config_records_the_rank_used():
    from stateft.methods import apply_method
    from stateft.models.loading import build_model
    from tests.conftest import TINY, TINY2

    for config, rank in ((TINY, 8), (TINY2, 16)):
        model = build_model(config, seed=0)
        apply_method("lora", model, {"name": "lora"})
        assert (model.peft_config["r"], model.peft_config["alpha"]) == (rank, float(rank))


def test_channels_first_map_matches_the_module():
    base = nn.Linear(10, 12, bias=True)
    lora = LoRALinear(base, {"b": (5, 8), "a": (1, 3)}, r=2, alpha=4.0, dropout=0.0, generator=torch.Generator())
    with torch.no_grad():
        for B in lora.lora_B.values():
            B.normal_()
    x = torch.randn(3, 7, 10)  # (b l in)
    expected = lora(x) - base.bias  # channels_first leaves the bias out (the mixer adds dt_proj's inside the scan)
    torch.testing.assert_close(lora.channels_first(x.transpose(1, 2)).transpose(1, 2), expected)


def test_channels_first_copies_no_activation():
    """torch.matmul(A, u) with a trained A folds u (b in l) into (b l, in) with a full copy each way; the
    channels-first path must not (what it cost: ~18 ms of a 1.4b LoRA step on an H100, profile of 2026-11-24)."""
    from torch.profiler import ProfilerActivity, profile

    base = nn.Linear(32, 12, bias=False)
    lora = LoRALinear(base, {"a": (0, 6), "b": (6, 12)}, r=2, alpha=2.0, dropout=0.1, generator=torch.Generator())
    x = torch.randn(3, 32, 20, requires_grad=True)  # (b in l), the sequence contiguous like the mixer's u
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        lora.channels_first(x).sum().backward()
    copied = [e.input_shapes[0] for e in prof.events() if e.name in ("aten::copy_", "aten::clone")]
    assert [3, 20, 32] not in copied
    assert [3, 32, 20] not in copied
    assert all(p.grad is not None for p in (*lora.lora_A.values(), *lora.lora_B.values()))


def test_matmul_channels_first_equals_matmul():
    from stateft.ops.layout import matmul_channels_first

    w = torch.randn(5, 7, requires_grad=True)
    x = torch.randn(3, 7, 4, requires_grad=True)
    y1 = matmul_channels_first(w, x)
    g1 = torch.autograd.grad((y1 * torch.arange(60.0).reshape(3, 5, 4)).sum(), (w, x))
    y2 = torch.matmul(w, x)
    g2 = torch.autograd.grad((y2 * torch.arange(60.0).reshape(3, 5, 4)).sum(), (w, x))
    torch.testing.assert_close(y1, y2)
    for a, b in zip(g1, g2, strict=True):
        torch.testing.assert_close(a, b)


def test_mixer_with_lora_takes_the_channels_first_path_with_the_same_result(monkeypatch):
    # LoRA on x_proj's blocks and dt_proj (the Mamba-1 default): the fast path (W @ u, no transposes) must give the
    # generic path's output and gradients
    from stateft.models.mamba1 import Mamba1Mixer

    model = build_model(TINY, seed=0)
    apply_method("lora", model, {"name": "lora", "dropout": 0.0})
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".lora_B." in name:
                p.normal_(std=0.5)
    ids = torch.randint(0, TINY.vocab_size, (2, 9), generator=torch.Generator().manual_seed(0))

    def run():
        model.zero_grad(set_to_none=True)
        out = model(ids)
        out.float().square().mean().backward()
        return out.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    calls = []
    original = LoRALinear.channels_first
    monkeypatch.setattr(LoRALinear, "channels_first", lambda self, x: calls.append(1) or original(self, x))
    fast, fast_grads = run()
    assert calls, "the LoRA-wrapped projections did not take the channels-first path"
    monkeypatch.setattr(Mamba1Mixer, "_projections_channels_first", lambda self: False)
    slow, slow_grads = run()
    torch.testing.assert_close(fast, slow, rtol=1e-4, atol=1e-5)
    assert fast_grads
    assert fast_grads.keys() == slow_grads.keys()
    for name in fast_grads:
        torch.testing.assert_close(fast_grads[name], slow_grads[name], rtol=1e-4, atol=1e-5, msg=name)


def _tiny(arch: str):
    if arch == "vim":
        from stateft.vision.loading import build_vim
        from tests.vision.conftest import tiny_config

        return build_vim(tiny_config(), seed=0, backend="ref")
    return build_model(TINY if arch == "mamba1" else TINY2, seed=0)


@pytest.mark.parametrize("arch", ["mamba1", "mamba2", "vim"])
def test_the_target_table_is_what_the_modules_hold(arch):
    """``LORA_TARGETS`` (the start-up check's list) names exactly the holders' linears, their row blocks and the conv;
    each target alone wraps something on every layer."""
    model = _tiny(arch)
    found = set()
    for holder in linear_holders(model):
        for name, child in holder.named_children():
            if isinstance(child, nn.Linear):
                found |= {name, *(f"{name}.{block}" for block in _linear_blocks(holder, name))}
            elif isinstance(child, nn.Conv1d):
                found.add(name)
    assert found == set(LORA_TARGETS[arch])
    for target in LORA_TARGETS[arch]:
        names = apply_method("lora", _tiny(arch), {"name": "lora", "r": 2, "target_modules": [target]})
        assert len(names) >= 2 * model.config.n_layer, target  # A and B on every layer (Vim: on each direction too)
