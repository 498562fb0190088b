#!/bin/bash
# Build the peer, mamba_ssm's CUDA selective-scan kernel (benchmarks/peer.py, `model.scan_impl=mamba_ssm`), against
# this machine's torch and CUDA. Nothing to do when it imports already. Compiling takes minutes (MAX_JOBS parallel).
#
#   bash benchmarks/build_peer.sh [SOURCE]
#
# SOURCE: mamba-ssm's source archive, for a machine without a network (benchmarks/fetch_wheels.sh downloads one into
# benchmarks/wheels/, where it is found without the argument); otherwise pip fetches mamba-ssm from PyPI.
# Needs nvcc, ninja, setuptools, wheel and packaging in this Python; --no-build-isolation builds against the torch
# installed here (an isolated build would fetch another). MAMBA_FORCE_BUILD: compile here instead of downloading a
# prebuilt binary from outside PyPI. At run time the peer also needs einops.
set -euo pipefail
cd "$(dirname "$0")/.."
if python3 -c "import torch, selective_scan_cuda" 2>/dev/null; then
  echo "peer: mamba_ssm already built"
  exit 0
fi
src=${1:-$(ls benchmarks/wheels/mamba_ssm-*.tar.gz 2>/dev/null | head -1 || true)}
if [ -n "$src" ]; then
  spec=("--no-index" "$src")
else
  spec=("mamba-ssm==${MAMBA_SSM_VERSION:-2.3.2.post1}")
fi
MAMBA_FORCE_BUILD=TRUE MAX_JOBS=${MAX_JOBS:-16} python3 -m pip install --no-build-isolation --no-deps "${spec[@]}"
python3 -c "import torch, selective_scan_cuda, mamba_ssm.ops.selective_scan_interface; print('peer: mamba_ssm built')"
