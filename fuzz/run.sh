#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 600), one after another,
# as one libFuzzer job, from the seed corpus that seeds.py writes plus what
# earlier runs kept in corpus/<target>/. Needs a nightly toolchain and
# cargo-fuzz (`cargo install cargo-fuzz`). Prints each target's final
# statistics (executions, run time); a failure's input is kept in
# artifacts/<target>/ and stops the script.
#
#   fuzz/run.sh [SECONDS [TARGET...]]
#
# Without TARGETs, every target: the disk readers (segment journal
# topic_dir) and what a client sends (cursor sse batch headers token).
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-600}
shift || true
targets=(segment journal topic_dir cursor sse batch headers token)
[ $# -gt 0 ] && targets=("$@")
# build.rs otherwise asks git for the revision and, in a git worktree
# (where .git is a file), is rerun by every `cargo fuzz run`: a rebuild of
# the crate before each target.
export SLUICE_REVISION=${SLUICE_REVISION:-fuzz}

python3 fuzz/seeds.py fuzz/corpus
cargo +nightly fuzz build -O
# The binaries `cargo fuzz run` would start, started here directly (from
# fuzz/, where libFuzzer's -jobs log lands): sources edited while the
# script runs are not rebuilt into the later targets.
host=$(rustc +nightly -vV | sed -n 's/^host: //p')
# cargo-fuzz 0.13 builds into fuzz/target; earlier ones into target.
bins=fuzz/target/$host/release
[ -d "$bins" ] || bins=target/$host/release
bins=$PWD/$bins
cd fuzz
mkdir -p logs
for t in "${targets[@]}"; do
  echo "== $t: ${secs}s"
  mkdir -p "artifacts/$t"
  # -jobs=1: one worker process, whose output libFuzzer writes to
  # fuzz-0.log (kept as fuzz/logs/<target>.log).
  rm -f fuzz-0.log
  status=0
  "$bins/$t" -artifact_prefix="artifacts/$t/" -max_total_time="$secs" -jobs=1 \
    -timeout=20 -print_final_stats=1 "corpus/$t" >/dev/null 2>&1 || status=$?
  mv -f fuzz-0.log "logs/$t.log"
  grep -E '^Done [0-9]+ runs|stat::number_of_executed_units|stat::average_exec_per_sec' \
    "logs/$t.log" || true
  if [ "$status" -ne 0 ] || grep -q 'ERROR: libFuzzer\|panicked' "logs/$t.log"; then
    echo "$t failed: see fuzz/logs/$t.log and fuzz/artifacts/$t/" >&2
    exit 1
  fi
done
