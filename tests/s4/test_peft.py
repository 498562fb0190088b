"""The S4 PEFT methods: trainable names and counts, the model unchanged at init, and only the selected dimensions
move in training."""

from __future__ import annotations

import copy

import pytest
import torch

from stateft.errors import UserError
from stateft.methods.configs import validate_method_cfg
from stateft.s4.choose import choose
from stateft.s4.model import DeepS4, theory_config
from stateft.s4.peft import apply, count_trainable, l1_penalty
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


SMALL = {"select_channels": 3, "update_channels": 2, "select_states": 2, "update_states": 1}


def cfg(method: str, **options):
    """The typed config of s4_<method> with the small counts (rank 2 where the method has one)."""
    name = f"s4_{method}"
    counts = SMALL if method in ("sdt", "sdlora") else {}
    rank = {"rank": 2} if method in ("lora", "sdlora") else {}
    return validate_method_cfg({"name": name, **counts, **rank, **options})


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
        names = apply(m, cfg(method), selection())
        assert names == sorted(n for n, p in m.named_parameters() if p.requires_grad)
        assert count_trainable(m) == LAYERS * count, method
    m = model()
    names = apply(m, cfg("sdt"), selection())
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
    apply(m, cfg(method, **(counts if method != "lora" else {})), [every, copy.deepcopy(every)])
    torch.testing.assert_close(m(x), base(x))


def test_sdt_zeroes_unkept_c_and_moves_only_selected_entries():
    base, m = model(), model()
    apply(m, cfg("sdt"), selection())
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
    apply(m, cfg("lora"))
    m.layers[0].output_linear.parametrizations.weight[0].lora_B.data.normal_()  # B = 0 would stall A's gradient
    train_steps(m)
    for name in ("log_dt", "log_A_real", "A_imag", "C"):
        torch.testing.assert_close(getattr(m.layers[0].ssm, name), getattr(base.layers[0].ssm, name))
    assert not torch.equal(m.layers[0].ssm.D, base.layers[0].ssm.D)
    delta = m.layers[0].output_linear.weight - base.layers[0].output_linear.weight
    assert torch.linalg.matrix_rank(delta.detach()) <= 2


def test_choose_runs_the_warm_up_without_touching_the_model():
    m = model()
    before = copy.deepcopy(m.state_dict())
    x = torch.rand(2, 10, H)
    batches = iter(lambda: (x, torch.zeros(2, 10, H)), None)
    c = cfg("sdt", warmup_steps=2)
    sel = choose(m, c, batches, seq_len=10)
    assert len(sel) == LAYERS
    assert all(len(s.keep_channels) == 3 and len(s.update_states) == 2 for s in sel)
    for k, v in m.state_dict().items():
        torch.testing.assert_close(v, before[k])
    apply(m, c, sel)


@pytest.mark.parametrize(
    ("method", "options", "sel", "message"),
    [
        ("sdt", {}, None, "s4_sdt needs a selection"),
        ("sdt", {}, selection()[:1], "the selection has 1 layers; the model has 2"),
        ("sdlora", {"select_states": 5}, selection(), r"select_states must be in"),
        (
            "sdt",
            {},
            [LayerSelection([0, 9, 1], [[0, 1]] * 3, [0, 1], [[0], [1]])] * 2,
            "selection of layer 0 does not fit",
        ),
    ],
)
def test_bad_selection_is_one_line_error(method, options, sel, message):
    with pytest.raises(UserError, match=message):
        apply(model(), cfg(method, **options), sel)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"name": "s4_sdt", "select_by": "size"}, "unknown select_by 'size'; choose one of: magnitude, loss, grad"),
        ({"name": "s4_sdt", "mode": "l1"}, "unknown mode 'l1'; choose one of: hard, soft"),
        ({"name": "s4_sdt", "update_states": 0}, "update_states must be >= 1"),
        ({"name": "s4_sdlora", "select_penalty": -1.0}, "select_penalty must be >= 0"),
        ({"name": "s4_lora", "rank": None}, "rank and ssm_rank are both null"),
        ({"name": "s4_lora", "lora_rank": 2}, "valid options: name, lr, rank, ssm_rank, train_D"),
    ],
)
def test_bad_options_are_one_line_errors(options, message):
    with pytest.raises(UserError, match=message):
        validate_method_cfg(options)


def test_lora_on_the_ssm_is_low_rank_on_each_table_and_starts_unchanged():
    base, m = model(), model()
    x = torch.rand(2, 10, H)
    apply(m, cfg("lora", rank=None, ssm_rank=1))
    torch.testing.assert_close(m(x), base(x))
    per_layer = 4 * (H + 4) + H + H  # C (complex: 2 x), log_A_real, A_imag factors; log_dt; D
    assert count_trainable(m) == LAYERS * per_layer
    for name in ("C", "log_A_real", "A_imag"):
        getattr(m.layers[0].ssm.parametrizations, name)[0].lora_B.data.normal_()
    train_steps(m)
    ssm, ref = m.layers[0].ssm, base.layers[0].ssm
    for name in ("log_A_real", "A_imag"):
        assert torch.linalg.matrix_rank((getattr(ssm, name) - getattr(ref, name)).detach()) == 1
    dC = torch.view_as_complex(ssm.C.detach().contiguous()) - torch.view_as_complex(ref.C.detach().contiguous())
    assert torch.linalg.matrix_rank(dC) == 1
    torch.testing.assert_close(m.layers[0].output_linear.weight, base.layers[0].output_linear.weight)


def test_train_d_false_freezes_d():
    m = model()
    names = apply(m, cfg("sdt", train_D=False), selection())
    assert not any(n.endswith("ssm.D") for n in names)


def test_soft_mode_is_dense_and_its_penalty_is_the_l1_of_c_and_of_the_deltas():
    base, m = model(), model()
    x = torch.rand(2, 10, H)
    c = cfg("sdt", mode="soft", select_penalty=0.5, update_penalty=0.25)
    apply(m, c)
    torch.testing.assert_close(m(x), base(x))
    assert count_trainable(m) == LAYERS * (4 * H * 4 + H + H + H * H + H)  # dense C, A; log_dt; D; W; b
    train_steps(m)
    expected = 0.0
    for block, ref in zip(m.layers, base.layers):
        C = block.ssm.C.detach()
        expected += 0.5 * (C[..., 0] ** 2 + C[..., 1] ** 2).sqrt().sum()
        for name in ("C", "log_A_real", "A_imag"):
            expected += 0.25 * (getattr(block.ssm, name) - getattr(ref.ssm, name)).detach().abs().sum()
    torch.testing.assert_close(l1_penalty(m, c).detach(), expected, rtol=1e-4, atol=1e-5)
    assert l1_penalty(m, cfg("sdt")) is None
