"""The peer: a training step set up as the State-offset reference code did, on mamba_ssm's CUDA scan kernel.

- the whole model in bf16 (adapters too; A_log and D stay fp32), no fp32 master weights;
- unfused mixer: in_proj, conv1d + SiLU, x_proj, dt_proj, the selective-scan kernel, out_proj as separate ops;
- state offsets added after the kernel with an einsum (``silu(z) * einsum(C, h')``), the initial state by
  materialising its decay for every state (the reference called the kernel once per state dimension);
- full-vocabulary logits and ``F.cross_entropy`` on them in fp32.

This is `stateft.ops.scan_mamba_ssm` (the optional backend) driven the reference way; it needs mamba_ssm built
(``bash benchmarks/build_peer.sh`` on the GPU machine; `run_gpu.sh` runs it in the background).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from stateft.models.lm import MambaLM
from stateft.models.loading import cast_model


def make_peer(model: MambaLM) -> MambaLM:
    """Switch ``model`` (methods already applied) to the reference setup: mamba_ssm kernel, all weights bf16."""
    model.set_backend(impl="mamba_ssm")
    return cast_model(model, torch.bfloat16)


def peer_loss(model: MambaLM, input_ids: Tensor, labels: Tensor) -> Tensor:
    """Full logits, fp32 cross-entropy over the next-token targets (labels aligned with input_ids)."""
    logits = model(input_ids)[:, :-1]  # (b l-1 V) bf16
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=-100)
