"""Compile the Triton scan kernels for an H100 (sm_90) without a GPU and report what the compiler made of them:
registers, local-memory spills, layout conversions and the instruction mix (shuffles, shared-memory traffic, FP work).

The kernels are launched by the real Python wrappers on small CPU tensors with the launches intercepted, so the
arguments are specialized exactly as on the GPU (unit strides, 16-byte alignment); the shapes are the model's (a
130m layer by default). Triton's bundled ptxas/nvdisasm do the rest. Use it to iterate on a kernel's register and
instruction budget between GPU runs; time it on the GPU (scan_kernel.py) before believing it is faster.

The compiler version matters: register counts matched the H100 machine's (Triton 3.6) only with Triton 3.6 here, and
3.7 laid some tiles out differently. To match it: ``pip install --no-deps --target /tmp/t36 triton==3.6.0`` and put
``/tmp/t36`` first on PYTHONPATH. Each kernel's listing goes to ``--sass DIR`` (a kernel launched twice, as the
segments' first pass and the main one, also as ``NAME_2``): comparing two trees' listings without their line comments
(``grep -v '//##'``) tells whether a source change changed the code (benchmarks/NOTES.md, "Kernels with one source").

    PYTHONPATH=. python benchmarks/sass_report.py [--shape b d n l] [--sass DIR]
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import asdict, replace
from pathlib import Path

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.backends.nvidia.compiler import CUDABackend
from triton.compiler import ASTSource
from triton.experimental.gluon._runtime import GluonASTSource
from triton.runtime.jit import native_specialize_impl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stateft.ops import conv_triton, scan_triton  # noqa: E402
from stateft.ops.settings import DEFAULT_SETTINGS, ScanSettings  # noqa: E402

TARGET = GPUTarget("cuda", 90, 32)
BIN = Path(triton.__file__).parent / "backends" / "nvidia" / "bin"
OPS = ("SHFL", "LDS", "STS", "LDSM", "STSM", "BAR", "LDG", "STG", "FFMA", "FMUL", "FADD", "MUFU")


class _Intercept:
    """Stands in for a jitted kernel: ``k[grid](*args, **kw)`` records the launch instead of running it."""

    def __init__(self, name: str, fn, log: list) -> None:
        self.name, self.fn, self.log = name, fn, log

    def __getitem__(self, grid):
        return lambda *args, **kw: self.log.append((self.name, self.fn, grid, args, kw))


# What each variant switches on in the kernels: "model" is the Mamba-1 mixer with state_offset_h (what the numbers in
# benchmarks/NOTES.md count: A, D and the delta bias frozen); "all" every optional input and output (h_0 per sequence,
# both offsets, the last state and so its gradient, the gradients of A, D and the bias) over four segments; "bare"
# none of them (no D, z, bias or softplus).
VARIANTS = ("model", "all", "bare")


@contextlib.contextmanager
def _intercepted(module) -> Iterator[list]:
    """Every ``*_kernel`` of ``module`` replaced by an `_Intercept` while inside; yields the launch log."""
    log: list = []
    saved = {k: v for k, v in vars(module).items() if k.endswith("_kernel")}
    for k, v in saved.items():
        setattr(module, k, _Intercept(k, v, log))
    try:
        yield log
    finally:
        for k, v in saved.items():
            setattr(module, k, v)


def capture(shape: tuple[int, int, int, int], variant: str = "model", settings: ScanSettings | None = None) -> list:
    """Run the scan's forward and backward on CPU tensors of ``shape`` (b d n l) with the launches intercepted, launched
    as ``settings`` says (default: the defaults)."""
    b, d, n, length = shape
    settings = settings or DEFAULT_SETTINGS.scan
    with _intercepted(scan_triton) as log:
        # the Mamba-1 mixer's layouts: u and delta (b d l), z the second half of in_proj's (b l 2d) output
        u = torch.randn(b, d, length, dtype=torch.bfloat16, requires_grad=True)
        delta = torch.randn(b, d, length, dtype=torch.bfloat16, requires_grad=True)
        xz = torch.randn(b, length, 2 * d, dtype=torch.bfloat16, requires_grad=True)
        z = xz.transpose(1, 2)[:, d:]
        A = -torch.rand(d, n)
        B, C = (torch.randn(b, n, length, dtype=torch.bfloat16) for _ in range(2))
        h_off = torch.zeros(d, n, requires_grad=True)
        D, bias, softplus, h0, y_off, last = torch.ones(d), torch.zeros(d), True, None, None, False
        if variant == "all":
            settings = replace(settings, SEG=max(length // 4, settings.CHUNK))
            h0 = torch.zeros(b, d, n, requires_grad=True)
            y_off, last = torch.zeros(d, requires_grad=True), True
            for t in (A, D, bias):
                t.requires_grad_(True)
        elif variant == "bare":
            D, z, bias, softplus, h_off = None, None, None, False, None
        out = scan_triton.selective_scan_triton(
            u=u, delta=delta, A=A, B=B, C=C, D=D, z=z, delta_bias=bias, delta_softplus=softplus, initial_state=h0,
            h_offset=h_off, y_offset=y_off, return_last_state=last, settings=settings,
        )  # fmt: skip
        y, state = out if last else (out, None)
        loss = y.float().sum() + (state.sum() if last else 0)
        loss.backward()
    return log


def capture_conv(shape: tuple[int, int, int, int]) -> list:
    """The fused conv's forward and backward as the Mamba-1 mixer runs them (x a view of in_proj's output, the conv
    frozen, u used twice), on CPU tensors of ``shape`` (b d n l; n unused) with the launches intercepted."""
    b, d, _n, length = shape
    with _intercepted(conv_triton) as log:
        xz = torch.randn(b, length, 2 * d, dtype=torch.bfloat16, requires_grad=True)
        x = xz.transpose(1, 2)[:, :d]
        w, bias = torch.randn(d, 1, 4, dtype=torch.bfloat16), torch.randn(d, dtype=torch.bfloat16)
        u1, u2 = conv_triton.conv_silu_triton(x=x, window=None, weight=w, bias=bias, two=True)
        (u1.float().sum() + u2.float().sum()).backward()
    return log


def compile_launch(fn, args, kw):
    """Triton's own argument specialization, then a compile for TARGET."""
    params = fn.params
    bound = dict(zip([p.name for p in params], args))
    bound.update({k: v for k, v in kw.items() if k in bound or any(p.name == k for p in params)})
    options = {k: v for k, v in kw.items() if not any(p.name == k for p in params)}
    signature, constexprs, attrs = {}, {}, {}
    for i, p in enumerate(params):
        v = bound[p.name]
        if p.is_constexpr:
            signature[p.name] = "constexpr"
            constexprs[(i,)] = v
            continue
        ty, key = native_specialize_impl(
            CUDABackend, v, False, not p.do_not_specialize, not p.do_not_specialize_on_alignment
        )
        signature[p.name] = ty
        if ty == "constexpr":
            constexprs[(i,)] = key
        elif isinstance(key, str) and key:
            attrs[(i,)] = CUDABackend.parse_attr(key)
    source = GluonASTSource if getattr(fn, "is_gluon", lambda: False)() else ASTSource
    src = source(fn=fn, signature=signature, constexprs=constexprs, attrs=attrs)
    return triton.compile(src, target=TARGET, options=options)


