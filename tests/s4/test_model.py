"""DeepS4: the step-by-step run equals the whole-sequence forward, heads, gradients, config errors."""

from __future__ import annotations

import pytest
import torch

from stateft.errors import UserError
from stateft.s4.model import DeepS4, S4ModelConfig, theory_config


def stepwise(model: DeepS4, x: torch.Tensor) -> torch.Tensor:
    states = model.initial_state(x.shape[0])
    outputs = []
    for t in range(x.shape[1]):
        y, states = model.step(x[:, t], states)
        outputs.append(y)
    return torch.stack(outputs, dim=1)


@pytest.mark.parametrize(
    "overrides",
    [
        {},  # glu blocks, prenorm, residual, encoder and decoder
        {"prenorm": False},  # postnorm
        {"style": "relu", "norm": False, "residual": False, "d_input": None, "d_output": None, "A_init": "random"},
    ],
)
def test_step_equals_forward(overrides):
    torch.manual_seed(0)
    cfg = S4ModelConfig(**{"d_model": 6, "n_layers": 3, "d_state": 4, "d_input": 2, "d_output": 3, **overrides})
    model = DeepS4(cfg).double().eval()
    x = torch.randn(2, 30, cfg.d_input or cfg.d_model, dtype=torch.float64)
    full = model(x)
    assert full.shape == (2, 30, cfg.d_output or cfg.d_model)
    torch.testing.assert_close(stepwise(model, x), full, rtol=1e-9, atol=1e-9)


def test_classification_pools_positions():
    torch.manual_seed(1)
    model = DeepS4(S4ModelConfig(d_model=8, n_layers=2, d_state=4, d_input=1, d_output=5, head="classification"))
    x = torch.randn(3, 20, 1)
    logits = model.eval()(x)
    assert logits.shape == (3, 5)
    features = model.encoder(x)
    for i, block in enumerate(model.layers):
        features = features + block(model.norms[i](features))
    torch.testing.assert_close(logits, model.decoder(features.mean(dim=1)))
    with pytest.raises(UserError, match="step needs a regression head"):
        model.step(x[:, 0], model.initial_state(3))


def test_dropout_is_active_in_training_only():
    torch.manual_seed(2)
    model = DeepS4(S4ModelConfig(d_model=8, n_layers=2, d_state=4, dropout=0.5))
    x = torch.randn(2, 10, 8)
    torch.testing.assert_close(model.eval()(x), model(x))
    assert not torch.allclose(model.train()(x), model.eval()(x))


def test_gradients_flow_to_every_parameter():
    torch.manual_seed(3)
    model = DeepS4(S4ModelConfig(d_model=4, n_layers=2, d_state=4, d_input=2, d_output=2))
    model(torch.randn(2, 12, 2)).pow(2).mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_theory_config_is_the_sdt_synthetic_model():
    model = DeepS4(theory_config(8, 2, 6))
    assert [b.style for b in model.layers] == ["relu", "relu"]
    assert model.layers[0].output_linear.weight.shape == (8, 8)
    assert isinstance(model.encoder, torch.nn.Identity)
    assert isinstance(model.decoder, torch.nn.Identity)
    x = torch.rand(2, 5, 8)
    torch.testing.assert_close(model(x), model.layers[1](model.layers[0](x)))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"head": "pooling"}, "unknown S4 head 'pooling'; choose one of: regression, classification"),
        ({"head": "classification"}, "classification head needs d_output"),
        ({"style": "swiglu"}, "unknown S4 block style 'swiglu'"),
        ({"n_layers": 0}, "n_layers must be an integer >= 1"),
        ({"dropout": 1.0}, r"dropout must be in \[0, 1\)"),
        ({"d_state": 3}, "d_state must be an even integer"),
    ],
)
def test_bad_config_is_one_line_error(kwargs, message):
    with pytest.raises(UserError, match=message) as err:
        S4ModelConfig(**kwargs)
    assert "\n" not in str(err.value)


def test_wrong_input_width():
    model = DeepS4(S4ModelConfig(d_model=4, n_layers=1, d_state=4, d_input=3))
    with pytest.raises(ValueError, match=r"expects input \(batch, length, 3\)"):
        model(torch.randn(1, 5, 4))
