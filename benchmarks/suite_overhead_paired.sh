#!/bin/bash
# Paired suites (issue #24): the quickstart suite's seed-0 slice (38 jobs: every method, trial and
# extra row of benchmarks/quickstart.toml, seed 0) run whole by a baseline checkout, then by this
# checkout, one after the other on the same machine, each with --jobs 2 at nice 5. Each suite's wall
# time is measured here ('start end' in OUT/<who>.segments); the jobs' time breakdowns go to
# OUT/<who>/per-run.csv and the suite-level figures to OUT/<who>/time.json (benchmarks/suite_time.py).
# Run it from a clean checkout (a suite refuses to train from uncommitted code). WHO: the sides to
# run, in order (default: baseline this).
# Usage: benchmarks/suite_overhead_paired.sh BASELINE_CHECKOUT OUT [WHO...]
set -eu
BASE=$1 OUT=$2
shift 2
SIDES=${*:-baseline this}
HERE=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$OUT"
sed -e 's/^seeds = .*/seeds = [0]/' -e 's/^name = "quickstart"$/name = "quickstart-seed0"/' \
    "$HERE/benchmarks/quickstart.toml" > "$OUT/quickstart-seed0.toml"
grep -q '^seeds = \[0\]$' "$OUT/quickstart-seed0.toml"
for who in $SIDES; do
  code=$HERE; [ "$who" = baseline ] && code=$BASE
  start=$(date +%s.%N)
  (cd "$code" && PYTHONPATH=$code nice -n 5 python -m fairbench suite run "$OUT/quickstart-seed0.toml" --jobs 2 \
      --runs-dir "$OUT/runs-$who" --quiet > "$OUT/$who.log" 2>&1)
  echo "$start $(date +%s.%N)" > "$OUT/$who.segments"
  mkdir -p "$OUT/$who"
  PYTHONPATH=$HERE python "$HERE/benchmarks/protocol_records.py" "$OUT/quickstart-seed0.toml" \
      --runs-dir "$OUT/runs-$who" --output "$OUT/$who" > /dev/null
  python "$HERE/benchmarks/suite_time.py" "$OUT/$who/per-run.csv" --segments "$OUT/$who.segments" \
      --workers 2 --output "$OUT/$who/time.json" > /dev/null
done
