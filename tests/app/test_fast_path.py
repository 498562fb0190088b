"""`stateft.app.fast_path`: what ``model.dtype: auto`` and ``cuda_graph: auto`` become, and the one line a fallback
prints. The CUDA question is answered by a stand-in (CI has no GPU)."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from stateft.app import fast_path
from stateft.app.checks import validate_cfg
from stateft.errors import UserError


def _cfg(**over):
    cfg = {
        "model": {"name": "mamba-130m", "arch": "mamba1", "dtype": "auto"},
        "trainer": {
            "accelerator": "gpu",
            "devices": 1,
            "strategy": "auto",
            "precision": "bf16-mixed",
            "accumulate_grad_batches": 1,
        },
        "cuda_graph": "auto",
    }
    for key, value in over.items():
        node = cfg
        *path, last = key.split(".")
        for part in path:
            node = node[part]
        node[last] = value
    return OmegaConf.create(cfg)


@pytest.fixture
def gpu(monkeypatch):
    monkeypatch.setattr(fast_path, "_on_cuda", lambda cfg: str(OmegaConf.select(cfg, "trainer.accelerator")) != "cpu")


def test_one_gpu_takes_the_fast_path(gpu):
    out, lines = fast_path.resolve_fast_path(_cfg())
    assert (out.model.dtype, out.cuda_graph, lines) == ("bfloat16", True, [])


@pytest.mark.parametrize(
    ("over", "dtype"),
    [
        ({"trainer.precision": "32-true"}, "float32"),  # fp32 compute asked: the base stays fp32
        ({"trainer.precision": "bf16-true"}, "bfloat16"),
        ({"model.dtype": "float32"}, "float32"),  # an explicit dtype is kept
        ({"trainer.accelerator": "cpu"}, "float32"),
    ],
)
def test_base_dtype(gpu, over, dtype):
    assert fast_path.base_dtype(_cfg(**over)) == dtype


@pytest.mark.parametrize(
    ("over", "reason"),
    [
        ({"trainer.devices": 2, "trainer.strategy": "ddp"}, "several devices"),
        ({"trainer.accumulate_grad_batches": 4}, "gradient accumulation"),
        ({"model.arch": "gpt_neox"}, "Transformer"),
    ],
)
def test_fallbacks_name_their_reason(gpu, over, reason):
    out, lines = fast_path.resolve_fast_path(_cfg(**over))
    assert out.cuda_graph is False
    assert len(lines) == 1
    assert reason in lines[0]
    assert "eager" in lines[0]


def test_explicit_choices_are_kept_and_cpu_is_quiet(gpu):
    out, lines = fast_path.resolve_fast_path(_cfg(cuda_graph=False, **{"trainer.devices": 2}))
    assert out.cuda_graph is False
    assert lines == []
    out, lines = fast_path.resolve_fast_path(_cfg(**{"trainer.accelerator": "cpu"}))
    assert (out.model.dtype, out.cuda_graph, lines) == ("float32", False, [])


def test_without_cuda_auto_is_the_eager_fp32_path():
    out, lines = fast_path.resolve_fast_path(_cfg(**{"trainer.accelerator": "cpu"}))
    assert (out.model.dtype, out.cuda_graph, lines) == ("float32", False, [])


def test_the_input_config_is_not_modified(gpu):
    cfg = _cfg()
    fast_path.resolve_fast_path(cfg)
    assert cfg.model.dtype == "auto"
    assert cfg.cuda_graph == "auto"


def test_a_bad_cuda_graph_value_is_one_line(compose):
    with pytest.raises(UserError, match="cuda_graph='sometimes' must be auto, true or false"):
        validate_cfg(compose("train", ["cuda_graph=sometimes", "logger=none"]))
