"""The one backend decision: which implementation every op runs, from ``model.scan_impl`` and the device.

``impl`` (conf/model's ``scan_impl``):
- ``ref``: the PyTorch reference of every op (any device): the sequential selective scan, the chunked SSD scan, pad +
  conv1d + SiLU, the eager residual add + RMSNorm, the torch cross-entropy; nothing remade in the backward.
- ``triton``: the fused Triton kernels of every op (Gluon ones inside where they apply, `settings.py`); CUDA, or the
  CPU under ``TRITON_INTERPRET=1`` (the tests). Mamba-1 remakes u and delta in the backward if ``recompute``.
- ``mamba_ssm``: mamba_ssm's CUDA selective-scan kernel (if installed) and the reference for everything else, the
  setup of the State-offset reference code. Mamba-1 only: it has no SSD scan.
- ``auto``: ``triton`` on CUDA when Triton is installed, else ``ref`` (warning once on CUDA without Triton).
The decoding steps (`selective_step`, `ssd_step`) have only the reference.

A `Backend` is that decision made for one device type: built from the request (impl, device, recompute, kernel
settings), it names each op's implementation. A model holds one and gives it to its layers (`MambaLM.set_backend`,
again whenever the model moves to another device type); the ops in `stateft.ops` run what it names. A request this
device cannot serve (``triton`` on a CPU without the interpreter: a model built on the CPU before it moves to the GPU)
is an error at the first op that runs, not before.
"""

from __future__ import annotations

import importlib.util
import os
import warnings
from dataclasses import dataclass, field
from typing import Any

from stateft.ops.settings import DEFAULT_SETTINGS, KernelSettings

IMPLS: tuple[str, ...] = ("auto", "ref", "triton", "mamba_ssm")
HAS_TRITON = importlib.util.find_spec("triton") is not None
HAS_MAMBA_SSM = importlib.util.find_spec("selective_scan_cuda") is not None
OPS = ("scan", "scan_step", "ssd", "ssd_step", "conv", "norm", "cross_entropy")

_warned: set[str] = set()


def interpreting() -> bool:
    """Whether Triton kernels run in Triton's interpreter (on the CPU): TRITON_INTERPRET=1, read by Triton at import."""
    return os.environ.get("TRITON_INTERPRET") == "1"


def _choose(impl: str, device: str) -> tuple[dict[str, str | None], str | None]:
    """({op: implementation}, why the request cannot run on ``device`` or None)."""
    if impl not in IMPLS:
        raise ValueError(f"unknown scan impl {impl!r}; choose one of {', '.join(IMPLS)}")
    if impl == "auto":
        impl = "triton" if device == "cuda" and HAS_TRITON else "ref"
        if device == "cuda" and not HAS_TRITON and "auto" not in _warned:
            _warned.add("auto")
            warnings.warn("triton is not installed: using the slow reference scan (pip install triton)", stacklevel=4)
    ref = dict.fromkeys(OPS, "ref")
    if impl == "ref":
        return ref, None
    if impl == "triton":
        fused = {
            **ref,
            "scan": "triton",
            "ssd": "triton",
            "conv": "triton",
            "norm": "triton",
            "cross_entropy": "triton",
        }
        if HAS_TRITON and (device == "cuda" or interpreting()):
            return fused, None
        return fused, (
            "scan impl 'triton' needs triton and a CUDA tensor (or TRITON_INTERPRET=1 on CPU): "
            "pip install triton, or set model.scan_impl=ref"
        )
    chosen = {**ref, "scan": "mamba_ssm", "ssd": None}  # mamba_ssm: its selective scan, the reference elsewhere
    if HAS_MAMBA_SSM and device == "cuda":
        return chosen, None
    return chosen, (
        "scan impl 'mamba_ssm' needs mamba-ssm's CUDA build and a CUDA tensor: "
        "pip install mamba-ssm --no-build-isolation, or set model.scan_impl=auto"
    )


@dataclass(frozen=True)
class Backend:
    """The request (``impl``, ``device`` type, ``recompute``, ``settings``) and, resolved from it, each op's
    implementation: ``scan`` / ``scan_step`` (Mamba-1's selective scan and decoding step), ``ssd`` / ``ssd_step``
    (Mamba-2; None: no implementation under this impl), ``conv`` (causal conv + SiLU), ``norm`` (residual add +
    RMSNorm), ``cross_entropy`` (the LM loss's chunks): "ref", "triton" or "mamba_ssm"; ``recomputes``: Mamba-1
    remakes u and delta in the backward (asked for, and the scan is Triton's). ``dataclasses.replace`` re-resolves."""

    impl: str = "auto"
    device: str = "cpu"
    recompute: bool = True
    settings: KernelSettings = DEFAULT_SETTINGS
    scan: str = field(init=False)
    scan_step: str = field(init=False)
    ssd: str | None = field(init=False)
    ssd_step: str = field(init=False)
    conv: str = field(init=False)
    norm: str = field(init=False)
    cross_entropy: str = field(init=False)
    recomputes: bool = field(init=False)
    unavailable: str | None = field(init=False)

    def __post_init__(self) -> None:
        device = str(self.device).split(":")[0]  # a torch.device or "cuda:1": the type decides
        if not isinstance(self.recompute, bool):
            raise ValueError(f"Backend: recompute must be true or false, not {self.recompute!r}")
        chosen, unavailable = _choose(self.impl, device)
        values: dict[str, Any] = {**chosen, "device": device, "unavailable": unavailable}
        values["recomputes"] = self.recompute and chosen["scan"] == "triton"
        for name, value in values.items():
            object.__setattr__(self, name, value)

    def check(self) -> Backend:
        """Itself, if its implementations can run on its device; else the error saying why (and what to do)."""
        if self.unavailable is not None:
            raise RuntimeError(self.unavailable)
        return self

    def describe(self) -> str:
        """One line for logs: ``scan_impl=auto on cuda: scan triton, ssd triton, ...``."""
        ops = ", ".join(f"{op} {getattr(self, op)}" for op in OPS)
        return f"scan_impl={self.impl} on {self.device}: {ops}, recompute {'on' if self.recomputes else 'off'}"


def backend_for(backend: Backend | str, like: Any) -> Backend:
    """``backend`` itself, or (a string, the ``impl``) a `Backend` resolved for ``like``'s device with the default
    settings; checked that it can run. ``like``: a tensor the op runs on."""
    if isinstance(backend, str):
        backend = Backend(impl=backend, device=like.device.type)
    return backend.check()
