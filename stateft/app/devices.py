"""The trainer's device request checked against this machine before Lightning starts.

``trainer=gpu`` on a machine without CUDA, more devices than the machine has, or DDP over one device end with one
line saying what to pass instead. torch is imported only when the request names GPUs or several devices, so a
plain CPU run's start-up stays light.
"""

from __future__ import annotations

import os
from typing import Any

from omegaconf import DictConfig, OmegaConf

from stateft.errors import UserError

GPU_ACCELERATORS = ("gpu", "cuda")
CPU_DDP = "trainer.strategy=ddp trainer.accelerator=cpu trainer.devices=2"  # two CPU processes (tests, debugging)


def cuda_device_count() -> int:
    """CUDA devices torch can use here (0 without a GPU or a driver)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _requested(devices: Any) -> tuple[int | str, list[int] | None]:
    """(count, explicit GPU indices) of Lightning's ``devices``; the count is "all" for -1 and "auto" for auto."""
    if OmegaConf.is_list(devices) or isinstance(devices, (list, tuple)):
        ids = [int(d) for d in devices]
        return len(ids), ids
    if isinstance(devices, str):
        text = devices.strip()
        if text == "auto":
            return "auto", None
        if "," in text:
            ids = [int(d) for d in text.split(",") if d.strip()]
            return len(ids), ids
        devices = int(text)
    if isinstance(devices, bool) or not isinstance(devices, int):
        raise ValueError(devices)
    if devices == -1:
        return "all", None
    if devices < 1:
        raise UserError(f"trainer.devices={devices} must be >= 1 (or -1 for all GPUs)")
    return devices, None


def _distributed_elsewhere(cfg: DictConfig) -> bool:
    """Slurm (or several nodes) sets the world size itself: DDP may run one device per task."""
    nodes = OmegaConf.select(cfg, "trainer.num_nodes", default=1) or 1
    return nodes != 1 or os.environ.get("SLURM_NTASKS", "1") not in ("", "1")


def check_devices(cfg: DictConfig) -> None:
    """Refuse a device request this machine cannot serve, with the option to pass instead."""
    trainer = cfg.get("trainer")
    if trainer is None:
        return
    accelerator = str(trainer.get("accelerator") or "auto").lower()
    strategy = str(trainer.get("strategy") or "auto").lower()
    if accelerator not in (*GPU_ACCELERATORS, "auto", "cpu"):
        return  # mps, tpu, a custom accelerator: Lightning checks those
    try:
        count, ids = _requested(trainer.get("devices", "auto"))
    except (TypeError, ValueError):
        raise UserError(
            f"trainer.devices={trainer.get('devices')!r} must be a count >= 1, -1 (all GPUs) or a list of GPU ids"
        ) from None
    ddp = strategy.startswith("ddp")
    wants_gpu = accelerator in GPU_ACCELERATORS
    # a plain CPU or one-device request needs no look at the GPUs (torch stays unimported)
    looks = wants_gpu or (accelerator == "auto" and (ddp or count != 1))
    gpus = cuda_device_count() if looks else 0
    on_gpu = wants_gpu or (accelerator == "auto" and gpus > 0)
    if wants_gpu and gpus == 0:
        if ddp:
            raise UserError(
                "trainer=ddp needs CUDA GPUs and this machine has none; train on the CPU with trainer=default "
                f"(one process) or {CPU_DDP}"
            )
        raise UserError(
            f"trainer.accelerator={accelerator} (trainer=gpu) needs a CUDA GPU and this machine has none; "
            "pass trainer=default (or trainer.accelerator=cpu)"
        )
    if on_gpu:
        if ids is not None and max(ids) >= gpus:
            raise UserError(
                f"trainer.devices={ids} names GPU {max(ids)} but this machine has {gpus} (ids 0..{gpus - 1}); "
                f"pass ids below {gpus} or trainer.devices={min(len(ids), gpus)}"
            )
        if isinstance(count, int) and count > gpus:
            raise UserError(
                f"trainer.devices={count} asks for {count} GPUs but this machine has {gpus}; "
                f"pass trainer.devices={gpus} (or -1 for all of them)"
            )
        used = count if isinstance(count, int) else gpus
    else:
        if count == "all":
            raise UserError(
                "trainer.devices=-1 (every GPU) needs GPUs and this run trains on the CPU; "
                f"pass trainer.devices=1 (or {CPU_DDP})"
            )
        used = count if isinstance(count, int) else 1
    if ddp and used < 2 and not _distributed_elsewhere(cfg):
        where = f"{used} GPU" if on_gpu else "1 CPU process"
        alternative = "trainer=gpu (one GPU, no DDP)" if on_gpu else f"trainer=default, or {CPU_DDP}"
        raise UserError(f"trainer.strategy={strategy} needs at least 2 devices and gets {where}; pass {alternative}")
