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
# Output: one line per bench run, `side run label cpu_us json`, where
# cpu_us is the client's CPU time (user + system, /usr/bin/time) per
# message and json the bench's `--json` summary line; then a table of
# msgs/s per label and side, the after/before ratio of the medians, and
# the median client CPU per message.
set -euo pipefail
A_BIN=$1
B_BIN=$2
RUNS=${3:-3}
OUT=$(mktemp /tmp/actormq-ab.XXXXXX)
NODE_PID=
DATA_DIR=
# On any exit (a failed bench included): no node left running, no data left.
cleanup() {
  if [[ -n $NODE_PID ]]; then kill -TERM "$NODE_PID" 2>/dev/null || true; fi
  if [[ -n $DATA_DIR ]]; then rm -rf "$DATA_DIR"; fi
  rm -f "$OUT"
}
trap cleanup EXIT

MATRIX=(
  "produce-256|bench produce -t u --messages 600000 --concurrency 256 --json"
  "produce-b32|bench produce -t b32 --messages 2000000 --concurrency 128 --batch 32 --json"
  "produce-b1000|bench produce -t b1k --messages 4000000 --concurrency 16 --batch 1000 --json"
  "consume|bench consume -t b32 -g GROUP --messages 2000000 --json"
)

run_side() { # side-name bin-dir run
  local side=$1 bin=$2 run=$3
  local dir; dir=$(mktemp -d /tmp/actormq-ab-data.XXXXXX)
  DATA_DIR=$dir
  local fifo="$dir/ready"
  mkfifo "$fifo"
  "$bin/actormq-node" --data-dir "$dir/data" --namesrv-listen 127.0.0.1:0 \
    --broker-listen 127.0.0.1:0 --log-level warn >"$fifo" 2>"$dir/node.log" &
  local pid=$!
  NODE_PID=$pid
  local ready
  read -r ready <"$fifo"
  local ns; ns=$(sed -E 's/.*namesrv=([^ ]+).*/\1/' <<<"$ready")
  for spec in "${MATRIX[@]}"; do
    local label=${spec%%|*} args=${spec#*|}
    args=${args//GROUP/g$side$run$RANDOM}
    # shellcheck disable=SC2086
    local json; json=$(/usr/bin/time -f "%U %S" -o "$dir/time" \
      "$bin/actormq" -n "$ns" $args 2>"$dir/bench.err" | tail -1)
    local cpu; cpu=$(python3 -c 'import json,sys; u,s=open(sys.argv[1]).read().split()[-2:]; n=json.loads(sys.argv[2])["messages"]; print("%.2f" % ((float(u)+float(s))*1e6/n) if n else "nan")' "$dir/time" "$json") || {
      echo "$side $run $label failed: $json $(tail -3 "$dir/bench.err")" >&2; exit 1; }
    echo "$side $run $label $cpu $json" | tee -a "$OUT"
  done
  kill -TERM "$pid"
  wait "$pid"
  NODE_PID=
  rm -rf "$dir"
  DATA_DIR=
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
    side, run, label, cpu, js = line.split(" ", 4)
    r = rows.setdefault(label, {}).setdefault(side, {"rate": [], "cpu": []})
    r["rate"].append(json.loads(js)["msgs_per_sec"])
    r["cpu"].append(float(cpu))
print("| bench | before msgs/s (runs) | after msgs/s (runs) | median after/before | client CPU µs/msg before → after (median) |")
print("|---|---|---|---|---|")
for label, sides in rows.items():
    b, a = sides.get("before"), sides.get("after")
    fmt = lambda xs: " / ".join(f"{x:,.0f}".replace(",", " ") for x in xs)
    ratio = statistics.median(a["rate"]) / statistics.median(b["rate"])
    cpu = f'{statistics.median(b["cpu"]):.2f} → {statistics.median(a["cpu"]):.2f}'
    print(f"| {label} | {fmt(b['rate'])} | {fmt(a['rate'])} | {ratio:.3f} | {cpu} |")
PY
