"""trainer.precision=bf16-true (the reference runs' pure bf16) against the default (fp32 adapters), end to end.

After one training step of train.py on a tiny model: under bf16-true the frozen weights, the adapters and AdamW's
moments are bf16 and A_log, D, dt_bias (and the tensors attached to them) fp32; under the default the adapters and
their moments are fp32 whatever the base's storage dtype. The adapter and the checkpoint keep the dtypes trained
and load into a model of either precision.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf, open_dict
from safetensors.torch import load_file

from stateft.app.checks import validate_cfg
from stateft.app.precision import lightning_precision, requested_precision, resolve_precision
from stateft.app.training import train
from stateft.errors import UserError
from stateft.lit_module import FineTuneModule
from tests.app.conftest import FIXTURES

BF16, FP32 = torch.bfloat16, torch.float32


def _overrides(out: Path, method: str, model: str, *extra: str, trainer: str = "debug") -> list[str]:
    """``method`` on GLUE RTE's fixture rows; trainer=debug: one training step on the CPU (fast_dev_run)."""
    overrides = [
        f"model={model}",
        f"method={method}",
        "dataset=glue_rte",
        f"dataset.path={FIXTURES / 'glue_rte'}",
        f"trainer={trainer}",
        "logger=none",
        f"output_dir={out}",
        *extra,
    ]
    if method == "sdt":
        overrides.append("method.num_warmup_it=1")  # the warm-up that picks the dimensions: 2 updates
    return overrides


@pytest.fixture
def trained(monkeypatch):
    """Records, at the end of fitting, every parameter's dtype, the trainable names and AdamW's state per name."""
    seen: dict = {}

    def on_train_end(self):
        params = dict(self.model.named_parameters())
        state = self.trainer.optimizers[0].state
        seen["dtypes"] = {name: p.dtype for name, p in params.items()}
        seen["trainable"] = list(self.trainable)
        seen["state"] = {name: dict(state[params[name]]) for name in self.trainable if params[name] in state}

    monkeypatch.setattr(FineTuneModule, "on_train_end", on_train_end)
    return seen


def _mixer_fp32(name: str) -> bool:
    """A_log, D and dt_bias of a mixer, the sdt deltas on A_log and additional_scan's A_log (written out by hand)."""
    return name.endswith((".mixer.A_log", ".mixer.D", ".mixer.dt_bias", ".extra_states.A_log")) or (
        ".mixer.parametrizations.A_log." in name
    )


# (method, model, trainable names that must stay fp32: a suffix each)
CASES = [
    ("state_offset_h", "mamba-tiny", []),
    ("lora", "mamba-tiny", []),
    ("full_s6", "mamba-tiny", [".mixer.A_log", ".mixer.D"]),
    ("sdt", "mamba-tiny", [".mixer.parametrizations.A_log.0.values"]),
    ("additional_scan", "mamba-tiny", [".extra_states.A_log"]),
    ("full_ssd", "mamba2-tiny", [".mixer.A_log", ".mixer.D", ".mixer.dt_bias"]),
]


@pytest.mark.parametrize(("method", "model", "fp32_trainable"), CASES)
def test_bf16_true_trains_bf16_weights_adapters_and_moments(compose, tmp_path, trained, method, model, fp32_trainable):
    train(compose("train", _overrides(tmp_path, method, model, "trainer.precision=bf16-true")))
    dtypes, names, state = trained["dtypes"], trained["trainable"], trained["state"]
    a_log_and_d = [n for n in dtypes if n.endswith((".mixer.A_log", ".parametrizations.A_log.original", ".mixer.D"))]
    assert len(a_log_and_d) == 2 * 2
    assert all(dtypes[n] == FP32 for n in a_log_and_d)
    for name, dtype in dtypes.items():
        assert dtype == (FP32 if _mixer_fp32(name) else BF16), name
    fp32_names = sorted(n for n in names if n.endswith(tuple(fp32_trainable)))
    assert len(fp32_names) == len(fp32_trainable) * 2  # each suffix once per layer
    assert set(state) == set(names)  # one AdamW step ran on every trainable tensor
    for name in names:
        want = FP32 if name in fp32_names else BF16
        assert dtypes[name] == want, name
        assert state[name]["exp_avg"].dtype == state[name]["exp_avg_sq"].dtype == want, name
    assert any(bool(state[n]["exp_avg_sq"].any()) for n in names)  # the step saw gradients


@pytest.mark.parametrize("base_dtype", ["float32", "bfloat16"])
def test_default_keeps_fp32_adapters_and_moments(compose, tmp_path, trained, base_dtype):
    train(compose("train", _overrides(tmp_path, "lora", "mamba-tiny", f"model.dtype={base_dtype}")))
    dtypes, names, state = trained["dtypes"], trained["trainable"], trained["state"]
    assert names
    assert set(state) == set(names)
    for name in names:
        assert dtypes[name] == FP32, name
        assert state[name]["exp_avg"].dtype == state[name]["exp_avg_sq"].dtype == FP32, name
    base = {"float32": FP32, "bfloat16": BF16}[base_dtype]
    assert dtypes["backbone.layers.0.mixer.in_proj.weight"] == base  # the frozen base as model.dtype stores it
    assert dtypes["backbone.layers.0.mixer.A_log"] == FP32


