#!/bin/bash
# One device call: build the peer in the background, run the GPU tests, then time. Output under $OUT.
#   bash benchmarks/run_gpu.sh PHASE...   phases: tests peertests scan scanpick scanlong profile profile14 step130
#   step130g stepbig stepbigg stepbig5 stepsmall stepfull stepall m2check m2train m2step graphtrain gen gen2 peerso conv
#   gluontests gluonab cfgab (CFGS='json json...') ab (AB_BASE=dir, e.g. .ab: git archive COMMIT stateft conf benchmarks | tar -x -C .ab; AB_SIDES='base new' AB_SIZES='1.4b')
#   (NOPEER=1: no peer build; scanpick exports its best launch config to the later phases)
set -uo pipefail
export PYTHONPATH=.:.whl/site PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,memory.used --format=csv | tee "$OUT/gpu.txt"
if [ -n "${NOPEER:-}" ]; then
  echo "peer: skipped"; touch /tmp/peer_done
elif python3 -c "import torch, selective_scan_cuda" 2>/dev/null; then
  echo "peer: already built on this machine"; touch /tmp/peer_done
else
  (MAX_JOBS=16 bash .peer/mamba_ssm_peer.sh build > "$OUT/peer_build.log" 2>&1; touch /tmp/peer_done) &
