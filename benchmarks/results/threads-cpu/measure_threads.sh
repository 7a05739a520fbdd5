#!/bin/bash
# quick start beside one busy process: default threads vs 1 thread
cd /work/main
out=/tmp/threads-cpu/threads.log
echo "start $(date -u +%FT%TZ) loadavg $(cat /proc/loadavg)" >> $out
nice -n 5 python3 -c "while True: pass" &
BUSY=$!
for mode in default one; do
  rm -rf /tmp/threads-cpu/runs-$mode
  if [ $mode = one ]; then export OMP_NUM_THREADS=1; else unset OMP_NUM_THREADS; fi
  s=$(date +%s.%N)
  nice -n 5 /usr/bin/time -f "maxrss_kb=%M user=%U sys=%S" .venv/bin/fairbench run erm --quiet --runs-dir /tmp/threads-cpu/runs-$mode > /tmp/threads-cpu/run-$mode.out 2>&1
  e=$(date +%s.%N)
  echo "$mode wall=$(echo "$e - $s" | bc) $(tail -1 /tmp/threads-cpu/run-$mode.out) threads=$(python3 -c "import json,glob;print(json.load(open(glob.glob('/tmp/threads-cpu/runs-$mode/*/environment.json')[0]))['torch_threads'])") loadavg $(cat /proc/loadavg)" >> $out
done
kill $BUSY
echo "end $(date -u +%FT%TZ)" >> $out
