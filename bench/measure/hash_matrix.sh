#!/bin/sh
# Hashing variants on the shared_prefix workload (heliostat only, 40 s each): the automatic
# choice, and `mode: always` with bounded load 1.25 / 1.5 / 2.0, ring hash and Maglev.
cd "$(dirname "$0")/.." || exit 1
out=bench/measure/results/hash-matrix
mkdir -p $out
run() {
  name=$1; shift
  .venv/bin/python bench/measure/intra_routing.py --workloads shared_prefix --seconds 40 \
    --policies heliostat --heliostat-model "$1" --out $out/$name.json > $out/$name.log 2>&1
}
run auto-1.5 '{}'
run always-ring-1.5 '{"affinity": {"mode": "always"}}'
run always-ring-1.25 '{"affinity": {"mode": "always", "bounded_load": 1.25}}'
run always-ring-2.0 '{"affinity": {"mode": "always", "bounded_load": 2.0}}'
run always-maglev-1.5 '{"affinity": {"mode": "always", "hash": "maglev"}}'
