#!/usr/bin/env bash
# Benchmark driver. Two uses:
#
# 1. One mode against one fresh target (as before: Sluice by default):
#      bench/run.sh publish --topics 1 --publishers 16 --duration-secs 10 --payload-bytes 256
#      SLUICE__EMBEDDED__FSYNC=never bench/run.sh fanout --subscribers 100 --events 100000
#      TARGET=ceiling bench/run.sh fanout --subscribers 100 --events 100000
#    TARGET is one of sluice (default), sluice-redis, sluice-auth (HS256
#    tokens required; the load generator sends one on every request),
#    ceiling, pushpin, trivial.
#    The mode gets --url, --pid (and --target, --publish-url) of the target.
#
# 2. The scenarios of issue 5 (S1..S6), each RUNS times (default 3), targets
#    alternating within each run, every JSON line appended to $RESULTS:
#      bench/run.sh all
#      bench/run.sh S1 S3
#      QUICK=1 bench/run.sh all        # short, small runs: a check of the harness
#    RUNS, TARGETS (S1-S5; default "sluice-embedded sluice-redis ceiling
#    pushpin"), EXTRA_FANOUT_TARGETS (S1-S3 only; default
#    sluice-embedded-never), S6_TARGETS, OUT (bench/results; bench/results/quick with
#    QUICK, not committed), RESULTS and S1_ARGS..S6_ARGS
#    (extra options) adjust it. At the end the report is made:
#      target/release/sluice-bench report $RESULTS --out $OUT [--markdown FILE]
#    (MARKDOWN=BENCHMARKS.md puts its tables into that file too).
#
# Every target is started fresh for every run, on free loopback ports, and
# everything started here is stopped by pid (process group for Pushpin) on exit.
# SLUICE_BIN / BENCH_BIN override the binaries (default target/release/...).
set -euo pipefail
cd "$(dirname "$0")/.."
sluice=${SLUICE_BIN:-target/release/sluice}
bench=${BENCH_BIN:-target/release/sluice-bench}
work=$(mktemp -d /tmp/sluice-bench.XXXXXX)
# Raise our open-file limit (and so the targets' and the bench's) to the hard one.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

