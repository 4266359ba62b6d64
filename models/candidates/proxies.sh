#!/usr/bin/env bash
# The 15-epoch recipe proxies (issue: a 90% reference). Each proxy is the `fast` recipe at 15 epochs with
# one change, judged on EMA validation accuracy (5,000 held-out training images; the test split chooses
# nothing). Run from the repository root:  bash models/candidates/proxies.sh [NAME ...]
# Resumable: a finished proxy (metrics.json) is skipped, an unfinished one resumes from its last epoch
# (its run folder is committed at the end of each session), a new one starts. Runs one at a time, niced,
# so tests and other work keep priority on the 2 cores. Proxies are not shipped: their .h5 files are
# dropped once a proxy is done; history, metrics and config stay.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-models/candidates}   # OUT=/abs/path: run from a frozen worktree, write here
PY=${PY:-.venv/bin/python}
# name | flags on top of: --preset fast --epochs 15 --seed 0
PROXIES=(
  "p15-base|"
  "p15-reflect|--set train.presets.fast.crop=\"reflect\""
  "p15-linear|--set train.presets.fast.schedule=\"linear\""
  "p15-b256|--batch-size 256 --lr 0.2"
  "p15-cutout12|--set train.presets.fast.cutout=12"
  "p15-ls02|--set train.presets.fast.label_smoothing=0.2"
)
want=("$@")
for entry in "${PROXIES[@]}"; do
  name=${entry%%|*}; flags=${entry#*|}
  if [ ${#want[@]} -gt 0 ] && [[ ! " ${want[*]} " =~ " $name " ]]; then continue; fi
  dir=$OUT/$name
  if [ -f "$dir/metrics.json" ]; then rm -f "$dir/best.h5" "$dir/last.h5"; echo "proxies: $name done"; continue; fi
  while pgrep -f -- "-m train .*$name" >/dev/null; do sleep 30; done  # another queue is on it: wait, never run twice
  if [ -f "$dir/metrics.json" ]; then rm -f "$dir/best.h5" "$dir/last.h5"; echo "proxies: $name done"; continue; fi
  echo "proxies: $name start $(date -u +%FT%TZ) on $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)" | tee -a "$OUT/proxies.log"
  if [ -f "$dir/run.json" ]; then
    nice -n 10 $PY -m train --resume "$dir" >> "$dir.log" 2>&1
  else
    eval nice -n 10 $PY -m train --preset fast --epochs 15 --seed 0 --out-dir $OUT --run-name $name $flags >> "$dir.log" 2>&1
  fi
  rm -f "$dir/best.h5" "$dir/last.h5"
  echo "proxies: $name done $(date -u +%FT%TZ)" | tee -a "$OUT/proxies.log"
done
