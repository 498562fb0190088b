"""The fast path, settled once per run: where the frozen base is stored (``model.dtype: auto``) and whether the
training step replays CUDA graphs (``cuda_graph: auto``).

On one CUDA GPU with bf16 compute (trainer=gpu's bf16-mixed, or bf16-true) the frozen base is stored in bf16 and
the trainable tensors stay fp32 (`stateft.methods.base`: fp32 master copies): the frozen weights are read in bf16
anyway under autocast, so storing them in bf16 halves their memory and their reads and changes no result beyond
autocast's own rounding. Elsewhere (CPU, ``32-true``) the base stays fp32.

``cuda_graph: auto`` records the training forward and backward (`stateft.train_graph`) where that is known to be
exact and falls back to the eager step with one printed line naming why where it is not: several devices (each
process would record its own graphs and DDP's gradient hooks fire inside the recording), gradient accumulation
(the recording hands out its gradient buffers: the next replay would overwrite an accumulated one), a Transformer
backbone (its recording is not tested). ``true`` insists (the same cases are errors, `stateft.app.checks`);
``false`` always runs the eager step.

The settled values replace ``auto`` in the run's config, so run_config.json, the adapter's base-model record and the
loggers say what ran. Torch is imported only to ask whether CUDA exists, and only for ``auto``.
"""

from __future__ import annotations

import copy

from omegaconf import DictConfig, OmegaConf, open_dict

AUTO = "auto"
BF16_COMPUTE = ("bf16-mixed", "bf16-true", "bf16")


def _on_cuda(cfg: DictConfig) -> bool:
    accelerator = str(OmegaConf.select(cfg, "trainer.accelerator", default="auto") or "auto")
    if accelerator == "cpu":
        return False
    import torch

    return torch.cuda.is_available() and accelerator in ("auto", "gpu", "cuda")


def base_dtype(cfg: DictConfig) -> str:
    """``model.dtype`` with ``auto`` settled: bfloat16 on a CUDA GPU computing in bf16, float32 otherwise."""
    dtype = str(OmegaConf.select(cfg, "model.dtype", default="float32"))
    if dtype != AUTO:
        return dtype
    precision = str(OmegaConf.select(cfg, "trainer.precision", default="32-true"))
    return "bfloat16" if precision in BF16_COMPUTE and _on_cuda(cfg) else "float32"


def several_devices(cfg: DictConfig) -> str | None:
    """``trainer.devices=..., trainer.strategy=...`` when the trainer asks for more than one device (or a
    multi-device strategy), else None."""
    devices = OmegaConf.select(cfg, "trainer.devices")
    strategy = str(OmegaConf.select(cfg, "trainer.strategy", default="auto") or "auto")
    one_device = devices in (1, "1") or (OmegaConf.is_list(devices) and len(devices) == 1)
    if strategy in ("auto", "single_device") and one_device:
        return None
    return f"trainer.devices={devices}, trainer.strategy={strategy}"


def accumulated_batches(cfg: DictConfig) -> int:
    """``trainer.accumulate_grad_batches`` (1 when unset)."""
    return OmegaConf.select(cfg, "trainer.accumulate_grad_batches", default=1) or 1


def graph_fallback(cfg: DictConfig) -> str | None:
    """Why the training step cannot replay CUDA graphs in this run, or None when it can."""
    if not _on_cuda(cfg):
        return "no CUDA GPU"
    several = several_devices(cfg)
    if several is not None:
        return f"several devices ({several})"
    accumulate = accumulated_batches(cfg)
    if accumulate != 1:
        return f"gradient accumulation (trainer.accumulate_grad_batches={accumulate})"
    if str(OmegaConf.select(cfg, "model.arch")) == "gpt_neox":
        return "a Transformer backbone (its recording is not tested)"
    return None


def resolve_fast_path(cfg: DictConfig) -> tuple[DictConfig, list[str]]:
    """A copy of ``cfg`` with ``model.dtype`` and ``cuda_graph`` settled, and the lines to print about them (a
    fallback's reason; nothing on a machine without CUDA, where there is no fast path to miss)."""
    out = copy.deepcopy(cfg)
    lines: list[str] = []
    with open_dict(out):
        if OmegaConf.select(out, "model") is not None:
            out.model.dtype = base_dtype(out)
        if str(out.get("cuda_graph", False)) == AUTO:
            reason = graph_fallback(out)
            out.cuda_graph = reason is None
            if reason is not None and reason != "no CUDA GPU":
                lines.append(f"cuda_graph: eager training step ({reason}); cuda_graph=false silences this line")
    return out, lines
