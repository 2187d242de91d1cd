#!/usr/bin/env bash
# Starts a fresh broker (new temp data dir, free port) and runs one
# sluice-bench mode against it, passing --url and --pid; stops the broker after.
#
#   bench/run.sh publish --topics 1 --publishers 16 --duration-secs 10 --payload-bytes 256
#   SLUICE__EMBEDDED__FSYNC=never bench/run.sh fanout --subscribers 100 --events 100000
#
# SLUICE_BIN / BENCH_BIN override the binaries (default target/release/...).
set -euo pipefail
cd "$(dirname "$0")/.."
sluice=${SLUICE_BIN:-target/release/sluice}
bench=${BENCH_BIN:-target/release/sluice-bench}
data=$(mktemp -d /tmp/sluice-bench.XXXXXX)
log="$data.log"
"$sluice" --listen 127.0.0.1:0 --data-dir "$data" >"$log" 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; rm -rf "$data"' EXIT
for _ in $(seq 100); do
  addr=$(sed -n 's/^sluice listening on //p' "$log")
  [ -n "$addr" ] && break
  kill -0 "$pid" 2>/dev/null || { cat "$log" >&2; exit 1; }
  sleep 0.1
done
[ -n "$addr" ] || { echo "broker did not start" >&2; exit 1; }
echo "broker pid $pid on $addr, data $data, log $log (fsync=${SLUICE__EMBEDDED__FSYNC:-default})" >&2
mode=$1
shift
"$bench" "$mode" --url "http://$addr" --pid "$pid" "$@"
