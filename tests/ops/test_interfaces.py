"""Every op has one interface (stateft/ops/interfaces.py): each implementation's signature is the op's, parameter for
parameter (keyword-only, same names, order, defaults and types), and each public entry point in stateft.ops takes the
same arguments with ``backend`` in place of ``settings``."""

from __future__ import annotations

import inspect

import pytest

import stateft.ops as ops
from stateft.ops.backend import OPS
from stateft.ops.interfaces import IMPLEMENTATIONS, implementation

pytest.importorskip("triton")  # the Triton implementations import it

ENTRY_POINTS = {
    "scan": ops.selective_scan,
    "scan_step": ops.selective_step,
    "ssd": ops.ssd_scan,
    "ssd_step": ops.ssd_step,
    "conv": ops.conv_silu,
    "norm": ops.add_rms_norm,
    "cross_entropy": None,  # the chunked loss around the op: checked apart (test_chunked_loss_passes_keywords)
}
CASES = [(op, name) for op, (_, impls) in IMPLEMENTATIONS.items() for name in impls]


def op_signature(op: str) -> inspect.Signature:
    """The op's definition: its Protocol's ``__call__`` without ``self``."""
    sig = inspect.signature(IMPLEMENTATIONS[op][0].__call__)
    return sig.replace(parameters=list(sig.parameters.values())[1:])


def drift(sig: inspect.Signature, want: inspect.Signature) -> list[str]:
    """How ``sig`` differs from ``want`` (empty: the same)."""
    got, exp = list(sig.parameters.values()), list(want.parameters.values())
    problems = [f"parameters {[p.name for p in got]} != {[p.name for p in exp]}"] if len(got) != len(exp) else []
    for g, w in zip(got, exp):
        for what in ("name", "kind", "default", "annotation"):
            if getattr(g, what) != getattr(w, what):
                problems.append(f"{w.name}: {what} {getattr(g, what)!r} != {getattr(w, what)!r}")
    if sig.return_annotation != want.return_annotation:
        problems.append(f"returns {sig.return_annotation!r} != {want.return_annotation!r}")
    return problems


def test_every_backend_field_has_an_op():
    assert set(IMPLEMENTATIONS) == set(OPS) == set(ENTRY_POINTS)


@pytest.mark.parametrize(("op", "name"), CASES, ids=[f"{op}-{name}" for op, name in CASES])
def test_implementation_signature_is_the_ops(op, name):
    want = op_signature(op)
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in want.parameters.values()), op
    assert drift(inspect.signature(implementation(op, name)), want) == []


@pytest.mark.parametrize("op", [op for op, fn in ENTRY_POINTS.items() if fn is not None])
def test_entry_point_takes_the_ops_arguments_and_a_backend(op):
    want = op_signature(op)
    params = [p for p in want.parameters.values() if p.name != "settings"]
    backend = inspect.signature(ops.selective_scan).parameters["backend"]
    want = want.replace(parameters=[*params, backend])
    assert drift(inspect.signature(ENTRY_POINTS[op]), want) == []


def test_a_drifted_signature_is_caught():
    """The comparison sees a reordered, renamed, positional or re-defaulted parameter."""
    want = op_signature("ssd_step")
    good = inspect.signature(implementation("ssd_step", "ref"))
    params = list(good.parameters.values())
    swapped = good.replace(parameters=[params[1], params[0], *params[2:]])
    renamed = good.replace(parameters=[params[0].replace(name="h"), *params[1:]])
    positional = good.replace(parameters=[p.replace(kind=inspect.Parameter.POSITIONAL_OR_KEYWORD) for p in params])
    redefault = good.replace(parameters=[*params[:-1], params[-1].replace(default=(0.0, 1.0))])
    assert drift(good, want) == []
    for bad in (swapped, renamed, positional, redefault):
        assert drift(bad, want)


def test_unknown_implementation_is_one_clear_error():
    with pytest.raises(ValueError, match="no 'cuda' implementation of scan; there are: ref, triton, mamba_ssm"):
        implementation("scan", "cuda")
