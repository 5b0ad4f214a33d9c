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
# the node is stopped with SIGTERM and must exit 0.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${ACTORMQ_BIN_DIR:-$ROOT/target/release}
MODES=${1:-"async sync"}

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
  for spec in "$@"; do
    local label=${spec%%|*} args=${spec#*|}
    printf '%-28s ' "$flush/$label"
    # shellcheck disable=SC2086
    "$BIN/actormq-loadgen" --broker "$broker" $args || true
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
