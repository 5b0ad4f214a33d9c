#!/usr/bin/env bash
# A/B of the `actormq bench` matrix between two builds, alternated, on the
# same node state: every run of a side starts that side's own release
# `actormq-node` on a fresh temp data dir (so both sides start from the
# same, empty state), runs the matrix with that side's `actormq`, stops
# the node with SIGTERM (it must exit 0) and removes the dir. The sides
# alternate A B, B A, A B, ... for RUNS rounds.
#
#   tests/scripts/bench-ab.sh BEFORE_BIN_DIR AFTER_BIN_DIR [RUNS]
#
# Output: one line per bench run, `side run label json`, where json is the
# bench's `--json` summary line; then a table of the median msgs/s per
# label and side, and the after/before ratio.
set -euo pipefail
A_BIN=$1
B_BIN=$2
RUNS=${3:-3}
OUT=$(mktemp /tmp/actormq-ab.XXXXXX)

MATRIX=(
  "produce-256|bench produce -t u --messages 300000 --concurrency 256 --json"
  "produce-b32|bench produce -t b32 --messages 1000000 --concurrency 128 --batch 32 --json"
  "produce-b1000|bench produce -t b1k --messages 2000000 --concurrency 16 --batch 1000 --json"
  "consume|bench consume -t b32 -g GROUP --messages 1000000 --json"
)

run_side() { # side-name bin-dir run
  local side=$1 bin=$2 run=$3
  local dir; dir=$(mktemp -d /tmp/actormq-ab-data.XXXXXX)
  local fifo="$dir/ready"
  mkfifo "$fifo"
  "$bin/actormq-node" --data-dir "$dir/data" --namesrv-listen 127.0.0.1:0 \
    --broker-listen 127.0.0.1:0 --log-level warn >"$fifo" 2>"$dir/node.log" &
  local pid=$!
  local ready
  read -r ready <"$fifo"
  local ns; ns=$(sed -E 's/.*namesrv=([^ ]+).*/\1/' <<<"$ready")
  for spec in "${MATRIX[@]}"; do
    local label=${spec%%|*} args=${spec#*|}
    args=${args//GROUP/g$side$run$RANDOM}
    # shellcheck disable=SC2086
    local json; json=$("$bin/actormq" -n "$ns" $args 2>/dev/null | tail -1)
    echo "$side $run $label $json" | tee -a "$OUT"
  done
  kill -TERM "$pid"
  wait "$pid"
  rm -rf "$dir"
}

for run in $(seq 1 "$RUNS"); do
  if (( run % 2 )); then
    run_side before "$A_BIN" "$run"; run_side after "$B_BIN" "$run"
  else
    run_side after "$B_BIN" "$run"; run_side before "$A_BIN" "$run"
  fi
done

echo
python3 - "$OUT" <<'PY'
import json, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    side, run, label, js = line.split(" ", 3)
    rows.setdefault(label, {}).setdefault(side, []).append(json.loads(js)["msgs_per_sec"])
print("| bench | before msgs/s (runs) | after msgs/s (runs) | median after/before |")
print("|---|---|---|---|")
for label, sides in rows.items():
    b, a = sides.get("before", []), sides.get("after", [])
    fmt = lambda xs: " / ".join(f"{x:,.0f}".replace(",", " ") for x in xs)
    ratio = statistics.median(a) / statistics.median(b) if a and b else float("nan")
    print(f"| {label} | {fmt(b)} | {fmt(a)} | {ratio:.3f} |")
PY
rm -f "$OUT"
