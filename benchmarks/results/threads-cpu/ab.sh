#!/bin/bash
# paired A/B: one epoch of the quick start beside one busy process, 2 threads (A) vs 1 thread (B)
cd /work/main
echo "start $(date -u +%FT%TZ) loadavg $(cat /proc/loadavg)"
python3 -c "while True: pass" &
BUSY=$!
farm-bench -n 3 --warmup 0 --timeout 1800 \
  --vs ".venv/bin/fairbench run erm --epochs 1 --threads 1 --quiet --force --runs-dir /tmp/ab" \
  -- .venv/bin/fairbench run erm --epochs 1 --threads 2 --quiet --force --runs-dir /tmp/ab
kill $BUSY
echo "end $(date -u +%FT%TZ) loadavg $(cat /proc/loadavg)"