fi
app_deps() { pip install -q --no-index --no-deps --target /tmp/site .whl/app/*.whl >/dev/null 2>&1; }  # hydra etc.
wait_peer() { while [ ! -f /tmp/peer_done ]; do sleep 5; done; tail -2 "$OUT/peer_build.log" 2>/dev/null; }
for phase in "$@"; do
  echo "=== $phase $(date -u +%T)"
  case $phase in
    tests) timeout 400 python3 -m pytest tests/ops tests/models tests/methods tests/test_decode_graph.py tests/test_train_graph.py -m gpu -q 2>&1 | tee "$OUT/gpu_tests.log" | tail -4 ;;
    peertests) wait_peer; timeout 120 python3 -m pytest tests/ops/test_scan_mamba_ssm.py -q --tb=short 2>&1 | grep -E "Error|assert|passed|failed" | head -12 ;;
    scan) wait_peer; timeout 200 python3 benchmarks/scan_kernel.py 2>&1 | tee "$OUT/scan_kernel.log" | grep -v "^{" ;;
    profile) timeout 100 python3 benchmarks/profile_step.py --size 130m --method state_offset_h 2>&1 | tee "$OUT/profile.log" | head -45 ;;
    step130) wait_peer; timeout 240 python3 benchmarks/train_step.py --sizes 130m --out "$OUT" --name train_step_130m ${NOPEER:+--backends stateft} 2>&1 | tail -9 ;;
    stepbig) wait_peer; timeout 300 python3 benchmarks/train_step.py --sizes 1.4b 2.8b --methods state_offset_h lora --out "$OUT" --name train_step_big ${NOPEER:+--backends stateft} 2>&1 | tail -7 ;;
    scanpick) wait_peer; timeout 200 python3 benchmarks/scan_kernel.py 2>&1 | tee "$OUT/scan_kernel.log" | grep -v "^{";
      export STATEFT_SCAN_CONFIG=$(cat "$OUT/scan_best.json") ;;
    stepsmall) wait_peer; timeout 420 python3 benchmarks/train_step.py --sizes 130m 370m 790m --out "$OUT" --name train_step_small 2>&1 | grep -v "^{" | tail -20 ;;
    stepbig5) wait_peer; timeout 400 python3 benchmarks/train_step.py --sizes 1.4b 2.8b --warmup 2 --iters 6 --out "$OUT" --name train_step_big 2>&1 | grep -v "^{" | tail -14 ;;
    m2check) timeout 200 python3 benchmarks/mamba2_check.py --out "$OUT/mamba2_check.json" 2>&1 | tee "$OUT/mamba2_check.log" | tail -25 ;;
    m2train) app_deps;
      PYTHONPATH=.:/tmp/site HF_HUB_OFFLINE=1 timeout 240 python3 train.py model=mamba2-1.3b method=state_offset_h \
        method.rank=64 dataset=spider model.pretrained=false dataset.path=tests/fixtures/spider trainer=gpu \
        logger=csv trainer.max_epochs=2 dataset.num_beams=1 dataset.max_new_tokens=16 hydra.run.dir="$OUT/m2train" \
        2>&1 | tee "$OUT/m2train.log" | grep -v "━" | tail -25 ;;
    step130g) wait_peer; timeout 300 python3 benchmarks/train_step.py --sizes 130m --out "$OUT" --name train_step_130m 2>&1 | grep -v "^{" | tail -9 ;;
    scanlong) timeout 150 python3 benchmarks/scan_kernel.py --long 2>&1 | tee "$OUT/scan_long.log" | tail -8 ;;
    m2step) timeout 300 python3 benchmarks/train_step.py --sizes mamba2-130m mamba2-1.3b --methods state_offset_h lora \
      --backends stateft graph --out "$OUT" --name train_step_mamba2 2>&1 | grep -v "^{" | tail -8 ;;
    stepbigg) wait_peer; timeout 360 python3 benchmarks/train_step.py --sizes 1.4b 2.8b --methods state_offset_h lora \
      --warmup 2 --iters 6 --out "$OUT" --name train_step_big 2>&1 | grep -v "^{" | tail -8 ;;
    stepfull) wait_peer; timeout 300 python3 benchmarks/train_step.py --sizes 1.4b 2.8b --methods full --warmup 2 --iters 6 \
      --out "$OUT" --name train_step_full 2>&1 | grep -v "^{" | tail -6 ;;
    profile14) timeout 120 python3 benchmarks/profile_step.py --size 1.4b --method state_offset_h --rows 25 2>&1 \
      | tee "$OUT/profile_1.4b.log" | cut -c1-72,120-190 | tail -30 ;;
    gen2) timeout 200 python3 benchmarks/generate.py --sizes mamba2-130m mamba2-1.3b --out "$OUT" --name generate_mamba2 2>&1 | tail -5 ;;
    graphtrain) app_deps;
      PYTHONPATH=.:/tmp/site HF_HUB_OFFLINE=1 bash benchmarks/train_graph_check.sh 2>&1 | tee "$OUT/train_graph_check.log" ;;
    gluontests) timeout 300 python3 -m pytest tests/ops/test_scan_gluon.py tests/ops/test_scan_triton.py -m gpu -q 2>&1 \
      | tee "$OUT/gluon_tests.log" | tail -6 ;;
    gluonab) for impl in triton gluon; do  # the Triton and the Gluon kernel sets side by side, graphed step
        STATEFT_SCAN_CONFIG="{\"kernels\": \"$impl\"}" timeout 200 python3 benchmarks/train_step.py --sizes 130m \
          --methods state_offset_h state_offset_y lora --backends graph --out "$OUT" --name "gluon_ab_130m_$impl" 2>&1 | grep "^|" | tail -3
        STATEFT_SCAN_CONFIG="{\"kernels\": \"$impl\"}" timeout 300 python3 benchmarks/train_step.py --sizes 1.4b 2.8b \
          --methods state_offset_h lora --backends graph --warmup 2 --iters 6 --out "$OUT" --name "gluon_ab_big_$impl" 2>&1 | grep "^|" | tail -4
      done ;;
    cfgab) for cfg in ${CFGS:-'{}'}; do  # scan launch configs side by side (CFGS: JSON objects), 1.4b graphed
        STATEFT_SCAN_CONFIG="$cfg" timeout 150 python3 benchmarks/train_step.py --sizes ${CFG_SIZES:-1.4b} --methods state_offset_h \
          --backends graph --warmup 2 --iters 6 --out "$OUT" --name "cfg_ab_$(echo "$cfg" | tr -dc 'a-zA-Z0-9_')" 2>&1 \
          | grep "^|" | tail -2 | sed "s/^/$cfg /"
      done ;;
    ab) for side in ${AB_SIDES:-base new}; do  # the working tree against AB_BASE (another commit's tree: git archive), graphed
        root=.; [ "$side" = base ] && root=$AB_BASE
        timeout 280 python3 "$root/benchmarks/train_step.py" --sizes ${AB_SIZES:-1.4b} --methods state_offset_h \
          --backends graph --warmup 2 --iters 6 --out "$OUT" --name "ab_${side}_$(basename "$root")" 2>&1 | grep "^|" | tail -2 | sed "s/^/$side /"
      done ;;
    conv) timeout 150 python3 benchmarks/conv_kernel.py --out "$OUT" 2>&1 | grep "^|" ;;
    gen) timeout 150 python3 benchmarks/generate.py --sizes 130m 1.4b --out "$OUT" 2>&1 | tail -6 ;;
    stepall) wait_peer; timeout 560 python3 benchmarks/train_step.py --out "$OUT" 2>&1 | tail -30 ;;
    peerso) wait_peer; d=$(python3 -c "import mamba_ssm, os; print(os.path.dirname(os.path.dirname(mamba_ssm.__file__)))");
      (cd "$d" && tar czf "$OUT/peer_site.tgz" mamba_ssm selective_scan_cuda*.so) && ls -la "$OUT/peer_site.tgz" ;;
  esac
done
echo "=== end $(date -u +%T)"
