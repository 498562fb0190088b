#!/bin/bash
# The GPU benchmarks and tests of a clone, in one call: builds the peer (mamba_ssm) in the background while the phases
# that do not need it run, then the phases asked for, in order. Everything a phase writes goes under $OUT (default: a
# new temporary folder, printed first); nothing is written into the tree. Results worth keeping are curated by hand
# into benchmarks/results/<benchmark>.md (benchmarks/NOTES.md, "How to run").
#
#   bash benchmarks/run_gpu.sh PHASE...
#
#   tests      pytest -m gpu over tests/ops, tests/models, tests/methods, the graph and batched-decoding tests
#   gentests   pytest -m gpu over the graph and batched-decoding tests alone
#   peertests  the mamba_ssm comparison tests (waits for the peer)
#   step130    training step, 130m, all methods: eager, graphed, peer          -> results/train_step.md
#   stepbig    1.4b and 2.8b, state_offset_h and lora                           -> results/train_step.md
#   stepfull   1.4b and 2.8b, full fine-tuning                                  -> results/train_step.md
#   stepsmall  370m and 790m, all methods                                       -> results/train_step.md
#   m2step     mamba2-130m and mamba2-1.3b (no peer)                            -> results/train_step.md
#   scan       scan kernels alone, launch shapes (+ mamba_ssm's kernel)        -> results/scan_kernel.md
#   scanlong   one 8k-token sequence, segments                                  -> results/scan_kernel.md
#   conv       conv kernels alone                                               -> results/conv_kernel.md
#   gen, gen2  decoding, Mamba-1 and Mamba-2                                    -> results/generate.md
#   m2check    Mamba-2 SSD scan against the reference                           -> results/mamba2_check.md
#   m2train    train.py on mamba2-1.3b with the Spider fixture                  -> results/mamba2_check.md
#   e2e        train.py and eval.py as a user runs them vs the step benchmark   -> results/e2e.md (E2E_SIZES,
#              E2E_METHODS, E2E_EXAMPLES, E2E_STEPS; E2E_INVARIANT=1 adds the batch-invariant evaluations;
#              E2E_EVAL_BATCH sets the batched evaluations' eval_batch_size)
#   serve      32 requests over 8 state-offset adapters: one mixed batch vs adapter by adapter (SERVE_SIZE)
#   serve_lora, serve_continuous   the same with LoRA adapters in the mix; continuous against static batches
#   graphtrain train.py with and without cuda_graph                             -> results/train_graph.md
#   profile, profile14   where the GPU time goes, 130m / 1.4b                   -> results/profile.md
#   cfgab      graphed 1.4b state_offset_h step per scan setting, side by side: CFGS='{"CHUNK": 32} {}' (JSON objects
#              of ScanSettings values; CFG_SIZES='1.4b 2.8b')
#   ab         the same step for another commit's tree against this one: AB_BASE=DIR holding that tree
#              (`git archive COMMIT stateft conf benchmarks | tar -x -C DIR`; AB_SIZES='1.4b')
#
# Environment: OUT (output folder), WHEELS (a folder from benchmarks/fetch_wheels.sh: installed into a temporary
# folder first, for a machine without a network), NOPEER=1 (no peer: its columns and tests are skipped),
# STATEFT_CODE (recorded as the measured commit, e.g. `STATEFT_CODE=$(git describe --always --dirty)` where the
# command is composed: a copy of the tree may carry a stale .git; benchmarks/provenance.py).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$(mktemp -d -t stateft_gpu_XXXX)}
mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd)
state=$(mktemp -d -t stateft_run_XXXX)  # this call's own markers (the peer build's), not in the tree
trap 'rm -rf "$state"' EXIT
echo "output: $OUT"
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
if [ -n "${WHEELS:-}" ]; then
  # the wheels and the pure-Python source archives (antlr4, which omegaconf imports); mamba-ssm's is build_peer.sh's
  python3 -m pip install -q --no-index --no-deps --no-build-isolation --target "$state/site" "$WHEELS"/*.whl \
    $(ls "$WHEELS"/*.tar.gz 2>/dev/null | grep -v /mamba_ssm-) && export PYTHONPATH=$PYTHONPATH:$state/site
fi
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,memory.used --format=csv | tee "$OUT/gpu.txt"
python3 benchmarks/provenance.py | tee "$OUT/provenance.txt"

if [ -n "${NOPEER:-}" ]; then
  echo "peer: skipped" | tee "$state/peer_done"
else
  src=$(ls "${WHEELS:-benchmarks/wheels}"/mamba_ssm-*.tar.gz 2>/dev/null | head -1)  # none: pip fetches it
  (bash benchmarks/build_peer.sh $src > "$OUT/peer_build.log" 2>&1; echo "rc $?" > "$state/peer_done") &
fi
wait_peer() { while [ ! -f "$state/peer_done" ]; do sleep 5; done; tail -2 "$OUT/peer_build.log" 2>/dev/null; }
peer() { [ -n "${NOPEER:-}" ] && echo "--backends stateft graph"; }  # the train-step backends without the peer
step() { local limit=$1; shift; timeout "$limit" python3 benchmarks/train_step.py --out "$OUT" "$@" 2>&1 | grep -v "^{"; }

for phase in "$@"; do
  echo "=== $phase $(date -u +%T)"
  case $phase in
    gentests) timeout 300 python3 -m pytest tests/test_decode_graph.py tests/test_train_graph.py \
        tests/test_generation_batch.py -m gpu -q 2>&1 | tee "$OUT/gpu_gen_tests.log" | tail -4 ;;
    tests) timeout 600 python3 -m pytest tests/ops tests/models tests/methods tests/test_decode_graph.py \
        tests/test_train_graph.py tests/test_generation_batch.py -m gpu -q 2>&1 | tee "$OUT/gpu_tests.log" | tail -4 ;;
    peertests) wait_peer; timeout 120 python3 -m pytest tests/ops/test_scan_mamba_ssm.py -q --tb=short 2>&1 | tail -4 ;;
    step130) wait_peer; step 300 --sizes 130m --name train_step_130m $(peer) | tail -9 ;;
    stepbig) wait_peer; step 400 --sizes 1.4b 2.8b --methods state_offset_h lora --warmup 2 --iters 6 \
        --name train_step_big $(peer) | tail -8 ;;
    stepfull) wait_peer; step 300 --sizes 1.4b 2.8b --methods full --warmup 2 --iters 6 --name train_step_full \
        $(peer) | tail -6 ;;
    stepsmall) wait_peer; step 420 --sizes 370m 790m --name train_step_small $(peer) | tail -14 ;;
    m2step) step 300 --sizes mamba2-130m mamba2-1.3b --methods state_offset_h lora --backends stateft graph \
        --name train_step_mamba2 | tail -8 ;;
    scan) wait_peer; OUT=$OUT timeout 300 python3 benchmarks/scan_kernel.py 2>&1 | tee "$OUT/scan_kernel.log" | grep -v "^{" ;;
    scanlong) timeout 150 python3 benchmarks/scan_kernel.py --long 2>&1 | tee "$OUT/scan_long.log" | tail -8 ;;
    conv) timeout 150 python3 benchmarks/conv_kernel.py --out "$OUT" 2>&1 | grep "^|" ;;
    gen) timeout 150 python3 benchmarks/generate.py --sizes 130m 1.4b --out "$OUT" 2>&1 | tail -6 ;;
    gen2) timeout 200 python3 benchmarks/generate.py --sizes mamba2-130m mamba2-1.3b --out "$OUT" --name generate_mamba2 \
        2>&1 | tail -5 ;;
    m2check) timeout 200 python3 benchmarks/mamba2_check.py --out "$OUT/mamba2_check.json" 2>&1 \
        | tee "$OUT/mamba2_check.log" | tail -25 ;;
    m2train) HF_HUB_OFFLINE=1 timeout 300 python3 train.py model=mamba2-1.3b method=state_offset_h method.rank=64 \
        dataset=spider model.pretrained=false dataset.path=tests/fixtures/spider trainer=gpu logger=csv \
        trainer.max_epochs=2 dataset.num_beams=1 dataset.max_new_tokens=16 hydra.run.dir="$OUT/m2train" 2>&1 \
        | tee "$OUT/m2train.log" | grep -v "━" | tail -25 ;;
    e2e) timeout 590 python3 benchmarks/e2e.py --out "$OUT" --sizes ${E2E_SIZES:-130m 1.4b} \
        --methods ${E2E_METHODS:-state_offset_h lora} --examples ${E2E_EXAMPLES:-32} --steps ${E2E_STEPS:-80} \
        --wait-for "$state/peer_done" $([ -n "${NOPEER:-}" ] && echo --no-peer) $([ "${E2E_INVARIANT:-}" = 1 ] && echo --invariant) ${E2E_EVAL_BATCH:+--eval-batch $E2E_EVAL_BATCH} 2>&1 | tee "$OUT/e2e.log" | grep -v "^{" ;;
    serve) timeout 300 python3 benchmarks/serve.py --size ${SERVE_SIZE:-130m} --out "$OUT" 2>&1 | tee "$OUT/serve.log" | tail -4 ;;
    serve_lora) timeout 300 python3 benchmarks/serve.py --size ${SERVE_SIZE:-130m} --methods state_offset_h,lora \
        --out "$OUT" 2>&1 | tee "$OUT/serve_lora.log" | tail -4 ;;
    serve_continuous) timeout 300 python3 benchmarks/serve.py --size ${SERVE_SIZE:-130m} --methods state_offset_h,lora \
        --continuous --max-batch 8 --out "$OUT" 2>&1 | tee "$OUT/serve_continuous.log" | tail -4 ;;
    graphtrain) HF_HUB_OFFLINE=1 OUT=$OUT bash benchmarks/train_graph_check.sh 2>&1 | tee "$OUT/train_graph_check.log" ;;
    profile) timeout 120 python3 benchmarks/profile_step.py --size 130m --method state_offset_h 2>&1 \
        | tee "$OUT/profile_130m.log" | head -45 ;;
    profile14) timeout 150 python3 benchmarks/profile_step.py --size 1.4b --method state_offset_h --rows 25 2>&1 \
        | tee "$OUT/profile_1.4b.log" | cut -c1-72,120-190 | tail -30 ;;
    cfgab) for cfg in ${CFGS:-'{}'}; do
        STATEFT_SCAN_CONFIG="$cfg" step 200 --sizes ${CFG_SIZES:-1.4b} --methods state_offset_h \
          --backends graph --warmup 2 --iters 6 --name "cfg_ab_$(echo "$cfg" | tr -dc 'a-zA-Z0-9_')" \
          | grep "^|" | tail -2 | sed "s/^/$cfg /"
      done ;;
    ab) for side in base new; do
        root=.; [ "$side" = base ] && root=${AB_BASE:?AB_BASE: a folder with the other commit\'s tree}
        (cd "$root" && timeout 300 python3 benchmarks/train_step.py --out "$OUT" --sizes ${AB_SIZES:-1.4b} \
          --methods state_offset_h --backends graph --warmup 2 --iters 6 --name "ab_$side" 2>&1) \
          | grep "^|" | tail -2 | sed "s/^/$side /"
      done ;;
    *) echo "unknown phase $phase (see the header of benchmarks/run_gpu.sh)" ;;
  esac
done
echo "=== end $(date -u +%T); output: $OUT"
