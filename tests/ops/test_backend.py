"""The one backend decision (stateft/ops/backend.py): each op's implementation from ``scan_impl`` and the device, how
it reaches the model's layers and follows the model to another device, and that the model runs what it names (every
op, the cross-entropy too)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from stateft.loss import lm_loss
from stateft.models.loading import build_model
from stateft.ops import backend as backend_module
from stateft.ops.backend import OPS, Backend
from stateft.ops.interfaces import IMPLEMENTATIONS
from stateft.ops.settings import DEFAULT_SETTINGS
from tests.conftest import TINY, TINY2


def _ops(b: Backend) -> dict:
    return {op: getattr(b, op) for op in OPS}


def test_ref_is_the_reference_of_every_op():
    for device in ("cpu", "cuda", "meta"):
        b = Backend(impl="ref", device=device)
        assert _ops(b) == dict.fromkeys(OPS, "ref")
        assert not b.recomputes
        assert b.unavailable is None


def test_triton_fuses_every_op_with_a_kernel(monkeypatch):
    monkeypatch.setattr(backend_module, "HAS_TRITON", True)
    b = Backend(impl="triton", device="cuda")
    assert _ops(b) == {**dict.fromkeys(OPS, "triton"), "scan_step": "ref", "ssd_step": "ref"}
    assert b.recomputes
    assert b.unavailable is None
    assert not Backend(impl="triton", device="cuda", recompute=False).recomputes


def test_auto_is_triton_on_cuda_with_triton_else_ref(monkeypatch):
    monkeypatch.setattr(backend_module, "HAS_TRITON", True)
    assert _ops(Backend(device="cuda")) == _ops(Backend(impl="triton", device="cuda"))
    assert _ops(Backend(device="cpu")) == _ops(Backend(impl="ref"))  # under the interpreter too
    monkeypatch.setattr(backend_module, "HAS_TRITON", False)
    monkeypatch.setattr(backend_module, "_warned", set())
    with pytest.warns(UserWarning, match="triton is not installed"):
        assert _ops(Backend(device="cuda")) == _ops(Backend(impl="ref"))


def test_mamba_ssm_is_its_scan_and_the_reference_elsewhere(monkeypatch):
    monkeypatch.setattr(backend_module, "HAS_MAMBA_SSM", True)
    b = Backend(impl="mamba_ssm", device="cuda")
    assert _ops(b) == {**dict.fromkeys(OPS, "ref"), "scan": "mamba_ssm", "ssd": None}
    assert b.unavailable is None


def test_every_named_implementation_exists():
    for impl in ("ref", "triton", "mamba_ssm"):
        b = Backend(impl=impl, device="cuda")
        for op in OPS:
            assert getattr(b, op) is None or getattr(b, op) in IMPLEMENTATIONS[op][1], (impl, op)


def test_unserved_request_fails_at_the_first_op_with_what_to_do(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    b = Backend(impl="triton", device="cpu")  # e.g. a model built on the CPU before it moves to the GPU
    with pytest.raises(RuntimeError, match="model.scan_impl=ref"):
        b.check()
    with pytest.raises(RuntimeError, match="needs mamba-ssm"):
        Backend(impl="mamba_ssm", device="cpu").check()
    with pytest.raises(ValueError, match="unknown scan impl 'trition'"):
        Backend(impl="trition")


def test_replace_decides_again_and_settings_are_frozen():
    b = Backend(impl="ref", device="cpu")
    assert dataclasses.replace(b, impl="auto", device="cuda:1").device == "cuda"
    with pytest.raises(dataclasses.FrozenInstanceError):
        b.settings.scan.CHUNK = 8  # type: ignore[misc]
    with pytest.raises(ValueError, match="unknown settings \\['CHUNKS'\\]"):
        DEFAULT_SETTINGS.with_(scan={"CHUNKS": 8})
    small = DEFAULT_SETTINGS.with_(scan={"CHUNK": 8, "BLOCK_T": 4})
    assert (small.scan.CHUNK, DEFAULT_SETTINGS.scan.CHUNK) == (8, 64)  # a copy: the defaults stay


@pytest.mark.parametrize("config", [TINY, TINY2], ids=["mamba1", "mamba2"])
def test_set_backend_reaches_every_mixer_and_follows_the_device(config):
    model = build_model(config, backend="ref")
    assert (model.backend.impl, model.backend.device) == ("ref", "cpu")
    settings = DEFAULT_SETTINGS.with_(ssd={"PRECISION": "ieee"})
    chosen = model.set_backend(impl="auto", recompute=False, settings=settings)
    assert all(mixer.backend is chosen for mixer in model.mixers())
    assert (chosen.impl, chosen.recompute, chosen.settings) == ("auto", False, settings)
    model.to("meta")  # another device type: decided again, the request kept
    assert model.backend.device == "meta"
    assert (model.backend.impl, model.backend.recompute, model.backend.settings) == ("auto", False, settings)
    assert all(mixer.backend is model.backend for mixer in model.mixers())


@pytest.mark.parametrize("config", [TINY, TINY2], ids=["mamba1", "mamba2"])
def test_the_model_runs_what_the_backend_names(config, monkeypatch):
    """scan_impl=ref runs no Triton implementation (the cross-entropy neither); triton runs one for every op with a
    kernel, forward and loss (under the interpreter on the CPU)."""
    pytest.importorskip("triton")
    called = []
    for op, (_, impls) in IMPLEMENTATIONS.items():
        if "triton" not in impls:
            continue
        module, name = impls["triton"].split(":")
        mod = __import__(module, fromlist=[name])
        real = getattr(mod, name)
        monkeypatch.setattr(mod, name, lambda *a, _op=op, _real=real, **k: called.append(_op) or _real(*a, **k))
    ids = torch.randint(1, config.vocab_size, (2, 6), generator=torch.Generator().manual_seed(0))
    model = build_model(config, seed=0, backend="ref")
    lm_loss(model, ids, ids).backward()
    assert called == []
    model.set_backend(impl="triton")
    lm_loss(model, ids, ids).backward()
    scan = "scan" if config.arch == "mamba1" else "ssd"
    assert set(called) == {scan, "conv", "norm", "cross_entropy"}
