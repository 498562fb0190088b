"""Shared helpers for the benchmarks: model sizes from conf/model, timing, result files."""

from __future__ import annotations

import dataclasses
import json
import statistics
from datetime import UTC, datetime
from pathlib import Path

import torch
import yaml

from benchmarks.provenance import current as provenance
from stateft.models.config import MambaConfig

REPO = Path(__file__).resolve().parents[1]
# Where a run's result files go unless --out says otherwise: ignored by git (benchmarks/.gitignore). What is kept is
# curated by hand into benchmarks/results/<benchmark>.md (benchmarks/NOTES.md, "How to run").
RUNS = REPO / "benchmarks" / "runs"
SIZES = ("130m", "370m", "790m", "1.4b", "2.8b")  # Mamba-1, named by size
MAMBA2_SIZES = ("mamba2-130m", "mamba2-370m", "mamba2-780m", "mamba2-1.3b", "mamba2-2.7b")  # named in full


def _model_yaml(size: str) -> dict:
    """conf/model's node for ``mamba-<size>`` (or ``mamba2-...`` given in full)."""
    name = size if size.startswith("mamba2-") else f"mamba-{size}"
    return yaml.safe_load((REPO / "conf" / "model" / f"{name}.yaml").read_text())


def model_config(size: str) -> MambaConfig:
    """The architecture of ``mamba-<size>`` (or of ``mamba2-...`` given in full) from conf/model."""
    names = {f.name for f in dataclasses.fields(MambaConfig)}
    return MambaConfig(**{k: v for k, v in _model_yaml(size).items() if k in names})


def model_recompute(size: str) -> bool:
    """conf/model's `recompute` for ``mamba-<size>`` (Mamba-1: u and delta remade in the backward), default true."""
    return bool(_model_yaml(size).get("recompute", True))


def device_name() -> str:
    if not torch.cuda.is_available():
        return "cpu"
    return torch.cuda.get_device_name().replace(" ", "-")


def stamp() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d")


def time_cuda(fn, warmup: int = 3, iters: int = 10) -> tuple[float, list[float]]:
    """Median milliseconds of ``fn()`` over ``iters`` runs, CUDA events around each, after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times), times


def write_results(name: str, payload: dict, markdown: str, out_dir: Path) -> tuple[Path, Path]:
    """Write ``<name>_<date>_<device>.json`` and ``.md`` under ``out_dir``, each with the run's date, device, torch and
    Triton versions and which code ran (`provenance.current`: commit, dirty, source_sha)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    base = f"{name}_{stamp()}_{device_name()}"
    meta = {"date": stamp(), "device": device_name(), "torch": torch.__version__, "triton": _triton_version()}
    meta.update(provenance())
    json_path = out_dir / f"{base}.json"
    json_path.write_text(json.dumps({"meta": meta, **payload}, indent=1))
    md_path = out_dir / f"{base}.md"
    md_path.write_text(f"<!-- {json.dumps(meta)} -->\n" + markdown)
    return json_path, md_path


def _triton_version() -> str | None:
    try:
        import triton
    except ImportError:
        return None
    return triton.__version__
