#!/usr/bin/env bash
# Issue 15 performance: the gRPC endpoint against the native protocol on
# the same node in the same run.
#
#   tests/scripts/grpc-bench.sh BIN_DIR [ROUNDS] [N] [BACKLOG]
#
# Each round: a fresh node (temp data dir, ephemeral ports); unbatched
# sync sends of 128 B at 256 in flight, native and gRPC alternated (the
# order flips every round), N messages each, to fresh topics; then a
# backlog of BACKLOG messages (native, batches of 32), received + acked
# over gRPC (32 per receive, 16 receives in flight), and the same backlog
# on another topic consumed by the native simple consumer.
set -euo pipefail
trap 'kill $(jobs -p) 2>/dev/null || true' EXIT
BIN=$1; ROUNDS=${2:-3}; N=${3:-200000}; BACKLOG=${4:-1000000}
rate() { tail -1 | python3 -c 'import json,sys; d=json.loads(sys.stdin.read()); print(int(d["msgs_per_sec"]), d["errors"])'; }
for r in $(seq "$ROUNDS"); do
  dir=$(mktemp -d /tmp/actormq-grpc-bench.XXXX)
  mkfifo "$dir/ready"
  "$BIN/actormq-node" --data-dir "$dir/data" --namesrv-listen 127.0.0.1:0 --broker-listen 127.0.0.1:0 \
    --grpc-listen 127.0.0.1:0 --log-level warn > "$dir/ready" 2>"$dir/node.log" &
  pid=$!
  read -r ready < "$dir/ready"
  ns=$(sed -E 's/.*namesrv=([^ ]+).*/\1/' <<<"$ready"); grpc=$(sed -E 's/.*grpc=([^ ]+).*/\1/' <<<"$ready")
  native() { "$BIN/actormq" -n "$ns" bench produce -t native$r --messages "$N" --concurrency 256 --json | rate; }
  overgrpc() { "$BIN/actormq" -n "$ns" bench produce -t grpc$r --messages "$N" --concurrency 256 --grpc "$grpc" --json | rate; }
  if (( r % 2 )); then n=$(native); g=$(overgrpc); else g=$(overgrpc); n=$(native); fi
  "$BIN/actormq" -n "$ns" bench produce -t backlog$r --messages "$BACKLOG" --concurrency 128 --batch 32 --json >/dev/null
  "$BIN/actormq" -n "$ns" bench produce -t nbacklog$r --messages "$BACKLOG" --concurrency 128 --batch 32 --json >/dev/null
  gc=$("$BIN/actormq" -n "$ns" bench consume -t backlog$r -g gg$r --messages "$BACKLOG" --simple --concurrency 16 --grpc "$grpc" --json | rate)
  nc=$("$BIN/actormq" -n "$ns" bench consume -t nbacklog$r -g ng$r --messages "$BACKLOG" --simple --concurrency 16 --json | rate)
  kill -TERM $pid; wait $pid || true; rm -rf "$dir"
  echo "round $r: produce native=[$n] grpc=[$g]  receive+ack grpc=[$gc] native-simple=[$nc]  (msgs/s errors)"
done
