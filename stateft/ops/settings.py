"""Launch settings of the Triton and Gluon kernels, one frozen dataclass per op, gathered in `KernelSettings`.

A `stateft.ops.backend.Backend` carries one `KernelSettings`; the dispatchers hand each implementation its op's part
(``settings=backend.settings.scan``), and the launch code reads the values it is given, never a module global. The
values become the kernels' compile-time arguments (BLOCK_*, num_warps, ...): the same values compile the same kernels.
Tests and benchmarks change them with ``dataclasses.replace`` (`KernelSettings.with_` for a nested field) and pass the
result in: ``model.set_backend(settings=settings.with_(scan={"CHUNK": 8}))``.

The field names are the launch arguments' names (as the JSON configs of benchmarks/scan_kernel.py and
``$STATEFT_SCAN_CONFIG`` spell them). Whether the kernels' softplus / sigmoid / log run on the fast hardware units is
not a setting: `triton_math.FAST` follows Triton's interpreter switch, which Triton reads once at import.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any

KERNEL_CHOICES = ("gluon", "triton")


def _check_kernels(owner: str, kernels: str) -> None:
    if kernels not in KERNEL_CHOICES:
        raise ValueError(f"{owner}: kernels must be 'gluon' or 'triton', not {kernels!r}")


@dataclass(frozen=True)
class ScanSettings:
    """The Mamba-1 selective scan (`scan_triton`, `triton_scan_kernels`, `gluon_scan_kernels`); defaults chosen by
    measurement on an H100 (the numbers: benchmarks/NOTES.md, "Numbers moved here from the code's comments").

    BLOCK_D channels x all states x BLOCK_T steps per block; the forward stores the state every CHUNK steps (a multiple
    of BLOCK_T) for the backward: 64 stores half the states of 32 at the same speed. BLOCK_T 8: the backward's main
    kernel fits in 255 registers without spills at 8 (it accumulates no frozen parameter's gradient), and longer
    blocks are faster at every model size. num_warps / bwd_BLOCK_D / bwd_num_warps: the same for the backward's main
    kernel.

    rows: copy (b l d)-major inputs (the mixer's z and dy) to unit stride along the sequence first (each program's
    loads are then rows, not scattered 16-byte pieces). Off by default: the backward reads them in place faster than
    the copies cost, and z, a view of in_proj's output that the fused conv keeps anyway, then costs no memory.

    SEG: the sequence is cut into segments of SEG steps (a multiple of CHUNK; 0 = one segment) that run as separate
    programs: a first pass finds each segment's end state from zero, a sequential pass over the segment boundaries
    (`seg_carry_kernel`) gives the states entering them, a second pass writes y. The backward does the same for the
    adjoint: more programs in flight for about 1.5x the arithmetic. -1 = by the number of programs
    (`scan_triton._n_segments`). bwd_SEG: the backward's (None: as SEG). With enough programs for the GPU (2.8b: ~2.4
    waves of the backward) neither backward segments nor a register cap for more programs per SM pay.

    kernels: "gluon" runs the forward's and the backward's main kernels in Gluon (`gluon_scan_kernels`: explicit
    register layouts) where the launch shape allows it (`scan_triton._gluon_fits`) and not in the interpreter (it has
    none); "triton" always the Triton kernels (the segments' end states and carries are Triton kernels either way).
    Gluon is the default because it is faster at every model size measured.

    dBC_slots: the backward's dB and dC are added atomically (relaxed) into that many zeroed fp32 (2 n l) partials per
    sequence (channel block k into slot k % dBC_slots), or (0) left as one partial per channel block, summed after the
    kernel: at 2.8b 640 partials, 335 MB per layer written and read again. One slot by measurement: the atomics cost
    less than writing and summing the partials, and more slots gain nothing. The order of the atomic sums varies from
    run to run: with torch's deterministic algorithms switched on (`torch.use_deterministic_algorithms`) the partials
    are used whatever this says.
    """

    BLOCK_D: int = 8
    BLOCK_T: int = 8
    num_warps: int = 1
    bwd_BLOCK_D: int = 8
    bwd_num_warps: int = 1
    CHUNK: int = 64
    rows: bool = False
    SEG: int = -1
    bwd_SEG: int | None = None
    kernels: str = "gluon"
    dBC_slots: int = 1

    def __post_init__(self) -> None:
        _check_kernels("ScanSettings", self.kernels)
        if self.CHUNK % self.BLOCK_T:
            raise ValueError(f"ScanSettings: CHUNK {self.CHUNK} must be a multiple of BLOCK_T {self.BLOCK_T}")
        slots = self.dBC_slots
        if not isinstance(slots, int) or isinstance(slots, bool) or slots < 0:
            raise ValueError(f"ScanSettings: dBC_slots must be an integer >= 0, not {slots!r}")


@dataclass(frozen=True)
class ConvSettings:
    """The fused causal conv + SiLU (`conv_triton`, `gluon_conv_kernels`).

    BLOCK_L steps x BLOCK_C channels per program; num_warps: the backward's first kernel and the one-pass backward
    (benchmarks/conv_kernel.py). kernels: "gluon" runs the Gluon kernels (x read once, the K shifts as register
    renamings; the backward in one pass, dv never written) where they apply (`conv_triton._gluon`: compiled, not
    interpreted; K = 4 and BLOCK_L 64, the layouts they are written for; the backward only for the frozen conv with no
    learned window to differentiate); "triton" the Triton kernels (forward, and the backward in two kernels).
    """

    BLOCK_L: int = 64
    BLOCK_C: int = 64
    num_warps: int = 4
    kernels: str = "gluon"

    def __post_init__(self) -> None:
        _check_kernels("ConvSettings", self.kernels)


@dataclass(frozen=True)
class SSDSettings:
    """The Mamba-2 SSD scan (`ssd_triton`, `ssd_triton_kernels`).

    BLOCK_Q steps per chunk (the (Q Q) tiles live in registers; fewer past 128 state lanes: `ssd_triton._launch_shape`),
    BLOCK_P head channels per program. PRECISION: "tf32" uses the tensor cores for fp32 dots (about 1e-3 relative
    error), "ieee" is exact fp32. The backward holds more tiles than the forward: with fp32 inputs and BLOCK_P 32 it
    asks for more shared memory than an H100 has (benchmarks/NOTES.md, "Mamba-2"), so it halves BLOCK_P until its
    kernel fits. bwd_num_stages: software-pipelining depth of its chunk loop (1: none); benchmarks/mamba2_check.py.
    """

    BLOCK_Q: int = 64
    BLOCK_P: int = 32
    num_warps: int = 8
    PRECISION: str = "tf32"
    bwd_num_stages: int = 1

    def __post_init__(self) -> None:
        if self.PRECISION not in ("tf32", "ieee"):
            raise ValueError(f"SSDSettings: PRECISION must be 'tf32' or 'ieee', not {self.PRECISION!r}")


@dataclass(frozen=True)
class CrossEntropySettings:
    """The cross-entropy rows kernel (`cross_entropy_triton`): vocabulary tiles of BLOCK_V (capped at the vocabulary
    rounded up to a power of two), num_warps per row."""

    BLOCK_V: int = 4096
    num_warps: int = 8


@dataclass(frozen=True)
class NormSettings:
    """The fused residual add + RMSNorm (`norm_triton`): ROWS rows per backward program when the weight is trained (its
    gradient leaves as one partial per program); with the weight frozen (every PEFT method) one row per program: 16
    left 256 programs of sequential rows at 1.4b. The warps follow the width (`norm_triton._warps`)."""

    ROWS: int = 16


@dataclass(frozen=True)
class KernelSettings:
    """Every op's launch settings."""

    scan: ScanSettings = field(default_factory=ScanSettings)
    conv: ConvSettings = field(default_factory=ConvSettings)
    ssd: SSDSettings = field(default_factory=SSDSettings)
    cross_entropy: CrossEntropySettings = field(default_factory=CrossEntropySettings)
    norm: NormSettings = field(default_factory=NormSettings)

    def with_(self, **ops: dict[str, Any]) -> KernelSettings:
        """A copy with some ops' values replaced: ``with_(scan={"CHUNK": 8}, ssd={"PRECISION": "ieee"})``. An unknown
        op or value name is an error (a typo must not leave the default in place)."""
        changes = {}
        for op, values in ops.items():
            if op not in {f.name for f in fields(self)}:
                raise ValueError(f"KernelSettings: unknown op {op!r}; choose from {[f.name for f in fields(self)]}")
            current = getattr(self, op)
            known = {f.name for f in fields(current)}
            unknown = sorted(set(values) - known)
            if unknown:
                raise ValueError(f"{type(current).__name__}: unknown settings {unknown}; valid: {sorted(known)}")
            changes[op] = replace(current, **values)
        return replace(self, **changes)

    def as_dict(self) -> dict[str, dict[str, Any]]:
        """{op: {name: value}} (for benchmark result files)."""
        return {f.name: {g.name: getattr(getattr(self, f.name), g.name) for g in fields(getattr(self, f.name))}
                for f in fields(self)}  # fmt: skip


DEFAULT_SETTINGS = KernelSettings()
