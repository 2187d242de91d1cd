#!/usr/bin/env bash
# Cluster-mode figures of issue 3, in one run on this machine:
#  1. publish events/s through the Redis store next to redis-benchmark
#     driving XADD at the same payload size (single events, and batches of
#     100 next to XADD pipelined by 100): the ratios; and the transport's
#     ceiling for single events, a trivial actix-web handler with no store
#     driven by the same client;
#  2. cross-instance delivery latency: publishers on instance A, subscribers
#     on instance B (and A -> A in the same run for comparison);
#  3. (issue 17) the same ratios on a Redis Cluster of 3 masters (topics and
#     redis-benchmark keys spread over the slots), and cross-instance
#     delivery on the cluster with B following 2,000 topics, with the
#     Redis connections B holds per master.
# For every publish comparison it also prints the CPU each event cost, in
# microseconds, to each process taking part (the broker or the trivial
# server, Redis, the load generator), read from /proc and /usr/bin/time:
# with every process on the same cores, those sums bound the rates.
# Starts a private redis-server and cluster (no persistence, as
# redis-benchmark runs it) and the brokers on free loopback ports; stops all
# of them on exit. CLUSTER=0 skips part 3.
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

# CPU clock ticks used so far by the given processes (user + system).
ticks() {
  local t=0 p
  for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done
  echo "$t"
}
# measured NAME "SERVER PIDS" "REDIS PIDS" COMMAND...: runs COMMAND (its
# output goes on) and writes to $work/NAME.cpu the CPU seconds the servers,
# the Redis servers and COMMAND itself used meanwhile.
measured() {
  local name=$1 servers=$2 redis=$3 s0 r0
  shift 3
  s0=$(ticks $servers) r0=$(ticks $redis)
  /usr/bin/time -f '%U %S' -o "$work/$name.time" "$@"
  echo "$(($(ticks $servers) - s0)) $(($(ticks $redis) - r0)) $(tail -1 "$work/$name.time")" \
    | awk -v hz="$(getconf CLK_TCK)" '{print $1 / hz, $2 / hz, $3 + $4}' >"$work/$name.cpu"
}

port=$("$bench" free-port)
redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$work" >"$work/redis.log" 2>&1 &
pids+=($!)
redis_pid=$!
for _ in $(seq 100); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.05; done
redis_url="redis://127.0.0.1:$port"