def report(kernel, sass_path: Path) -> dict:
    sass_path.with_suffix(".cubin").write_bytes(kernel.asm["cubin"])
    sass_path.with_suffix(".ttgir").write_text(kernel.asm["ttgir"])  # the layouts Triton chose
    cubin = str(sass_path.with_suffix(".cubin"))
    run = {"capture_output": True, "text": True, "check": True}
    # -g: each instruction under the source line it came from (inlined helpers: the helper's line)
    sass = subprocess.run([str(BIN / "nvdisasm"), "-c", "-g", cubin], **run).stdout
    sass_path.write_text(sass)
    res = subprocess.run([str(BIN / "cuobjdump"), "-res-usage", cubin], **run).stdout
    ops = collections.Counter(
        m.group(1) for m in re.finditer(r"^\s+/\*[0-9a-f]{4}\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_]*)", sass, re.M)
    )
    return {
        "regs": int(re.search(r"REG:(\d+)", res).group(1)),
        "spill_bytes": int(re.search(r"LOCAL:(\d+)", res).group(1)),
        "stack_bytes": int(re.search(r"STACK:(\d+)", res).group(1)),  # spilled registers live here too
        "convert_layout": kernel.asm["ttgir"].count("ttg.convert_layout"),
        "instructions": sum(ops.values()),
        **{op: ops[op] for op in OPS},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", type=int, nargs=4, default=(4, 1536, 16, 1024), metavar=("B", "D", "N", "L"))
    ap.add_argument("--sass", type=Path, default=Path("/tmp/stateft_sass"), help="where the SASS/TTGIR listings go")
    ap.add_argument("--variant", choices=VARIANTS, default="model", help="which optional inputs are on (VARIANTS)")
    ap.add_argument("--op", choices=("scan", "conv"), default="scan", help="the scan's kernels or the fused conv's")
    ap.add_argument("--config", type=json.loads, default={}, help='over ScanSettings: \'{"kernels": "triton"}\'')
    a = ap.parse_args()
    settings = replace(DEFAULT_SETTINGS.scan, **a.config)
    a.sass.mkdir(parents=True, exist_ok=True)
    print(f"# Triton {triton.__version__}, {a.op} kernels for sm_90, b d n l = {tuple(a.shape)}, {asdict(settings)}")
    launches = capture(tuple(a.shape), a.variant, settings) if a.op == "scan" else capture_conv(tuple(a.shape))
    seen: collections.Counter = collections.Counter()
    for name, fn, _grid, args, kw in launches:
        seen[name] += 1  # a kernel launched twice (the segments' first pass, then the main one): name_2.sass
        stem = name if seen[name] == 1 else f"{name}_{seen[name]}"
        r = report(compile_launch(fn, args, kw), a.sass / f"{stem}.sass")
        print(name, " ".join(f"{k} {v}" for k, v in r.items()))


if __name__ == "__main__":
    main()
