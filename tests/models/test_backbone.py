"""The backbone contract (stateft/models/backbone.py) against every backbone: Mamba-1, Mamba-2 and Pythia."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from stateft.loss import lm_loss
from stateft.models import (
    Backbone,
    DecodingCache,
    MambaBackbone,
    ModelConfig,
    PeftBackbone,
    count_parameters,
    device_of,
    dtype_of,
    is_transformer,
)
from stateft.models.loading import build_model
from tests.conftest import REPO, TINY, TINY2
from tests.models.tiny_pythia import TINY_PYTHIA, tiny_pythia

# (id, model factory, family): each backbone bare and with a method that has a start-of-sequence adapter
CASES = {
    "mamba1": (lambda: build_model(TINY, seed=0).eval(), "mamba"),
    "mamba2": (lambda: build_model(TINY2, seed=0).eval(), "mamba"),
    "pythia": (lambda: tiny_pythia(), "transformer"),
    "pythia-prefix": (lambda: tiny_pythia("prefix"), "transformer"),
    "pythia-prompt": (lambda: tiny_pythia("prompt"), "transformer"),
}


@pytest.fixture(params=list(CASES))
def case(request):
    make, family = CASES[request.param]
    return make(), family


def test_every_backbone_implements_the_contract(case):
    model, family = case
    assert isinstance(model, Backbone)
    assert isinstance(model.config, ModelConfig)
    assert isinstance(model.new_cache(), DecodingCache)
    assert isinstance(model, MambaBackbone) == (family == "mamba")
    assert isinstance(model, PeftBackbone) == (family == "transformer")
    assert is_transformer(model) == (family == "transformer")
    assert model.config.padded_vocab_size >= model.config.vocab_size


def test_a_module_without_the_members_is_not_a_backbone():
    assert not isinstance(torch.nn.Linear(2, 2), Backbone)


def test_forward_hidden_states_and_the_loss_path_agree(case):
    """forward = lm_head(hidden_states) (b l V_padded); the loss is cross-entropy of those logits on the targets."""
    model, _ = case
    ids = torch.randint(0, model.config.vocab_size, (2, 6), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        hidden = model.hidden_states(ids)
        logits = model(ids)
        labels = ids.clone()
        labels[:, :3] = -100
        loss = lm_loss(model, ids, labels)
    assert hidden.shape == (2, 6, model.config.d_model)
    assert logits.shape == (2, 6, model.config.padded_vocab_size)
    torch.testing.assert_close(logits, model.lm_head(hidden))
    expected = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten())
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-5)


def test_prefill_then_steps_continue_the_sequence(case):
    """forward(prompt, cache) then step(token, cache) per token = the parallel forward's logits at those positions;
    cache.reorder selects rows (beam search)."""
    model, _ = case
    ids = torch.randint(0, model.config.vocab_size, (2, 7), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full = model(ids)  # (2 7 V)
        cache = model.new_cache()
        assert not cache.started
        prefill = model(ids[:, :4], cache)
        assert cache.started
        torch.testing.assert_close(prefill, full[:, :4], rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(model.step(ids[:, 4], cache), full[:, 4], rtol=1e-4, atol=1e-4)
        cache.reorder(torch.tensor([1, 1, 0]))  # rows: second, second, first
        stepped = model.step(ids[[1, 1, 0], 5], cache)
    torch.testing.assert_close(stepped, full[[1, 1, 0], 5], rtol=1e-4, atol=1e-4)


def test_parameter_summary_device_and_dtype(case):
    model, _ = case
    trainable, total = count_parameters(model)
    assert total == sum(p.numel() for p in model.parameters()) >= trainable > 0
    assert trainable == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert device_of(model) == torch.device("cpu")
    assert dtype_of(model) == torch.float32


def test_meta_device_builds_every_backbone_without_memory():
    for config in (TINY, TINY2, TINY_PYTHIA):
        model = build_model(config, device="meta")
        assert device_of(model) == torch.device("meta")
        assert isinstance(model, Backbone)


def test_the_contract_imports_neither_torch_nor_transformers():
    """Start-up checks may ask it (stateft.models.backbone) before anything heavy is imported."""
    code = "import sys, stateft.models.backbone; sys.exit(any(m in sys.modules for m in ('torch', 'transformers')))"
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO).returncode == 0


def test_the_package_names_resolve():
    """``from stateft.models import load_pretrained`` and every other public name (loaded on first use)."""
    import stateft.models

    for name in stateft.models.__all__:
        assert getattr(stateft.models, name) is not None
    with pytest.raises(AttributeError):
        stateft.models.no_such_name  # noqa: B018
