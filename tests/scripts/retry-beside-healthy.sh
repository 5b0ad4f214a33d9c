#!/usr/bin/env bash
# Healthy consumption (bench consume of a backlog, new group each run) alone and
# beside a group failing every delivery at RATE/s (bench_retry), alternated.
# Node with every delay level 1 s, so failed messages come back after 1 s.
# Needs the release example: cargo build --release -p actormq-examples --example bench_retry
#
#   tests/scripts/retry-beside-healthy.sh [BIN_DIR] [RATE]
set -euo pipefail
BIN=${1:-target/release}
RATE=${2:-10000}
H=4000000; F=300000
dir=$(mktemp -d /tmp/actormq-bench.XXXX)
mkfifo $dir/ready
levels=$(printf '1s %.0s' $(seq 18))
printf '[broker]\nmessage_delay_level = "%s"\n' "${levels% }" > $dir/node.toml
$BIN/actormq-node --config $dir/node.toml --data-dir $dir/data --namesrv-listen 127.0.0.1:0 --broker-listen 127.0.0.1:0 --log-level warn > $dir/ready 2>$dir/node.log &
pid=$!
fpid=
trap '[[ -n $fpid ]] && kill $fpid 2>/dev/null; kill -TERM $pid; wait $pid; rm -rf $dir' EXIT
read -r ready < $dir/ready
ns=$(sed -E 's/.*namesrv=([^ ]+).*/\1/' <<<"$ready")
A="$BIN/actormq -n $ns"
$A bench produce -t H --messages $H --concurrency 128 --batch 32 --json >/dev/null
$A bench produce -t F --messages $F --concurrency 128 --batch 32 --json >/dev/null
rate() { python3 -c 'import json,sys; d=json.loads(sys.stdin.read()); print(int(d["msgs_per_sec"]), d["messages"])'; }
for r in 1 2 3; do
  echo "alone   $r: $($A bench consume -t H -g a$r --messages $H --json | tail -1 | rate)"
  $BIN/examples/bench_retry $ns F $RATE 9 > $dir/retry.out 2>$dir/retry.err &
  fpid=$!
  sleep 3  # the failing group is assigned and at its pace (its own JSON says what it did)
  echo "beside  $r: $($A bench consume -t H -g b$r --messages $H --json | tail -1 | rate)"
  wait $fpid; fpid=
  echo "failing $r: $(cat $dir/retry.out)"
done
