#!/usr/bin/env bash
# Runs the issue-4 throughput/latency matrix against a fresh release
# combined node on loopback, with actormq-loadgen (client and node share the
# machine). Prints one JSON summary line per run, prefixed by its label.
#
#   cargo build --release -p actormq-cluster --bins -p actormq-tests --bin actormq-loadgen
#   tests/scripts/loadgen-bench.sh            # both flush modes
#   tests/scripts/loadgen-bench.sh async      # one mode
#
# Each flush mode gets its own node and temp data dir (removed afterwards);
# the node is stopped with SIGTERM and must exit 0. After each summary line
# comes the node's CPU per message by thread (µs, user + system, from
# /proc): `actormq-store-a` is the segment pre-faulter, whose cost depends
# on whether the VM backs the growing page cache with fresh or recycled
# memory (BENCHMARKS.md).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${ACTORMQ_BIN_DIR:-$ROOT/target/release}
MODES=${1:-"async sync"}

# CPU ticks per thread name of process $1: one "name ticks" line each.
cpu_by_thread() {
  for t in /proc/"$1"/task/*; do
    printf '%s %s\n' "$(tr ' ' '_' <"$t/comm")" "$(awk '{print $14 + $15}' "$t/stat")"
  done | awk '{a[$1] += $2} END {for (k in a) print k, a[k]}' | sort
}

run_node() { # flush-mode, then "label|loadgen args" specs
  local flush=$1; shift
  local dir; dir=$(mktemp -d /tmp/actormq-bench.XXXXXX)
  "$BIN/actormq-node" --data-dir "$dir/data" --namesrv-listen 127.0.0.1:0 \
    --broker-listen 127.0.0.1:0 --flush "$flush" --log-level warn >"$dir/out" 2>"$dir/err" &
  local pid=$!
  # Wait for the ready line (bounded).
  for _ in $(seq 200); do grep -q '^actormq ready' "$dir/out" && break; sleep 0.05; done
  local broker; broker=$(sed -n 's/.*broker=\([^ ]*\).*/\1/p' "$dir/out")
  [ -n "$broker" ] || { echo "node did not start:"; cat "$dir/err"; kill -9 $pid; exit 1; }
  local hz; hz=$(getconf CLK_TCK)
  for spec in "$@"; do
    local label=${spec%%|*} args=${spec#*|} out msgs
    cpu_by_thread $pid >"$dir/cpu0"
    # shellcheck disable=SC2086
    out=$("$BIN/actormq-loadgen" --broker "$broker" $args) || true
    cpu_by_thread $pid >"$dir/cpu1"
    printf '%-28s %s\n' "$flush/$label" "$out"
    msgs=$(sed -n 's/.*"messages":\([0-9]*\).*/\1/p' <<<"$out")
    if [ -n "$msgs" ] && [ "$msgs" -gt 0 ]; then
      join "$dir/cpu0" "$dir/cpu1" | awk -v n="$msgs" -v hz="$hz" '
        { d = ($3 - $2) / hz; tot += d; if (d > 0) line = line sprintf(" %s=%.3f", $1, d / n * 1e6) }
        END { printf "%-28s node cpu us/msg %.3f:%s\n", "", tot / n * 1e6, line }'
    fi
  done
  kill -TERM $pid; wait $pid || { echo "node exit $? after SIGTERM"; tail "$dir/err"; }
  rm -rf "$dir"
}

for flush in $MODES; do
  run_node "$flush" \
    "rtt-low-load|--topic lat --messages 20000 --inflight 1" \
    "single-64|--topic s --messages 1000000 --inflight 64" \
    "single-256|--topic s --messages 1000000 --inflight 256 --no-create" \
    "batch32-64|--topic b --messages 3200000 --batch 32 --inflight 64" \
    "batch1000-16|--topic k --messages 5000000 --batch 1000 --inflight 16" \
    "pull-32x64|--topic s --mode pull --messages 2000000 --inflight 64 --pull-batch 32" \
    "pull-256x16|--topic k --mode pull --messages 5000000 --inflight 16 --pull-batch 256"
done
