#!/usr/bin/env bash
# The search recorded in BENCHMARKS.md ("tgs tune"): 24 TPE trials of charlm on the bundled corpus,
# 2 workers, median pruning, then the default configuration trained for the same steps.
# Usage: bash bench/tune_charlm.sh [FOLDER]   (about 10 min on 2 loaded cores)
set -euo pipefail
out=${1:-runs/tune-bench}
start=$(date +%s)
tgs tune charlm --study bench --out "$out" --trials 24 --workers 2 --sampler tpe --pruner median \
    --steps 120 --eval-every 40 --seed 0 \
    --param lr=log:1e-3:3e-2 --param hidden=choice:64,128,256 --param dropout=float:0:0.3
echo "search wall time: $(( $(date +%s) - start )) s"
start=$(date +%s)
tgs train charlm --steps 120 --eval-every 40 --out "$out/default" 2>&1 | tail -n 1
echo "default run wall time: $(( $(date +%s) - start )) s"
