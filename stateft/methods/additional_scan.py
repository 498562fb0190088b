"""Additional-scan (MambaPEFT, Yoshimura et al. 2024, arXiv:2411.03855): n extra states in every layer's scan.

Attaches to ``mixer.extra_states``. ``n: null`` takes the papers' n per architecture: 8 on Mamba-1 (SST's released
runs), 32 on Mamba-2 (the State-offset paper's Mamba-2 runs).

Mamba-1 (S6: A per channel and state). A_log' = [A_log, A_log_new] (E, N+n); B' and C' get n extra rows W_B u and
W_C u from the conv output u, as x_proj makes B and C; the extra states step with their channel's delta. Trainable per
layer: A_log_new (E, n), W_B (n, E), W_C (n, E).

Mamba-2 (SSD: one A per head, B and C shared by the heads of each of G groups). Every group's B and C get n extra
rows W_B x and W_C x from the conv output x (E), and the extra states decay with their head's A and dt: the scan is
SSD over N+n states per head (128 + 32 = 160 on the released models) and the decoding cache holds (H, P, N+n). Why:
- SSD's A is one scalar shared by all of a head's states. Extra states on the head's A keep that form, so one chunked
  scan (reference or Triton, both take any N) runs them; a decay of their own per state would not be SSD and would
  need a second scan over per-(head, state) decays.
- B and C from x, as on Mamba-1 and in both reference codes (new rows computed from the conv output): the new rows see
  the conv's local context with no new conv channels, so the conv and its cached window are unchanged.
Trainable per layer: W_B (G n, E), W_C (G n, E); no A parameter, so ``A_init`` does not apply (set it: an error).

Init, both: W_B Kaiming-uniform(a=sqrt 5) = U(-1/sqrt E, 1/sqrt E); W_C zeros, so C' reads nothing of the new states
and the model's output is unchanged at init (``A_init: sony`` excepted). ``A_init`` (Mamba-1), what each does and what
the reference codes did:
- ``continue`` (the default, ``null``): A_log_new[:, j] = log(N + 1 + j), the S4D-real init continued (A = -(1..N)
  -> -(N+1..N+n)): the new states start as the next-faster-forgetting ones of the pretrained spectrum.
- ``sst``: A_log_new = N, the raw number (SST, furiosa-ai/ssm-state-tuning modules/dim_extend.py: the new columns
  repeat the last column of the mixer constructor's un-logged A = arange(1, N+1), i.e. 16.0 on every released Mamba-1,
  where log(16) was meant). A = -e^16 = -8.9e6: exp(delta A) = 0 for any delta, so the new states are memory-less
  (h_t = delta_t B_t u_t, a per-token term C_new B_new delta_t u_t), and dL/dA_log_new, which carries a factor
  delta A exp(delta A), is ~0: A_log_new does not move. B and C as here (W_B Kaiming-uniform, W_C zeros, no bias,
  delta shared). For reproducing SST's released numbers (cfg/final/peft/*/add_scan.json: n = 8 everywhere).
- ``sony``: A_log_new[:, j] = the pretrained A_log[:, 0] (sony/MambaPEFT, ``scan_A_copy_from_last`` with the new
  states placed first, so the column copied is 0), and W_B and W_C both random: one bias-free nn.Linear(E, 2n) with
  PyTorch's default init, U(-1/sqrt E, 1/sqrt E), drawn here in the same order (B's rows, then C's). The random W_C
  makes the output change at init. Where the states sit (first or last) does not change the output.
- ``copy``: the pretrained column ``copy_column``, W_C zeros: SONY's decay with an unchanged output at init.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from stateft.errors import UserError
from stateft.methods.base import MethodSpec, freeze_all, init_generator, new_parameter, trainable_names
from stateft.methods.configs import AdditionalScanConfig
from stateft.models.backbone import device_of

# SST's released Mamba-1 runs; the State-offset paper's Mamba-2 runs; MambaPEFT's Vim-S runs (each scan direction)
DEFAULT_N = {"mamba1": 8, "mamba2": 32, "vim": 6}


class ExtraStates(nn.Module):
    """The ``extra_states`` slot: the new B and C rows W_B, W_C (rows, E) and, on Mamba-1, their A_log (E, n)."""

    def __init__(self, W_B: torch.Tensor, W_C: torch.Tensor, A_log: torch.Tensor | None = None) -> None:
        super().__init__()
        if A_log is not None:
            self.A_log = new_parameter(A_log, no_weight_decay=True)  # (E n)
        self.W_B = new_parameter(W_B)
        self.W_C = new_parameter(W_C)


def _random_rows(rows: int, d_inner: int, generator: torch.Generator) -> torch.Tensor:
    """(rows, E) Kaiming-uniform(a=sqrt 5): nn.Linear's default weight init, U(-1/sqrt E, 1/sqrt E)."""
    W = torch.empty(rows, d_inner)
    nn.init.kaiming_uniform_(W, a=math.sqrt(5), generator=generator)
    return W


def _a_log_new(mixer: nn.Module, n: int, A_init: str, copy_column: int) -> torch.Tensor:
    """A_log_new (E, n) on Mamba-1, as ``A_init`` says (module docstring)."""
    E, N = mixer.d_inner, mixer.d_state
    if A_init == "continue":
        return torch.log(torch.arange(N + 1, N + n + 1, dtype=torch.float32)).repeat(E, 1)
    if A_init == "sst":
        return torch.full((E, n), float(N))
    column = 0 if A_init == "sony" else copy_column
    if column >= N:
        raise UserError(f"additional_scan: copy_column {column} is past the model's {N} states; use 0..{N - 1}")
    return mixer.A_log.detach().float()[:, column : column + 1].repeat(1, n)


def apply(model: nn.Module, cfg: AdditionalScanConfig) -> list[str]:
    arch = model.config.arch
    n = DEFAULT_N[arch] if cfg.n is None else cfg.n
    freeze_all(model)
    generator, device = init_generator(), device_of(model)
    for mixer in model.mixers():
        E = mixer.d_inner
        if arch in ("mamba1", "vim"):  # Vim's mixers are Mamba-1 scan directions
            A_init = cfg.A_init or "continue"
            A_log = _a_log_new(mixer, n, A_init, cfg.copy_column)
            W_B = _random_rows(n, E, generator)
            W_C = _random_rows(n, E, generator) if A_init == "sony" else torch.zeros(n, E)
            extra = ExtraStates(W_B, W_C, A_log)
        else:  # n rows per group, read from x, on the head's own decay
            rows = mixer.ngroups * n
            extra = ExtraStates(_random_rows(rows, E, generator), torch.zeros(rows, E))
        mixer.extra_states = extra.to(device)
    return trainable_names(model)


SPEC = MethodSpec(AdditionalScanConfig, apply)
