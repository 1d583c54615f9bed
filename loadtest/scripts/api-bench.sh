#!/usr/bin/env bash
# Measures the product root's REST API under a loadtest run (issue 14):
#   loadtest/scripts/api-bench.sh [NODES] [RACKS] [PORT]
# 1. `loadtest run --net udp --api` with a client listing every node in a
#    loop from the moment the API answers until the report (the converge
#    p99 of that run against one without the client: run 2 below);
# 2. the same run without the client, then during its `--hold`: the full
#    list (10 times), its first page (`limit=500`, 20 times), paging
#    through every node (`limit=5000`, 5 times) and one node (50 times),
#    each timed by curl; medians printed.
# Reports land in $OUT (default /tmp/api-bench).
set -euo pipefail
cd "$(dirname "$0")/../.."
nodes=${1:-50000}
racks=${2:-100}
port=${3:-18090}
out=${OUT:-/tmp/api-bench}
mkdir -p "$out"
cargo build --release -q -p loadtest
lt=./target/release/loadtest
api="http://127.0.0.1:$port/api/v1"
median() { sort -g | awk '{a[NR]=$1} END {m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "%.4f", m}'; }
wait_api() { for _ in $(seq 1 600); do curl -sf -o /dev/null "$api/health" && return 0; sleep 0.5; done; return 1; }

echo "== run 1: a client lists all $nodes nodes in a loop during the run"
$lt run --net udp --nodes "$nodes" --racks "$racks" --api "127.0.0.1:$port" --quiet \
  --json "$out/with-client.json" >"$out/with-client.log" 2>&1 &
run=$!
wait_api
lists=0
while kill -0 "$run" 2>/dev/null; do
  curl -s -o /dev/null -w "%{time_total}\n" "$api/nodes" >>"$out/loop-times.txt" || true
  lists=$((lists + 1))
done
wait "$run"
echo "lists during the run: $lists, median $(median <"$out/loop-times.txt") s"

echo "== run 2: no client during the run; timings during --hold"
$lt run --net udp --nodes "$nodes" --racks "$racks" --api "127.0.0.1:$port" --quiet \
  --hold 300s --json "$out/alone.json" >"$out/alone.log" 2>&1 &
run=$!
until grep -q holding "$out/alone.log" 2>/dev/null; do
  kill -0 "$run" 2>/dev/null || { cat "$out/alone.log"; exit 1; }
  sleep 1
done
t() { curl -s -o /dev/null -w "%{time_total}\n" "$@"; }
for _ in $(seq 10); do t "$api/nodes"; done >"$out/all.txt"
for _ in $(seq 20); do t "$api/nodes?limit=500"; done >"$out/page.txt"
for _ in $(seq 5); do
  cont=""; pages=0; total=0
  while :; do
    w=$(curl -s -o "$out/page.json" -w "%{time_total}" "$api/nodes?limit=5000${cont:+&continue=$cont}")
    total=$(echo "$total + $w" | bc)
    pages=$((pages + 1))
    cont=$(tail -c 100 "$out/page.json" | grep -o '"continue":"[^"]*"' | cut -d'"' -f4 || true)
    [ -z "$cont" ] && break
  done
  echo "$total"
done >"$out/paged.txt"
for i in $(seq 50); do t "$api/nodes/n$(printf "%0${#nodes}d" $((i * 997 % nodes + 1)))"; done >"$out/one.txt"
size=$(curl -s "$api/nodes" | wc -c)
kill "$run" 2>/dev/null || true
wait "$run" 2>/dev/null || true
p99() { python3 -c "import json; print(json.load(open('$1'))['converge_p99_s'])"; }
echo "| measure | median s |"
echo "|---|---|"
echo "| list all $nodes nodes ($size bytes) | $(median <"$out/all.txt") |"
echo "| first page (limit=500) | $(median <"$out/page.txt") |"
echo "| every page (limit=5000, $pages pages) | $(median <"$out/paged.txt") |"
echo "| one node | $(median <"$out/one.txt") |"
echo "converge p99: $(p99 "$out/alone.json") s alone, $(p99 "$out/with-client.json") s with a client listing all nodes in a loop"
