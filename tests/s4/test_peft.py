"""The S4 PEFT methods: trainable names and counts, the model unchanged at init, and only the selected dimensions
move in training."""

from __future__ import annotations

import copy

import pytest
import torch

from stateft.errors import UserError
from stateft.s4.model import DeepS4, theory_config
from stateft.s4.peft import S4PeftConfig, apply, count_trainable, select
from stateft.s4.selection import LayerSelection

H, N, LAYERS = 6, 8, 2  # 4 complex modes


def model() -> DeepS4:
    torch.manual_seed(0)
    return DeepS4(theory_config(H, LAYERS, N)).eval()


def selection() -> list:
    layer = LayerSelection(
        keep_channels=[0, 2, 5], keep_states=[[0, 1], [1, 3], [2, 3]], update_channels=[2, 5], update_states=[[3], [2]]
    )
    return [layer, copy.deepcopy(layer)]


SMALL = {"select_channels": 3, "update_channels": 2, "select_states": 2, "update_states": 1, "lora_rank": 2}


def train_steps(m: DeepS4, steps: int = 3) -> None:
    opt = torch.optim.Adam([p for p in m.parameters() if p.requires_grad], lr=0.01)  # moves even tiny gradients
    x = torch.rand(2, 10, H)
    for _ in range(steps):
        opt.zero_grad()
        m(x).pow(2).mean().backward()
        opt.step()


def test_trainable_names_and_counts():
    per_layer = {
        "frozen": 0,
        "full": sum(p.numel() for p in model().parameters()) // LAYERS,
        "lora": 2 * (H + H) + H + H,  # B A, bias, D
        "sdt": 2 * 4 + H + H + H * 2 + H,  # 2 entries x (C re, C im, log Re A, Im A); log_dt; D; 2 columns; bias
        "sdlora": 2 * 4 + H + H + 2 * (H + H) + H,
    }
    for method, count in per_layer.items():
        m = model()
        names = apply(m, S4PeftConfig(method=method, **SMALL), selection())
        assert names == sorted(n for n, p in m.named_parameters() if p.requires_grad)
        assert count_trainable(m) == LAYERS * count, method
    m = model()
    names = apply(m, S4PeftConfig(method="sdt", **SMALL), selection())
    assert [n for n in names if n.startswith("layers.0.")] == [
        "layers.0.output_linear.bias",
        "layers.0.output_linear.parametrizations.weight.0.values",
        "layers.0.ssm.D",
        "layers.0.ssm.log_dt",
        "layers.0.ssm.parametrizations.A_imag.0.values",
        "layers.0.ssm.parametrizations.C.0.values",
        "layers.0.ssm.parametrizations.log_A_real.0.values",
    ]


@pytest.mark.parametrize("method", ["lora", "sdt", "sdlora"])
def test_unchanged_at_init_when_every_dimension_is_kept(method):
    base = model()
    x = torch.rand(2, 10, H)
    every = LayerSelection(list(range(H)), [list(range(4))] * H, [1], [[0]])
    counts = {"select_channels": H, "update_channels": 1, "select_states": 4, "update_states": 1}
    m = copy.deepcopy(base)
    apply(m, S4PeftConfig(method=method, **counts), [every, copy.deepcopy(every)])
    torch.testing.assert_close(m(x), base(x))


def test_sdt_zeroes_unkept_c_and_moves_only_selected_entries():
    base, m = model(), model()
    apply(m, S4PeftConfig(method="sdt", **SMALL), selection())
    ssm = m.layers[0].ssm
    kept = torch.zeros(H, 4, dtype=torch.bool)
    kept[[0, 0, 2, 2, 5, 5], [0, 1, 1, 3, 2, 3]] = True
    assert ssm.C[~kept].abs().sum() == 0
    torch.testing.assert_close(ssm.C[kept], base.layers[0].ssm.C[kept])
    start = {name: getattr(ssm, name).detach().clone() for name in ("log_A_real", "A_imag", "C")}
    train_steps(m)
    updated = torch.zeros(H, 4, dtype=torch.bool)
    updated[[2, 5], [3, 2]] = True
    for name in ("log_A_real", "A_imag", "C"):
        moved = getattr(ssm, name) != start[name]
        moved = moved if moved.dim() == 2 else moved.any(-1)
        assert torch.equal(moved & ~kept, torch.zeros_like(moved)), name
        assert torch.equal(moved[kept], updated[kept]), name
    assert not torch.equal(ssm.log_dt, base.layers[0].ssm.log_dt)
    columns = (m.layers[0].output_linear.weight != base.layers[0].output_linear.weight).any(0)
    assert columns.nonzero().flatten().tolist() == [2, 5]


def test_lora_leaves_the_ssm_but_d_unchanged():
    base, m = model(), model()
    apply(m, S4PeftConfig(method="lora", **SMALL))
    m.layers[0].output_linear.parametrizations.weight[0].lora_B.data.normal_()  # B = 0 would stall A's gradient
    train_steps(m)
    for name in ("log_dt", "log_A_real", "A_imag", "C"):
        torch.testing.assert_close(getattr(m.layers[0].ssm, name), getattr(base.layers[0].ssm, name))
    assert not torch.equal(m.layers[0].ssm.D, base.layers[0].ssm.D)
    delta = m.layers[0].output_linear.weight - base.layers[0].output_linear.weight
    assert torch.linalg.matrix_rank(delta.detach()) <= SMALL["lora_rank"]


def test_select_runs_the_warm_up_without_touching_the_model():
    m = model()
    before = copy.deepcopy(m.state_dict())
    x = torch.rand(2, 10, H)
    cfg = S4PeftConfig(method="sdt", warmup_steps=2, **SMALL)
    sel = select(m, cfg, lambda mm: mm(x).pow(2).mean(), seq_len=10)
    assert len(sel) == LAYERS
    assert all(len(s.keep_channels) == 3 and len(s.update_states) == 2 for s in sel)
    for k, v in m.state_dict().items():
        torch.testing.assert_close(v, before[k])
    apply(m, cfg, sel)


@pytest.mark.parametrize(
    ("cfg", "sel", "message"),
    [
        (S4PeftConfig(method="sdt", **SMALL), None, "sdt needs a selection"),
        (S4PeftConfig(method="sdt", **SMALL), selection()[:1], "the selection has 1 layers; the model has 2"),
        (S4PeftConfig(method="sdlora", **{**SMALL, "select_states": 5}), selection(), r"select_states must be in"),
        (
            S4PeftConfig(method="sdt", **SMALL),
            [LayerSelection([0, 9, 1], [[0, 1]] * 3, [0, 1], [[0], [1]])] * 2,
            "selection of layer 0 does not fit",
        ),
    ],
)
def test_bad_selection_is_one_line_error(cfg, sel, message):
    with pytest.raises(UserError, match=message):
        apply(model(), cfg, sel)


def test_unknown_method():
    with pytest.raises(UserError, match="unknown S4 method 'prefix'; choose one of: frozen, full, lora, sdt, sdlora"):
        S4PeftConfig(method="prefix")