declare -a started_pids=() started_groups=()
cleanup() {
  local p
  for p in "${started_groups[@]}"; do kill -TERM -- "-$p" 2>/dev/null || true; done
  for p in "${started_pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${started_pids[@]}" "${started_groups[@]}"; do wait "$p" 2>/dev/null || true; done
  if [ -n "${KEEP:-}" ]; then log "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { echo "run.sh: $*" >&2; }

# Waits until $2 (a log file) has a line "$3 listening on ADDR"; prints ADDR.
wait_listening() {
  local pid=$1 file=$2 name=$3 addr=""
  for _ in $(seq 200); do
    addr=$(sed -n "s/^$name listening on //p" "$file" | head -1)
    [ -n "$addr" ] && { echo "$addr"; return 0; }
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.05
  done
  log "$name did not start:"; cat "$file" >&2; return 1
}

# Waits until something accepts TCP connections on 127.0.0.1:$1.
wait_port() {
  for _ in $(seq 200); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.05
  done
  log "nothing listens on port $1"; return 1
}

free_port() { "$bench" free-port; }

# --- targets ---------------------------------------------------------------
# start_target NAME sets T_URL, T_PUB (publish URL or empty), T_PIDS (comma
# list), T_KIND and T_STOP (pids / groups to stop); stop_target stops it.

redis_port=""
start_redis() {
  [ -n "$redis_port" ] && return 0
  command -v redis-server >/dev/null || apt_install redis-server
  redis_port=$(free_port)
  mkdir -p "$work/redis"
  redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no \
    --dir "$work/redis" >"$work/redis.log" 2>&1 &
  started_pids+=($!)
  wait_port "$redis_port"
  log "redis-server pid $! on 127.0.0.1:$redis_port"
}

apt_install() {
  log "installing $*"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@") >&2
}

# The HS256 secret of the sluice-auth target, and a token signed with it
# (publish and subscribe on every topic, valid for a day) that the load
# generator sends on every request (SLUICE_BENCH_BEARER).
auth_secret="sluice-bench-secret-0123456789abcdefghijkl"
hs256_token() {
  python3 - "$auth_secret" <<'PY'
import base64, hashlib, hmac, json, sys, time
b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
claims = {"exp": int(time.time()) + 86400, "sluice": {"publish": ["*"], "subscribe": ["*"], "admin": True}}
body = b64(json.dumps(claims).encode())
sig = hmac.new(sys.argv[1].encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
print(f"{head}.{body}.{b64(sig)}")
PY
}

T_BEARER=""
start_sluice() { # store fsync [auth]
  local store=$1 fsync=$2 data pid
  data=$(mktemp -d "$work/data.XXXXXX")
  local -a env=(SLUICE__EMBEDDED__FSYNC="$fsync")
  T_BEARER=""
  if [ "${3:-}" = auth ]; then
    env+=(SLUICE__AUTH__HS256_SECRETS="$auth_secret")
    T_BEARER=$(hs256_token)
  fi
  if [ "$store" = redis ]; then
    start_redis
    redis-cli -p "$redis_port" flushall >/dev/null
    env+=(SLUICE__STORE=redis SLUICE__REDIS__URL="redis://127.0.0.1:$redis_port")
  fi
  env "${env[@]}" "$sluice" --listen 127.0.0.1:0 --data-dir "$data" >"$data.log" 2>&1 &
  pid=$!
  started_pids+=("$pid")
  T_URL="http://$(wait_listening "$pid" "$data.log" sluice)"
  T_PUB="" T_PIDS=$pid T_KIND=sluice T_STOP="pid:$pid" T_DATA=$data
  log "sluice ($store store, fsync=$fsync) pid $pid on $T_URL, data $data"
}

start_server() { # subcommand name-in-log kind
  local pid file="$work/$1.$RANDOM.log"
  T_BEARER=""
  "$bench" "$1" --listen 127.0.0.1:0 >"$file" 2>&1 &
  pid=$!
  started_pids+=("$pid")
  T_URL="http://$(wait_listening "$pid" "$file" "$2")"
  T_PUB="" T_PIDS=$pid T_KIND=$3 T_STOP="pid:$pid" T_DATA=""
  log "$1 pid $pid on $T_URL"
}

# Pushpin (Debian package): a private instance with its own config, runtime
# dir and free loopback ports, routed to a grip-origin started with it.
pushpin_conf() { # dir http_port push_in_http_port
  local dir=$1
  sed -e "s#^rundir=.*#rundir=$dir/run#" \
      -e "s#^logdir=.*#logdir=$dir/log#" \
      -e "s#^ipc_prefix=.*#ipc_prefix=bench-#" \
      -e "s#^http_port=.*#http_port=$2#" \
      -e "s#^services=.*#services=condure,zurl,pushpin-proxy,pushpin-handler#" \
      -e "s#^push_in_spec=.*#push_in_spec=ipc://{rundir}/{ipc_prefix}push-in#" \
      -e "s#^push_in_sub_specs=.*#push_in_sub_specs=ipc://{rundir}/{ipc_prefix}push-in-sub#" \
      -e "s#^command_spec=.*#command_spec=ipc://{rundir}/{ipc_prefix}command#" \
      -e "s#^push_in_http_addr=.*#push_in_http_addr=127.0.0.1#" \
      -e "s#^push_in_http_port=.*#push_in_http_port=$3#" \
      -e "s#^push_in_http_max_body_size=.*#push_in_http_max_body_size=16000000#" \
      -e "s#^message_rate=.*#message_rate=10000000#" \
      -e "s#^message_hwm=.*#message_hwm=10000000#" \
      -e "s#^stats_connection_ttl=.*#stats_connection_ttl=120#" \
      -e "s#^\[proxy\]#[proxy]\nzurl_out_specs=ipc://{rundir}/{ipc_prefix}zurl-in\nzurl_out_stream_specs=ipc://{rundir}/{ipc_prefix}zurl-in-stream\nzurl_in_specs=ipc://{rundir}/{ipc_prefix}zurl-out#" \
      /etc/pushpin/pushpin.conf >"$dir/pushpin.conf"
}

start_pushpin() {
  T_BEARER=""
  command -v pushpin >/dev/null || apt_install pushpin
  local dir origin_file origin_pid origin http push pid
  dir=$(mktemp -d "$work/pushpin.XXXXXX")
  mkdir -p "$dir/run" "$dir/log"
  origin_file="$dir/origin.log"
  "$bench" grip-origin --listen 127.0.0.1:0 >"$origin_file" 2>&1 &
  origin_pid=$!
  started_pids+=("$origin_pid")
  origin=$(wait_listening "$origin_pid" "$origin_file" grip-origin)
  echo "* $origin" >"$dir/routes"
  http=$(free_port)
  push=$(free_port)
  pushpin_conf "$dir" "$http" "$push"
  # Its own session, so the runner and its children (condure, zurl,
  # pushpin-proxy, pushpin-handler) form one process group to stop.
  setsid pushpin --config "$dir/pushpin.conf" --port "127.0.0.1:$http" --loglevel "${PUSHPIN_LOGLEVEL:-1}" \
    >"$dir/pushpin.log" 2>&1 &
  pid=$!
  started_groups+=("$pid")
  wait_port "$http"
  wait_port "$push"
  local pids=$pid
  for _ in $(seq 100); do
    pids=$(ps -o pid= -g "$pid" | tr -s ' \n' ',' | sed 's/^,//;s/,$//')
    [ "$(echo "$pids" | tr ',' '\n' | wc -l)" -ge 5 ] && break
    sleep 0.05
  done
  # Open ports are not enough: its first subscribes can still fail (500,
  # closed connections) until proxy and handler are connected. Wait for one
  # stream to open through it.
  local ready=""
  for _ in $(seq 50); do
    if "$bench" idle --url "http://127.0.0.1:$http" --target pushpin --publish-url "http://127.0.0.1:$push" \
         --streams 1 --topics 1 --topic-prefix ready-probe --hold-secs 0 --open-timeout-secs 2 >/dev/null 2>&1; then
      ready=1
      break
    fi
    sleep 0.2
  done
  [ -n "$ready" ] || log "pushpin: no stream opened through the proxy within the probes"
  T_URL="http://127.0.0.1:$http" T_PUB="http://127.0.0.1:$push" T_PIDS=$pids T_KIND=pushpin
  T_STOP="group:$pid pid:$origin_pid" T_DATA=$dir
  log "pushpin group $pid (pids $pids) proxy $T_URL, control $T_PUB, origin $origin"
}

# Starts target NAME: sluice[-embedded][-always|-interval|-never], sluice-redis,
# ceiling, pushpin, trivial.
start_target() {
  case $1 in
    sluice | sluice-embedded) start_sluice embedded "${SLUICE__EMBEDDED__FSYNC:-always}" ;;
    sluice-embedded-always | sluice-always) start_sluice embedded always ;;
    sluice-embedded-interval | sluice-interval) start_sluice embedded interval ;;
    sluice-embedded-never | sluice-never) start_sluice embedded never ;;
    sluice-redis) start_sluice redis always ;;
    # HS256 tokens on: every publish and stream open carries a token.
    sluice-auth) start_sluice embedded always auth ;;
    ceiling) start_server ceiling ceiling ceiling ;;
    trivial) start_server trivial trivial trivial ;;
    pushpin) start_pushpin ;;
    *) log "unknown target $1"; return 2 ;;
  esac
}

