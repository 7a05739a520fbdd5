#!/bin/bash
# Paired whole jobs (issue #24): one quickstart ERM job (synthface-spurious, seed 0, the suite's
# settings: batch 64, lr 0.1, 5.73e12 FLOPs = 30 epochs, one thread) trained by a baseline checkout,
# by this checkout, and by this checkout with train.validate_every=3, in turn, for ROUNDS rounds.
# Each run's metrics.json holds its time breakdown (timing.phases_s); summarise them with
#   python benchmarks/job_overhead_summary.py OUT > OUT/summary.json
# Usage: benchmarks/job_overhead_paired.sh BASELINE_CHECKOUT OUT [ROUNDS]
set -eu
BASE=$1 OUT=$2 ROUNDS=${3:-3}
HERE=$(cd "$(dirname "$0")/.." && pwd)
ARGS="erm --dataset synthface-spurious --target smiling --batch-size 64 --threads 1 --selection last --quiet
  --set data.options.n_test=2000 --set train.lr=0.1 --set train.backbone_lr=0.1 --set train.budget_flops=5.73e12"
for round in $(seq 1 "$ROUNDS"); do
  PYTHONPATH=$BASE python -m fairbench run $ARGS --runs-dir "$OUT/runs/baseline-$round" > /dev/null
  PYTHONPATH=$HERE python -m fairbench run $ARGS --runs-dir "$OUT/runs/this-$round" > /dev/null
  PYTHONPATH=$HERE python -m fairbench run $ARGS --set train.validate_every=3 --runs-dir "$OUT/runs/every3-$round" > /dev/null
done
