#!/usr/bin/env bash
# Runs the strategy comparison of docs/performance.md: tree, hybrid and
# gossip at 1,000, 10,000 and 50,000 nodes (converge scenario), and prints
# one markdown row per run. Usage:
#   loadtest/scripts/compare.sh sim|udp [STRATEGIES] [SIZES]
# e.g. `loadtest/scripts/compare.sh sim "tree hybrid" "1000 10000"`.
# JSON reports land in $OUT (default /tmp/compare); $TIMEOUT (default 300s)
# bounds each run and, like every loadtest duration, needs a unit.
set -euo pipefail
cd "$(dirname "$0")/../.."
net=${1:-sim}
strategies=${2:-"tree hybrid gossip"}
sizes=${3:-"1000 10000 50000"}
out=${OUT:-/tmp/compare}
mkdir -p "$out"
cargo build --release -q -p loadtest
racks_for() { case $1 in 1000) echo 10 ;; 10000) echo 50 ;; *) echo 100 ;; esac; }
echo "| net | strategy | nodes | reached | converge p50 s | converge p99 s | bytes/node/s (steady) | root datagrams/hello | wall s | peak RSS MiB |"
echo "|---|---|---|---|---|---|---|---|---|---|"
for n in $sizes; do
  for s in $strategies; do
    j="$out/$net-$s-$n.json"
    if ./target/release/loadtest run --net "$net" --strategy "$s" --nodes "$n" \
        --racks "$(racks_for "$n")" --timeout "${TIMEOUT:-300s}" --json "$j" \
        >"$out/$net-$s-$n.log" 2>&1; then
      python3 - "$j" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"| {r['net']} | {r['strategy']} | {r['nodes']} | {r['reached']} | {r['converge_p50_s']:.3f} | "
      f"{r['converge_p99_s']:.3f} | {r['steady_bytes_per_node_per_s']:.0f} | "
      f"{r['root_rx_datagrams_per_hello_total']:.1f} | {r['wall_s']:.0f} | {r['peak_rss_mb']:.0f} |")
PY
    else
      echo "| $net | $s | $n | failed: $(tail -1 "$out/$net-$s-$n.log") | | | | | | |"
    fi
  done
done
