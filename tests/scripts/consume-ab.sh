#!/usr/bin/env bash
# A/B of bench consume: fresh node per run, 2M backlog (bench produce --batch 32),
# then loadgen pull (batch form), [after only: loadgen pull --records], bench consume. Sides alternate.
#
#   tests/scripts/consume-ab.sh BEFORE_BIN_DIR AFTER_BIN_DIR [ROUNDS]
set -euo pipefail
trap 'kill $(jobs -p) 2>/dev/null || true' EXIT
A=$1; B=$2; ROUNDS=${3:-3}; N=2000000
one() {
  local side=$1 BIN=$2
  local dir; dir=$(mktemp -d /tmp/actormq-bench.XXXX)
  mkfifo $dir/ready
  $BIN/actormq-node --data-dir $dir/data --namesrv-listen 127.0.0.1:0 --broker-listen 127.0.0.1:0 --log-level warn > $dir/ready 2>$dir/node.log &
  local pid=$!
  local ready; read -r ready < $dir/ready
  local ns br
  ns=$(sed -E 's/.*namesrv=([^ ]+).*/\1/' <<<"$ready"); br=$(sed -E 's/.*broker=([^ ]+).*/\1/' <<<"$ready")
  $BIN/actormq -n $ns bench produce -t b32 --messages $N --concurrency 128 --batch 32 --json >/dev/null
  local lg; lg=$($BIN/actormq-loadgen --broker $br --topic b32 --messages $N --mode pull --pull-batch 256 --inflight 16 --no-create 2>&1 | tail -1 | python3 -c 'import json,sys; print(int(json.loads(sys.stdin.read())["msgs_per_sec"]))')
  local lr=-
  if [[ $side == after ]]; then
    lr=$($BIN/actormq-loadgen --broker $br --topic b32 --messages $N --mode pull --pull-batch 256 --inflight 16 --no-create --records 2>&1 | tail -1 | python3 -c 'import json,sys; print(int(json.loads(sys.stdin.read())["msgs_per_sec"]))')
  fi
  local c; c=$($BIN/actormq -n $ns bench consume -t b32 -g g$RANDOM --messages $N --json | tail -1 | python3 -c 'import json,sys; print(int(json.loads(sys.stdin.read())["msgs_per_sec"]))')
  kill -TERM $pid; wait $pid; rm -rf $dir
  echo "$side loadgen_batch=$lg loadgen_records=$lr consume=$c"
}
for r in $(seq $ROUNDS); do
  if (( r % 2 )); then one before $A; one after $B; else one after $B; one before $A; fi
done