# Starts a broker on the Redis store; sets S_URL and S_PID. Not run in a
# subshell, so its pid is in `pids` and the broker is stopped on exit.
start_sluice() { # name
  local log="$work/$1.log" addr=""
  env SLUICE__STORE=redis SLUICE__REDIS__URL="$redis_url" ${cluster_nodes:+SLUICE__REDIS__CLUSTER_NODES="$cluster_nodes"} "$sluice" --listen 127.0.0.1:0 --data-dir "$work/$1" >"$log" 2>&1 &
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
measured single "$pid_a" "$redis_pid" "$bench" publish --url "$url_a" --target sluice --pid "$pid_a" --topic-prefix c1 --publishers 16 --duration-secs 10 --payload-bytes 256 | tail -1 >"$work/single.json"
log "== redis-benchmark XADD, one per request"
redis-cli -p "$port" flushall >/dev/null
measured xadd "" "$redis_pid" redis-benchmark -p "$port" -c 16 -n 200000 -q XADD bench:s '*' d "$payload" | tr '\r' '\n' | grep -a 'requests per second' | tail -1 >"$work/xadd.txt"
log "== the transport's ceiling: a trivial actix-web publish handler (no store), single events"
"$bench" trivial --listen 127.0.0.1:0 >"$work/trivial.log" 2>&1 &
t_pid=$!
pids+=("$t_pid")
for _ in $(seq 200); do
  t_addr=$(sed -n 's/^trivial listening on //p' "$work/trivial.log" | head -1)
  [ -n "$t_addr" ] && break
  sleep 0.05
done
measured trivial "$t_pid" "" "$bench" publish --url "http://$t_addr" --target trivial --pid "$t_pid" --publishers 16 --duration-secs 10 --payload-bytes 256 | tail -1 >"$work/trivial.json"
kill "$t_pid"
log "== publish through the Redis store, NDJSON batches of 100"
measured batch "$pid_a" "$redis_pid" "$bench" publish --url "$url_a" --target sluice --pid "$pid_a" --topic-prefix c2 --publishers 16 --duration-secs 10 --payload-bytes 256 --batch 100 | tail -1 >"$work/batch.json"
log "== redis-benchmark XADD, pipelined by 100"
redis-cli -p "$port" flushall >/dev/null
measured xadd100 "" "$redis_pid" redis-benchmark -p "$port" -c 16 -n 1000000 -P 100 -q XADD bench:s '*' d "$payload" | tr '\r' '\n' | grep -a 'requests per second' | tail -1 >"$work/xadd100.txt"
redis-cli -p "$port" flushall >/dev/null

start_sluice b
url_b=$S_URL
log "== cross-instance delivery: publish on A, 10 subscribers on B"
"$bench" fanout --url "$url_a" --sub-url "$url_b" --target sluice --topic x --subscribers 10 --publishers 1 --events 5000 --payload-bytes 256 | tail -1 >"$work/cross.json"
log "== same-instance delivery: publish on A, 10 subscribers on A"
"$bench" fanout --url "$url_a" --target sluice --topic y --subscribers 10 --publishers 1 --events 5000 --payload-bytes 256 | tail -1 >"$work/same.json"

# What both reports read: a run's JSON, redis-benchmark's rate, and the
# CPU per event of a comparison's processes (from `measured`).
cat >"$work/report.py" <<'PY'
import json, re
def j(w, n): return json.load(open(f"{w}/{n}"))
def rps(w, n): return float(re.search(r"([0-9.]+) requests per second", open(f"{w}/{n}").read()).group(1))
def cpu_table(w, rows):
    # rows: (label, name of the .cpu file, the publish JSON or the number of XADDs)
    print("| CPU per event, µs | server | Redis | load generator | sum | events/s if both cores did nothing else |")
    print("| --- | --- | --- | --- | --- | --- |")
    for label, name, run in rows:
        server, redis, client = (float(x) for x in open(f"{w}/{name}.cpu").read().split())
        events = run["events"] if isinstance(run, dict) else run
        us = [x * 1e6 / events for x in (server, redis, client)]
        print(f"| {label} | {us[0]:.1f} | {us[1]:.1f} | {us[2]:.1f} | {sum(us):.1f} | {2e6 / sum(us):,.0f} |")
PY

python3 - "$work" <<'PY'
import sys
w = sys.argv[1]
sys.path.insert(0, w)
import report
def j(n): return report.j(w, n)
def rps(n): return report.rps(w, n)
cpu_table = report.cpu_table
s, b, x1, x100 = j("single.json"), j("batch.json"), rps("xadd.txt"), rps("xadd100.txt")
print("| what | events/s |")
print("| --- | --- |")
print(f"| Sluice publish through Redis, single events, 16 publishers | {s['events_per_sec']:,.0f} (request p50 {s['latency']['p50_us']/1000:.2f} ms, p99 {s['latency']['p99_us']/1000:.2f} ms) |")
print(f"| redis-benchmark XADD, 16 clients, one per request | {x1:,.0f} |")
print(f"| ratio, single | **{s['events_per_sec']/x1:.2f}** |")
t = j("trivial.json")
print(f"| transport ceiling: trivial actix-web handler, no store, 16 publishers | {t['events_per_sec']:,.0f} ({t['events_per_sec']/x1:.2f} of XADD; Sluice single is {s['events_per_sec']/t['events_per_sec']:.2f} of it) |")
print(f"| Sluice through Redis, NDJSON batches of 100 | {b['events_per_sec']:,.0f} (request p50 {b['latency']['p50_us']/1000:.2f} ms) |")
print(f"| redis-benchmark XADD pipelined by 100 | {x100:,.0f} |")
print(f"| ratio, batched | **{b['events_per_sec']/x100:.2f}** |")
print()
print("| path | publish→deliver p50 | p99 | p99.9 | gaps / dups / reorders |")
print("| --- | --- | --- | --- | --- |")
for name, f in (("A → B (cross-instance, via XREAD BLOCK)", "cross.json"), ("A → A (same instance)", "same.json")):
    d = j(f); l = d["latency"]
    print(f"| {name} | {l['p50_us']/1000:.2f} ms | {l['p99_us']/1000:.2f} ms | {l['p999_us']/1000:.2f} ms | {d['gaps']} / {d['dups']} / {d['reorders']} |")
print()
cpu_table(w, [("Sluice, single events", "single", s), ("redis-benchmark XADD, one per request", "xadd", 200000),
              ("trivial actix-web handler, single events", "trivial", t),
              ("Sluice, batches of 100", "batch", b), ("redis-benchmark XADD pipelined by 100", "xadd100", 1000000)])
PY

[ "${CLUSTER:-1}" = 0 ] && exit 0

# A port whose port + 10000 (the cluster bus) is free as well.
bus_port() {
  local p
  while :; do
    p=$("$bench" free-port)
    [ "$p" -lt 55000 ] || continue
    (exec 3<>"/dev/tcp/127.0.0.1/$((p + 10000))") 2>/dev/null && continue
    echo "$p"; return
  done
}
declare -a cports=() cpids=()
for i in 1 2 3; do
  p=$(bus_port)
  mkdir -p "$work/node$p"
  redis-server --port "$p" --bind 127.0.0.1 --save '' --appendonly no --dir "$work/node$p" \
    --cluster-enabled yes --cluster-config-file nodes.conf >"$work/node$p.log" 2>&1 &
  pids+=($!)
  cpids+=($!)
  cports+=("$p")
done
for p in "${cports[@]}"; do
  for _ in $(seq 100); do redis-cli -p "$p" ping >/dev/null 2>&1 && break; sleep 0.05; done
done
redis-cli --cluster create $(for p in "${cports[@]}"; do echo "127.0.0.1:$p"; done) --cluster-yes >"$work/create.log"
for _ in $(seq 200); do
  ok=1
  for p in "${cports[@]}"; do redis-cli -p "$p" cluster info | grep -q 'cluster_state:ok' || ok=0; done
  [ "$ok" = 1 ] && break; sleep 0.05
done
cluster_nodes=$(for p in "${cports[@]}"; do printf 'redis://127.0.0.1:%s,' "$p"; done)
cluster_nodes=${cluster_nodes%,}
start_sluice ca
url_ca=$S_URL pid_ca=$S_PID

log "== cluster: publish through the Redis store, single events, 48 topics"
measured csingle "$pid_ca" "${cpids[*]}" "$bench" publish --url "$url_ca" --target sluice --pid "$pid_ca" --topics 48 --topic-prefix k1 --publishers 16 --duration-secs 10 --payload-bytes 256 | tail -1 >"$work/csingle.json"
log "== cluster: redis-benchmark XADD, one per request, keys on every master (redis-benchmark's {tag})"
measured cxadd "" "${cpids[*]}" redis-benchmark --cluster -p "${cports[0]}" -c 16 -n 300000 -r 100000 -q XADD 'bench:{tag}:__rand_int__' '*' d "$payload" | tr '\r' '\n' | grep -a 'requests per second' | tail -1 >"$work/cxadd.txt"
log "== cluster: publish through the Redis store, NDJSON batches of 100, 48 topics"
measured cbatch "$pid_ca" "${cpids[*]}" "$bench" publish --url "$url_ca" --target sluice --pid "$pid_ca" --topics 48 --topic-prefix k2 --publishers 16 --duration-secs 10 --payload-bytes 256 --batch 100 | tail -1 >"$work/cbatch.json"
log "== cluster: redis-benchmark XADD pipelined by 100, keys on every master (redis-benchmark's {tag})"
measured cxadd100 "" "${cpids[*]}" redis-benchmark --cluster -p "${cports[0]}" -c 16 -n 1500000 -r 100000 -P 100 -q XADD 'bench:{tag}:__rand_int__' '*' d "$payload" | tr '\r' '\n' | grep -a 'requests per second' | tail -1 >"$work/cxadd100.txt"

start_sluice cb
url_cb=$S_URL
log "== cluster: cross-instance delivery, B follows 2,000 topics"
"$bench" fanout --url "$url_ca" --sub-url "$url_cb" --target sluice --topic f --topics 2000 --subscribers 1 --publishers 4 --events 20000 --rate 2000 --payload-bytes 256 | tail -1 >"$work/ccross.json"
# B's connections per master (A's and B's sockets are told apart by port).
cb_pid_conns=$(for p in "${cports[@]}"; do ss -tnp 2>/dev/null | grep -c "127.0.0.1:$p .*pid=$S_PID," || true; done | tr '\n' ' ')

python3 - "$work" "$cb_pid_conns" <<'PY'
import sys
w = sys.argv[1]
sys.path.insert(0, w)
import report
def j(n): return report.j(w, n)
def rps(n): return report.rps(w, n)
cpu_table = report.cpu_table
s, b, x1, x100 = j("csingle.json"), j("cbatch.json"), rps("cxadd.txt"), rps("cxadd100.txt")
print()
print("Redis Cluster, 3 masters:")
print()
print("| what | events/s |")
print("| --- | --- |")
print(f"| Sluice publish through the cluster, single events, 16 publishers, 48 topics | {s['events_per_sec']:,.0f} (request p50 {s['latency']['p50_us']/1000:.2f} ms, p99 {s['latency']['p99_us']/1000:.2f} ms) |")
print(f"| redis-benchmark --cluster XADD, 16 clients, one per request | {x1:,.0f} |")
print(f"| ratio, single | **{s['events_per_sec']/x1:.2f}** |")
print(f"| Sluice through the cluster, NDJSON batches of 100 | {b['events_per_sec']:,.0f} (request p50 {b['latency']['p50_us']/1000:.2f} ms) |")
print(f"| redis-benchmark --cluster XADD pipelined by 100 | {x100:,.0f} |")
print(f"| ratio, batched | **{b['events_per_sec']/x100:.2f}** |")
print()
d = j("ccross.json"); l = d["latency"]
print("| path | publish→deliver p50 | p99 | p99.9 | gaps / dups / reorders | B's connections per master |")
print("| --- | --- | --- | --- | --- | --- |")
print(f"| A → B on the cluster, B following 2,000 topics (sharded pub/sub + XRANGE) | {l['p50_us']/1000:.2f} ms | {l['p99_us']/1000:.2f} ms | {l['p999_us']/1000:.2f} ms | {d['gaps']} / {d['dups']} / {d['reorders']} | {sys.argv[2].strip()} |")
print()
cpu_table(w, [("Sluice, single events", "csingle", s), ("redis-benchmark --cluster XADD, one per request", "cxadd", 300000),
              ("Sluice, batches of 100", "cbatch", b), ("redis-benchmark --cluster XADD pipelined by 100", "cxadd100", 1500000)])
PY