stop_target() {
  local s p
  for s in $T_STOP; do
    p=${s#*:}
    case $s in
      group:*) kill -TERM -- "-$p" 2>/dev/null || true
               for _ in $(seq 50); do kill -0 -- "-$p" 2>/dev/null || break; sleep 0.1; done
               kill -KILL -- "-$p" 2>/dev/null || true ;;
      pid:*) kill -TERM "$p" 2>/dev/null || true ;;
    esac
    wait "$p" 2>/dev/null || true
  done
  if [ -n "${T_DATA:-}" ] && [ -z "${KEEP:-}" ]; then rm -rf "$T_DATA" "$T_DATA.log"; fi
  T_STOP="" T_DATA=""
}

# The target's options for a load mode.
target_args() {
  T_ARGS=(--url "$T_URL" --target "$T_KIND" --pid "$T_PIDS")
  [ -n "$T_PUB" ] && T_ARGS+=(--publish-url "$T_PUB")
  return 0
}

# --- 1. one mode against one target ------------------------------------------
case ${1:-} in
  publish | fanout | idle | resume)
    mode=$1
    shift
    start_target "${TARGET:-sluice}"
    target_args
    SLUICE_BENCH_BEARER="$T_BEARER" "$bench" "$mode" "${T_ARGS[@]}" "$@"
    exit $?
    ;;
  "" | -h | --help)
    sed -n '2,30p' "$0"
    exit 0
    ;;
