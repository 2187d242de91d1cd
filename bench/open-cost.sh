#!/usr/bin/env bash
# What verifying every record costs when a topic log opens (issue 13: the
# offset index files are no longer trusted, so every segment is read and
# checksummed at start). Writes MIB mebibytes of 1 KiB events to one topic
# through a release broker, stops it, then times `sluice check` (the same
# verification start-up does, then exit) RUNS times with a warm page cache.
#
#   bench/open-cost.sh [MIB=1024] [RUNS=5]
set -euo pipefail
cd "$(dirname "$0")/.."
MIB=${1:-1024}
RUNS=${2:-5}
BIN=target/release/sluice
[ -x "$BIN" ] || cargo build --release --bin sluice
DIR=$(mktemp -d)
trap 'kill "$PID" 2>/dev/null || true; rm -rf "$DIR"' EXIT
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
SLUICE__EMBEDDED__FSYNC=never "$BIN" --listen 127.0.0.1:$PORT --data-dir "$DIR" >/dev/null 2>&1 &
PID=$!
until curl -sf "localhost:$PORT/readyz" >/dev/null; do sleep 0.1; done
# One batch: 1000 events of 1 KiB (about 1 MiB on disk).
python3 - "$DIR/batch.ndjson" <<'PY'
import json, sys
line = json.dumps({"data": "x" * 1000})
open(sys.argv[1], "w").write("\n".join([line] * 1000) + "\n")
PY
for _ in $(seq "$MIB"); do
  curl -sf -o /dev/null --data-binary @"$DIR/batch.ndjson" "localhost:$PORT/v1/topics/big/batch"
done
kill -TERM "$PID"; wait "$PID" || true
du -sh "$DIR/topics/big" | sed 's/^/data: /'
ls "$DIR/topics/big" | grep -c '\.log$' | sed 's/^/segments: /'
for i in $(seq "$RUNS"); do
  s=$(date +%s%N)
  "$BIN" check --data-dir "$DIR" >/dev/null
  e=$(date +%s%N)
  echo "run $i: $(( (e - s) / 1000000 )) ms"
done
