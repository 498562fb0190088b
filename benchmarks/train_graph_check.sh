#!/bin/bash
# train.py with and without cuda_graph=true on one GPU: 130m (random init, frozen base bf16), the GLUE RTE fixture,
# 40 epochs of 5 steps; prints the median training samples/s of each (train/samples_per_sec, from epoch 2 on).
#   OUT=DIR bash benchmarks/train_graph_check.sh   (run_gpu.sh graphtrain)
set -uo pipefail
OUT=${OUT:-$(mktemp -d -t stateft_graph_XXXX)}
for g in false true; do
  timeout 200 python3 train.py model=mamba-130m model.pretrained=false model.dtype=bfloat16 method=${METHOD:-state_offset_h} \
    dataset=glue_rte dataset.path=tests/fixtures/glue_rte dataset.max_length=256 trainer=gpu logger=csv \
    trainer.max_epochs=40 trainer.log_every_n_steps=1 trainer.enable_progress_bar=false test=false \
    checkpoint.every_n_train_steps=0 cuda_graph=$g hydra.run.dir="$OUT/graph_$g" 2>&1 | grep -E "error|Error|training loss" | tail -3
done
python3 - "$OUT" <<'PY'
import csv, statistics, sys
from pathlib import Path
for g in ("false", "true"):
    rows = list(csv.DictReader(open(next(Path(sys.argv[1], f"graph_{g}").rglob("metrics.csv")))))
    v = [float(r["train/samples_per_sec"]) for r in rows if r.get("train/samples_per_sec") and int(r["epoch"]) >= 1]
    print(f"cuda_graph={g}: median {statistics.median(v):.1f} samples/s over {len(v)} steps")
PY
