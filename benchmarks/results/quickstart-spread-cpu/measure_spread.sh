#!/bin/bash
# The quick start's spread (README.md here): `fairbench run erm` with its defaults, one run at a
# time, each (seed, threads) into its own runs folder; /usr/bin/time writes each process's CPU
# and wall time beside it. Paths as run on 2026-12-05 (the checkout in /work/main, output in /tmp/h8).
cd /tmp/h8
for st in 0-1 1-1 2-1 3-1 4-1 0-2 1-2; do
  s=${st%-*}; t=${st#*-}
  echo "== seed $s threads $t start $(date -Is)" >> /tmp/h8/log.txt
  /usr/bin/time -f "cpu_user=%U cpu_sys=%S wall=%e" -o /tmp/h8/time-$s-$t.txt \
    nice /work/main/.venv/bin/fairbench run erm --seed $s --threads $t --runs-dir /tmp/h8/runs-$s-$t --quiet \
    > /tmp/h8/out-$s-$t.txt 2>&1
  echo "== seed $s threads $t rc $? end $(date -Is)" >> /tmp/h8/log.txt
done