def test_bf16_adapter_and_checkpoint_load_into_either_precision(compose, tmp_path, trained):
    """The adapter is saved in the dtypes trained (bf16, the new A_log columns fp32) with a base-model record in bf16;
    it loads unchanged into a default (fp32-adapter) model; a bf16 checkpoint resumes with bf16 moments."""
    from stateft.adapters import load_adapter
    from stateft.models.loading import model_from_config

    run = tmp_path / "run"
    extra = ("trainer.precision=bf16-true", "trainer.accelerator=cpu", "trainer.max_epochs=1", "test=false")
    extra += ("dataset.batch_size=8", "trainer.enable_progress_bar=false", "checkpoint.every_n_train_steps=1")
    cfg = compose("train", _overrides(run, "additional_scan", "mamba-tiny", *extra, trainer="default"))
    train(cfg)
    tensors = load_file(str(run / "adapter" / "adapter_model.safetensors"))
    assert {k: v.dtype for k, v in tensors.items()} == {k: FP32 if k.endswith(".A_log") else BF16 for k in tensors}
    meta = json.loads((run / "adapter" / "adapter_config.json").read_text())
    assert meta["base_model"]["dtype"] == "bfloat16"  # eval.py loads the base as it was trained
    saved = json.loads((run / "adapter" / "run_config.json").read_text())
    assert saved["trainer"]["precision"] == "bf16-true"
    assert saved["model"]["dtype"] == "bfloat16"

    fresh = model_from_config(OmegaConf.create({**meta["base_model"], "dtype": "float32"}))
    names = load_adapter(run / "adapter", fresh)
    params = dict(fresh.named_parameters())
    for name in names:
        assert params[name].dtype == FP32
        assert torch.equal(params[name].detach(), tensors[name].float()), name  # bf16 -> fp32 is exact

    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    moments = [s["exp_avg"].dtype for s in checkpoint["optimizer_states"][0]["state"].values()]
    assert BF16 in moments
    assert set(moments) <= {BF16, FP32}
    resumed = _overrides(tmp_path / "resumed", "additional_scan", "mamba-tiny", *extra, trainer="default")
    resumed += ["trainer.max_epochs=2", f"+resume={run}"]
    train(compose("train", resumed))
    assert torch.load(tmp_path / "resumed" / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 2 * 2
    assert sorted(trained["state"]) == sorted(tensors)  # the resumed moments keep the dtypes trained
    for name, s in trained["state"].items():
        assert trained["dtypes"][name] == s["exp_avg"].dtype == tensors[name].dtype, name


def test_lightning_runs_without_autocast_under_bf16_true():
    """stateft casts the model itself; Lightning's bf16-true would cast A_log and D to bf16 as well."""
    assert lightning_precision("bf16-true") == "32-true"
    assert lightning_precision("bf16-mixed") == "bf16-mixed"
    assert lightning_precision("32-true") == "32-true"


def test_paper_exact_selects_the_reference_precision(compose):
    cfg = compose("train", ["experiment=paper/glue", "dataset=glue_qqp", "method=state_offset_h", "trainer=gpu"])
    assert requested_precision(cfg) == "bf16-mixed"  # trainer=gpu: bf16 autocast, fp32 master weights
    with open_dict(cfg):
        cfg.paper.exact = True
    assert requested_precision(cfg) == "bf16-true"  # exact wins over trainer=gpu
    resolved = resolve_precision(cfg)
    assert resolved.trainer.precision == "bf16-true"
    assert resolved.model.dtype == "bfloat16"
    assert cfg.trainer.precision == "bf16-mixed"
    assert cfg.model.dtype == "auto"  # the input is not modified
    with open_dict(cfg):  # a cell whose released config trained otherwise
        cfg.paper.cell.state_offset_h = {"glue_qqp": {"precision": "32-true"}}
    assert requested_precision(cfg) == "32-true"
    assert resolve_precision(cfg).model.dtype == "auto"  # not bf16-true: left to stateft.app.fast_path


def test_bad_precision_settings_are_user_errors(compose):
    cfg = compose("train", ["trainer.precision=bf16-true", "model.dtype=float16"])
    with pytest.raises(UserError, match="model.dtype=float16 contradicts bf16-true"):
        validate_cfg(cfg)
    validate_cfg(compose("train", ["trainer.precision=bf16-true", "model.dtype=bfloat16"]))
    cfg = compose("train", ["experiment=paper/glue", "method=state_offset_h"])
    with open_dict(cfg):
        cfg.paper.exact = "yes"
    with pytest.raises(UserError, match="paper.exact='yes' must be true or false"):
        validate_cfg(cfg)


@pytest.mark.gpu
def test_bf16_true_with_cuda_graphs_and_the_triton_scan_gpu(compose, tmp_path, trained):
    """On a GPU: the Triton scan and the recorded training step take the bf16 model and bf16 offsets."""
    extra = ("trainer.precision=bf16-true", "cuda_graph=true", "model.scan_impl=triton", "+trainer.fast_dev_run=2")
    metrics = train(compose("train", _overrides(tmp_path, "state_offset_h", "mamba-tiny", *extra, trainer="gpu")))
    assert all(torch.isfinite(torch.tensor(v)) for k, v in metrics.items() if k.startswith("train/"))
    dtypes, state = trained["dtypes"], trained["state"]
    for name, s in state.items():
        assert dtypes[name] == s["exp_avg"].dtype == BF16, name
    assert dtypes["backbone.layers.0.mixer.A_log"] == FP32
    assert any(bool(s["exp_avg_sq"].any()) for s in state.values())
