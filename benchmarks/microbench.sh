#!/usr/bin/env bash
# Runs dlion's microbenchmarks on 2 and 4 ranks and keeps their JSON rows in results/.
#   benchmarks/microbench.sh [steps]      (after ./run setup; steps of `bench train`, default 1000)
# Each row holds its own reference measured in the same run (mpi4py), so the ratios are what
# to compare across machines, not the absolute times.
set -euo pipefail
cd "$(dirname "$0")/.."
steps=${1:-1000}
out=results/microbench-$(date +%Y%m%d-%H%M%S)
mkdir -p "$out"
export TF_CPP_MIN_LOG_LEVEL=3
for np in 2 4; do
  echo "== exchange, $np ranks" >&2
  .venv/bin/mpiexec -n "$np" .venv/bin/python -m dlion.bench exchange --json | tee "$out/exchange-np$np.jsonl"
  echo "== train, $np ranks" >&2
  .venv/bin/mpiexec -n "$np" .venv/bin/python -m dlion.bench train --steps "$steps" --json 2>/dev/null |
    tee "$out/train-np$np.jsonl"
done
echo "results in $out" >&2
