"""Shared fixtures: tiny random Mamba models on the CPU, offline settings, the `gpu` marker."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Without a GPU the Triton kernels run in Triton's interpreter (tests/ops). Triton reads this when it is first
# imported, and other test folders import it indirectly (lightning -> torch), so it is set here, before anything.
import torch  # noqa: E402  (importing torch does not import triton)

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import gzip  # noqa: E402
import shutil  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from stateft.models.config import MambaConfig  # noqa: E402
from stateft.models.loading import build_model  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RELEASE = REPO / "tests" / "fixtures" / "release"  # real release data (licences in its README.md)

TINY = MambaConfig(d_model=16, n_layer=2, d_state=4, vocab_size=64, dt_rank=4)
# Mamba-2: 4 heads of headdim 8, 2 groups, chunks of 4 so the chunked scan crosses chunk borders
TINY2 = MambaConfig(arch="mamba2", d_model=16, n_layer=2, d_state=8, vocab_size=64, headdim=8, ngroups=2, chunk_size=4)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def tiny_config() -> MambaConfig:
    return TINY


@pytest.fixture
def tiny_model():
    """A random Mamba-1 (d_model 16, 2 layers, d_state 4, vocab 64), fp32, CPU, fixed seed, eval mode."""
    return build_model(TINY, seed=0).eval()


def unpack_release(out: Path) -> Path:
    """Copy tests/fixtures/release into ``out`` with every ``*.gz`` file decompressed (the releases' own layout)."""
    for src in sorted(RELEASE.rglob("*")):
        if src.is_dir() or src.name == "README.md":
            continue
        dst = out / src.relative_to(RELEASE)
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.suffix == ".gz":
            with gzip.open(src, "rb") as f:
                dst.with_suffix("").write_bytes(f.read())
        else:
            shutil.copyfile(src, dst)
    return out


@pytest.fixture(scope="session")
def release_data(tmp_path_factory) -> Path:
    """The real release data (Spider dev + tables, DART dev, GLUE SST-2 validation), unpacked once per session."""
    return unpack_release(tmp_path_factory.mktemp("release"))
