#!/usr/bin/env bash
# Paired runs of two loadtest binaries on the 100,000-node UDP converge (or
# NODES/RACKS), alternating A B, B A, ... so that the machine's drift hits
# both; prints each pair's converge p99 and steady CPU, and the median
# ratio B/A. Single runs of one binary move by +-30 % between runs here,
# so only pairs compare (docs/performance.md, session 8).
# usage: [NODES=N RACKS=R OUT=dir] loadtest/scripts/ab.sh BIN_A BIN_B PAIRS
# An environment for one side only: e.g. A="env GLIBC_TUNABLES=glibc.malloc.hugetlb=0".
set -euo pipefail
a=$1; b=$2; pairs=${3:-3}
out=${OUT:-/tmp/ab}; mkdir -p "$out"; : > "$out/results.txt"
here=$(dirname "$0")
run() { # tag, binary, env prefix
  OUT="$out" ${3:-} python3 "$here/cpu_run.py" "$2" "$1" > /dev/null 2>&1 || echo "run $1 failed (see $out/$1.out)" >&2
}
for i in $(seq 1 "$pairs"); do
  if (( i % 2 )); then run "a$i" "$a" "${A:-}"; run "b$i" "$b" "${B:-}"
  else run "b$i" "$b" "${B:-}"; run "a$i" "$a" "${A:-}"; fi
done
python3 - "$out/results.txt" "$pairs" <<'PY'
import json, sys, statistics
rows = {}
for line in open(sys.argv[1]):
    tag, j = line.split(" ", 1)
    rows[tag] = json.loads(j)
ratios = []
print("| pair | A p99 s | B p99 s | B/A | A steady cores | B steady cores |")
print("| --- | --- | --- | --- | --- | --- |")
for i in range(1, int(sys.argv[2]) + 1):
    ra, rb = rows.get(f"a{i}"), rows.get(f"b{i}")
    if not ra or not rb or not ra.get("converge_p99_s") or not rb.get("converge_p99_s"):
        print(f"| {i} | missing | | | | |"); continue
    r = rb["converge_p99_s"] / ra["converge_p99_s"]; ratios.append(r)
    print(f"| {i} | {ra['converge_p99_s']:.3f} | {rb['converge_p99_s']:.3f} | {r:.2f} | "
          f"{ra.get('steady_cpu_per_s', 0):.3f} | {rb.get('steady_cpu_per_s', 0):.3f} |")
if ratios:
    print(f"median B/A {statistics.median(ratios):.2f} over {len(ratios)} pairs; B lower in {sum(r < 1 for r in ratios)}")
PY
