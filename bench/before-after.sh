#!/usr/bin/env bash
# Before/after of the broker itself: two `sluice` builds, the same load
# generator, the embedded store with fsync = "always", alternating builds
# within each run (before, after, before, after, ...):
#
#   bench/before-after.sh BEFORE_SLUICE_BIN AFTER_SLUICE_BIN S1 S3 S4
#
# RUNS (default 3), QUICK and the S*_ARGS of run.sh apply. Each build's JSON
# lines go to $OUT/before.jsonl and $OUT/after.jsonl; the summary printed at
# the end (and written to $OUT/summary.txt) gives each scenario's figures per
# run and their medians.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 3 ] || { echo "usage: $0 BEFORE_BIN AFTER_BIN SCENARIO..." >&2; exit 2; }
before=$1 after=$2
shift 2
runs=${RUNS:-3}
out=${OUT:-bench/results/before-after-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$out"
for run in $(seq "$runs"); do
  for side in before after; do
    bin=$before
    [ "$side" = after ] && bin=$after
    echo "before-after.sh: run $run, $side ($bin)" >&2
    SLUICE_BIN=$bin RUNS=1 TARGETS=sluice-embedded EXTRA_FANOUT_TARGETS='' \
      RESULTS="$out/$side.jsonl" bench/run.sh "$@"
  done
done
python3 - "$out" <<'PY' | tee "$out/summary.txt"
import json, statistics, sys
out = sys.argv[1]
figures = {
    "fanout": [("delivered_events_per_sec", "deliveries/s"), ("publish_events_per_sec", "publishes/s"),
               ("latency.p99_us", "delivery p99 us"), ("server_rss_kb", "broker RSS KiB")],
    "idle": [("per_stream_kib", "KiB per stream"), ("open_streams", "streams held")],
}
def get(d, path):
    for k in path.split("."):
        d = d.get(k) if isinstance(d, dict) else None
    return d
rows = {}
for side in ("before", "after"):
    for line in open(f"{out}/{side}.jsonl"):
        r = json.loads(line)
        for key, label in figures.get(r.get("mode"), []):
            v = get(r, key)
            if v is not None:
                rows.setdefault((r["scenario"], label), {}).setdefault(side, []).append(v)
for (scenario, label), sides in sorted(rows.items()):
    b, a = sides.get("before", []), sides.get("after", [])
    mb = statistics.median(b) if b else float("nan")
    ma = statistics.median(a) if a else float("nan")
    print(f"{scenario:4} {label:18} before {mb:>12.1f} {b}  after {ma:>12.1f} {a}  after/before {ma / mb if mb else float('nan'):.3f}")
PY
