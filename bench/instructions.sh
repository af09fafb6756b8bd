#!/usr/bin/env bash
# Instructions per request (valgrind callgrind, counters zeroed after load and warm-up): a
# measure of the server's user-space CPU cost that contention on a shared machine does not
# move (req/s from bench/run.sh needs a quiet machine). Not run by CI. Traffic goes to
# 127.0.0.1 only; every wrk run is bounded.
#
# Usage: bench/instructions.sh BINARY        (needs valgrind, wrk; D=10s per phase)
# Prints, for GET of a 10-host service and for form heartbeats over 1000 hosts:
#   requests=N ir=TOTAL ir_per_req=PER_REQUEST
set -euo pipefail
BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"; export BENCH_DIR
bin=$1; D=${D:-10s}
work=$(mktemp -d)
valgrind --tool=callgrind --callgrind-out-file=$work/cg.%p "$bin" serve --listen 127.0.0.1:0 --env bench >"$work/out" 2>"$work/err" &
pid=$!
for i in $(seq 600); do grep -q '^listening' "$work/out" && break; sleep 0.1; done
url=$(sed -n 's/^listening on //p' "$work/out")
BENCH_SERVICE=get-bench-10 BENCH_SERVICES=1 BENCH_HOSTS=10 BENCH_STOP_AFTER=10 timeout 120 wrk -t1 -c8 -d100s -s $BENCH_DIR/heartbeat.lua "$url" >/dev/null
export BENCH_SERVICE=heartbeat-bench BENCH_SERVICES=1 BENCH_HOSTS=1000 BENCH_STOP_AFTER=1000
timeout 120 wrk -t1 -c8 -d100s -s $BENCH_DIR/heartbeat.lua "$url" >/dev/null
export BENCH_STOP_AFTER=0
ir() { callgrind_control -d $pid >/dev/null; local f; f=$(ls -t $work/cg.$pid* | head -1); sed -n 's/^summary: \([0-9]*\).*/\1/p;s/^totals: \([0-9]*\).*/\1/p' "$f" | head -1; }
phase() {
  wrk -t1 -c8 -d2s "${@}" >/dev/null  # warm-up
  callgrind_control -z $pid >/dev/null
  local line; line=$(wrk -t1 -c8 -d"$D" "$@" | grep '^BENCH ')
  local n; n=$(sed -n 's/.*requests=\([0-9]*\).*/\1/p' <<<"$line")
  local i; i=$(ir)
  echo "requests=$n ir=$i ir_per_req=$((i / n))"
}
echo "$(basename $bin) GET10 $(phase -s $BENCH_DIR/report.lua "$url/v1/registration/get-bench-10")"
echo "$(basename $bin) HB    $(phase -s $BENCH_DIR/heartbeat.lua "$url")"
kill $pid; wait $pid 2>/dev/null || true
rm -rf "$work"