esac

# --- 2. scenarios ---------------------------------------------------------------
# Full size by default; QUICK=1 shrinks every scenario to a few seconds.
q() { if [ -n "${QUICK:-}" ]; then echo "$2"; else echo "$1"; fi; }
runs=${RUNS:-3}
out=${OUT:-bench/results$(q "" /quick)}
mkdir -p "$out"
results=${RESULTS:-$out/results-$(date -u +%Y%m%dT%H%M%SZ)$(q "" -quick).jsonl}
# The targets of S1-S4 (S5 keeps the Sluice ones: the others keep no history).
targets=${TARGETS:-sluice-embedded sluice-redis ceiling pushpin}
# S1-S3 also run Sluice with fsync = "never": the same broker without the
# disk in the publish path, which tells the fan-out's own cost from the
# fsync's (an empty EXTRA_FANOUT_TARGETS leaves it out).
extra_fanout=${EXTRA_FANOUT_TARGETS-sluice-embedded-never}
step_timeout=$(q 1200 180)

scenario_args() { # scenario -> the mode and its options, in S_ARGS
  case $1 in
    # "Flat out" for S1 and S3: enough publishers, each waiting for its answer,
    # to keep a broker busy while its fsyncs are in flight. With 8 (S1) and
    # 16 (S3) the durable targets measured their publishers' round trip, not
    # their throughput; every target gets the same publishers.
    S1) S_ARGS=(fanout --topic s1 --subscribers "$(q 100 20)" --publishers 32
                --duration-secs "$(q 10 2)" --payload-bytes 256 --drain-secs "$(q 30 10)" --timeout-secs 600) ;;
    S2) S_ARGS=(fanout --topic s2 --subscribers "$(q 1000 100)" --publishers 20 --rate 1000
                --duration-secs "$(q 10 2)" --payload-bytes 256 --drain-secs "$(q 30 10)" --timeout-secs 600) ;;
    # S2 asks 1,000,000 deliveries/s of the machine, more than the load
    # generator can parse on two cores next to any target: every target falls
    # behind and the latencies are the bench's backlog. S2b is the same
    # fan-out at a rate the machine sustains, where latency is the target's.
    S2b) S_ARGS=(fanout --topic s2b --subscribers "$(q 1000 100)" --publishers 20 --rate 200
                --duration-secs "$(q 10 2)" --payload-bytes 256 --drain-secs "$(q 30 10)" --timeout-secs 600) ;;
    S3) S_ARGS=(fanout --topic s3 --topics "$(q 100 10)" --subscribers "$(q 10 5)" --publishers 64
                --duration-secs "$(q 10 2)" --payload-bytes 256 --drain-secs "$(q 30 10)" --timeout-secs 600) ;;
    S4) S_ARGS=(idle --topic-prefix s4 --streams "$(q 50000 2000)" --topics 100 --hold-secs "$(q 20 2)"
                --per-process "$(q 9000 1000)" --concurrency 60) ;;
    S5) S_ARGS=(resume --topic s5 --events "$(q 1000000 50000)" --batch 1000 --publishers 4 --payload-bytes 256) ;;
    # S6 flat out as well: 64 publishers (with 16, fsync = "always" measured
    # the publishers' wait for their fsync, 0.23x of the trivial handler
    # against 0.46x with 64 in the same quick run).
    S6-single) S_ARGS=(publish --topic-prefix s6 --publishers 64 --duration-secs "$(q 10 2)" --payload-bytes 256) ;;
    S6-batch100) S_ARGS=(publish --topic-prefix s6 --publishers 64 --duration-secs "$(q 10 2)" --payload-bytes 256 --batch 100) ;;
  esac
  # Extra options per scenario from the environment, e.g. S1_ARGS="--publishers 16"
  # (a later option overrides an earlier one).
  local extra_var="${1//-/_}_ARGS"
  # shellcheck disable=SC2206
  [ -n "${!extra_var:-}" ] && S_ARGS+=(${!extra_var})
  return 0
}

