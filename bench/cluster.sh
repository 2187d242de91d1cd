#!/usr/bin/env bash
# Cluster-mode figures of issue 3, in one run on this machine:
#  1. publish events/s through the Redis store next to redis-benchmark
#     driving XADD at the same payload size (single events, and batches of
#     100 next to XADD pipelined by 100): the ratios;
#  2. cross-instance delivery latency: publishers on instance A, subscribers
#     on instance B (and A -> A in the same run for comparison).
# Starts a private redis-server (no persistence, as redis-benchmark runs it)
# and the brokers on free loopback ports; stops all of them on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
sluice=${SLUICE_BIN:-target/release/sluice}
bench=${BENCH_BIN:-target/release/sluice-bench}
work=$(mktemp -d /tmp/sluice-cluster.XXXXXX)
declare -a pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
log() { echo "cluster.sh: $*" >&2; }

port=$("$bench" free-port)
redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$work" >"$work/redis.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.05; done
redis_url="redis://127.0.0.1:$port"

# Starts a broker on the Redis store; sets S_URL and S_PID. Not run in a
# subshell, so its pid is in `pids` and the broker is stopped on exit.
start_sluice() { # name
  local log="$work/$1.log" addr=""
  SLUICE__STORE=redis SLUICE__REDIS__URL="$redis_url" "$sluice" --listen 127.0.0.1:0 --data-dir "$work/$1" >"$log" 2>&1 &
  S_PID=$!
  pids+=("$S_PID")
  for _ in $(seq 200); do
    addr=$(sed -n 's/^sluice listening on //p' "$log" | head -1)
    [ -n "$addr" ] && { S_URL="http://$addr"; return 0; }
    sleep 0.05
  done
  log "sluice did not start"; cat "$log" >&2; return 1
}

payload=$(head -c 256 /dev/zero | tr '\0' 'x')
start_sluice a
url_a=$S_URL pid_a=$S_PID

log "== publish through the Redis store, single events"
"$bench" publish --url "$url_a" --target sluice --pid "$pid_a" --topic-prefix c1 --publishers 16 --duration-secs 10 --payload-bytes 256 | tail -1 >"$work/single.json"
log "== redis-benchmark XADD, one per request"
redis-cli -p "$port" flushall >/dev/null
redis-benchmark -p "$port" -c 16 -n 200000 -q XADD bench:s '*' d "$payload" | tr '\r' '\n' | grep -a 'requests per second' | tail -1 >"$work/xadd.txt"
log "== publish through the Redis store, NDJSON batches of 100"
"$bench" publish --url "$url_a" --target sluice --pid "$pid_a" --topic-prefix c2 --publishers 16 --duration-secs 10 --payload-bytes 256 --batch 100 | tail -1 >"$work/batch.json"
log "== redis-benchmark XADD, pipelined by 100"
redis-cli -p "$port" flushall >/dev/null
redis-benchmark -p "$port" -c 16 -n 1000000 -P 100 -q XADD bench:s '*' d "$payload" | tr '\r' '\n' | grep -a 'requests per second' | tail -1 >"$work/xadd100.txt"
redis-cli -p "$port" flushall >/dev/null

start_sluice b
url_b=$S_URL
log "== cross-instance delivery: publish on A, 10 subscribers on B"
"$bench" fanout --url "$url_a" --sub-url "$url_b" --target sluice --topic x --subscribers 10 --publishers 1 --events 5000 --payload-bytes 256 | tail -1 >"$work/cross.json"
log "== same-instance delivery: publish on A, 10 subscribers on A"
"$bench" fanout --url "$url_a" --target sluice --topic y --subscribers 10 --publishers 1 --events 5000 --payload-bytes 256 | tail -1 >"$work/same.json"

python3 - "$work" <<'PY'
import json, re, sys
w = sys.argv[1]
def j(n): return json.load(open(f"{w}/{n}"))
def rps(n): return float(re.search(r"([0-9.]+) requests per second", open(f"{w}/{n}").read()).group(1))
s, b, x1, x100 = j("single.json"), j("batch.json"), rps("xadd.txt"), rps("xadd100.txt")
print("| what | events/s |")
print("| --- | --- |")
print(f"| Sluice publish through Redis, single events, 16 publishers | {s['events_per_sec']:,.0f} (request p50 {s['latency']['p50_us']/1000:.2f} ms, p99 {s['latency']['p99_us']/1000:.2f} ms) |")
print(f"| redis-benchmark XADD, 16 clients, one per request | {x1:,.0f} |")
print(f"| ratio, single | **{s['events_per_sec']/x1:.2f}** |")
print(f"| Sluice through Redis, NDJSON batches of 100 | {b['events_per_sec']:,.0f} (request p50 {b['latency']['p50_us']/1000:.2f} ms) |")
print(f"| redis-benchmark XADD pipelined by 100 | {x100:,.0f} |")
print(f"| ratio, batched | **{b['events_per_sec']/x100:.2f}** |")
print()
print("| path | publish→deliver p50 | p99 | p99.9 | gaps / dups / reorders |")
print("| --- | --- | --- | --- | --- |")
for name, f in (("A → B (cross-instance, via XREAD BLOCK)", "cross.json"), ("A → A (same instance)", "same.json")):
    d = j(f); l = d["latency"]
    print(f"| {name} | {l['p50_us']/1000:.2f} ms | {l['p99_us']/1000:.2f} ms | {l['p999_us']/1000:.2f} ms | {d['gaps']} / {d['dups']} / {d['reorders']} |")
PY
