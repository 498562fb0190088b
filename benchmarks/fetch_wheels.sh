#!/bin/bash
# Fill benchmarks/wheels/ (ignored by git) with what a GPU machine without a network needs besides its own torch and
# Triton: this checkout's resolved Python dependencies as wheels for that machine's Python, and mamba-ssm's source
# (the peer, compiled there by build_peer.sh). Run it where PyPI is reachable, after `make install` (.venv/); then on
# the GPU machine: `WHEELS=benchmarks/wheels bash benchmarks/run_gpu.sh PHASE...`.
#
#   bash benchmarks/fetch_wheels.sh [PYTHON_VERSION]      (the GPU machine's Python; default 3.12)
#
# All of train.py's dependencies are ~200 MB; the benchmark scripts and GPU tests alone import far fewer (PyYAML,
# einops, omegaconf, pytest): trim requirements.txt and rerun to carry less.
set -euo pipefail
cd "$(dirname "$0")/.."
py=${1:-3.12}
dir=benchmarks/wheels
mkdir -p "$dir"
if [ ! -f "$dir/requirements.txt" ]; then
  # what the local venv resolved, less what the GPU machine brings (torch, Triton, CUDA libraries) and stateft itself
  .venv/bin/python -m pip freeze --exclude-editable | grep -viE '^(torch|triton|nvidia-|stateft)' > "$dir/requirements.txt"
fi
.venv/bin/python -m pip download --dest "$dir" --no-deps --python-version "$py" --platform manylinux2014_x86_64 \
  --platform manylinux_2_28_x86_64 --platform any -r "$dir/requirements.txt"
# mamba-ssm's setup.py builds CUDA code even to report its requirements unless told to skip it
MAMBA_SKIP_CUDA_BUILD=TRUE MAMBA_FORCE_BUILD=TRUE .venv/bin/python -m pip download --dest "$dir" --no-deps \
  --no-build-isolation --no-binary :all: "mamba-ssm==${MAMBA_SSM_VERSION:-2.3.2.post1}"
ls "$dir" | wc -l