scenario_targets() { # scenario -> its targets
  case $1 in
    S1 | S2 | S2b | S3) echo "$targets $extra_fanout" ;;
    S4) echo "$targets" ;;
    S5) for t in $targets; do case $t in sluice*) echo "$t" ;; esac; done ;;
    S6) echo "${S6_TARGETS:-sluice-embedded-always sluice-embedded-interval sluice-embedded-never trivial}" ;;
  esac
}

# One scenario step against a fresh target; its JSON line goes to $results.
run_step() { # scenario run target
  local scenario=$1 run=$2 target=$3 line status=0
  start_target "$target"
  target_args
  local subs=("$scenario")
  if [ "$scenario" = S6 ]; then
    # The trivial handler is the yardstick of single-event publishes only.
    if [ "$T_KIND" = trivial ]; then subs=(S6-single); else subs=(S6-single S6-batch100); fi
  fi
  for sub in "${subs[@]}"; do
    scenario_args "$sub"
    log "== $sub run $run target $target: ${S_ARGS[*]}"
    status=0
    line=$(SLUICE_BENCH_BEARER="$T_BEARER" timeout "$step_timeout" "$bench" "${S_ARGS[0]}" "${T_ARGS[@]}" --target-name "$target" \
             --scenario "$sub" --run "$run" "${S_ARGS[@]:1}" | tail -1) || status=$?
    case $line in
      "{"*) ;;
      *) line="{\"scenario\":\"$sub\",\"target\":\"$target\",\"run\":$run,\"ok\":false,\"error\":\"exit status $status, no result line\"}" ;;
    esac
    echo "$line" >>"$results"
    log "-> $(echo "$line" | cut -c1-160)..."
  done
  stop_target
}

selected=()
for a in "$@"; do
  case $a in
    all) selected+=(S1 S2 S2b S3 S4 S5 S6) ;;
    S1 | S2 | S2b | S3 | S4 | S5 | S6) selected+=("$a") ;;
    *) log "unknown mode or scenario $a (publish|fanout|idle|resume, all, S1..S6, S2b)"; exit 2 ;;
  esac
done
log "scenarios ${selected[*]}, $runs run(s), results in $results$(q "" ", QUICK")"
for run in $(seq "$runs"); do
  for scenario in "${selected[@]}"; do
    for target in $(scenario_targets "$scenario"); do
      run_step "$scenario" "$run" "$target"
    done
  done
done
log "results: $results"
"$bench" report "$results" --out "$out" ${MARKDOWN:+--markdown "$MARKDOWN"} || log "report failed"
