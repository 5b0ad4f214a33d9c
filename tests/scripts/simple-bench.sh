#!/usr/bin/env bash
# Simple (pop) consumer throughput: a fresh node, N messages produced in
# batches of 32, then `actormq bench consume --simple --concurrency C`
# (receives of 32, each batch acked with one batch ack).
#
#   tests/scripts/simple-bench.sh [BIN_DIR] [N] [C]
set -euo pipefail
BIN=${1:-target/release}
N=${2:-1000000}
C=${3:-16}
dir=$(mktemp -d /tmp/actormq-bench.XXXX)
mkfifo $dir/ready
$BIN/actormq-node --data-dir $dir/data --namesrv-listen 127.0.0.1:0 --broker-listen 127.0.0.1:0 --log-level warn > $dir/ready 2>$dir/node.log &
pid=$!
trap "kill -TERM $pid; wait $pid; rm -rf $dir" EXIT
read -r ready < $dir/ready
ns=$(sed -E 's/.*namesrv=([^ ]+).*/\1/' <<<"$ready")
$BIN/actormq -n $ns bench produce -t s --messages $N --concurrency 128 --batch 32 --json | tail -1 | cut -c1-70
/usr/bin/time -f "client %U %S" $BIN/actormq -n $ns bench consume --simple --concurrency $C -t s -g gs --messages $N --json 2>&1 | tail -2
grep -v "^$" $dir/node.log | tail -3
