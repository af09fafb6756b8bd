#!/usr/bin/env bash
# Memory under service-name churn (issue 10, "Memory returns"). Not run by CI. One node on
# 127.0.0.1; the run stops by itself (a watchdog ends it after BENCH_MAX_SECONDS) and cleans
# up every process it started.
#
# Round 1 registers BENCH_NAMES (200,000) distinct service names, one host each, waits until
# every host has expired and every service has been removed, and reads the server's VmRSS.
# Round 2 does the same with 200,000 NEW names. A registry that keeps something per name ever
# written grows from round 1 to round 2; one that gives memory back stays flat.
# Requirement: RSS after round 2 within 10% of RSS after round 1.
#
# Usage: bench/memory-churn.sh   (from anywhere; needs cargo, wrk, curl)
# Knobs (environment): BENCH_NAMES (200000), BENCH_TTL (20s: long enough that a whole round
#   is held at once at its peak), BENCH_CONNECTIONS (32), BENCH_MAX_SECONDS (900),
#   BENCH_SKIP_BUILD (unset), BENCH_BINARY (target/release/discovery; another build to
#   compare, with BENCH_SKIP_BUILD=1), BENCH_TRIM (unset; 1 also shows the RSS after asking
#   glibc to return free pages, `malloc_trim(0)` called into the server through gdb: how much
#   of the RSS is memory the allocator keeps, not memory the registry holds).

set -euo pipefail

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$BENCH_DIR")"
NAMES="${BENCH_NAMES:-200000}"
TTL="${BENCH_TTL:-20s}"
CONNECTIONS="${BENCH_CONNECTIONS:-32}"
MAX_SECONDS="${BENCH_MAX_SECONDS:-900}"
BINARY="${BENCH_BINARY:-$ROOT/target/release/discovery}"
export BENCH_DIR

WORK="$(mktemp -d /tmp/discovery-churn.XXXXXX)"
SERVER_PID=""
cleanup() {
  if [[ -n "$SERVER_PID" ]]; then kill "$SERVER_PID" 2>/dev/null || true; fi
  if [[ -n "${WATCHDOG_PID:-}" ]]; then
    # The watchdog's sleep first (by its parent's pid): it holds this script's stdout open.
    pkill -P "$WATCHDOG_PID" 2>/dev/null || true
    kill "$WATCHDOG_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT
(sleep "$MAX_SECONDS"; echo "watchdog: over ${MAX_SECONDS}s, stopping" >&2; kill $$) &
WATCHDOG_PID=$!

if [[ -z "${BENCH_SKIP_BUILD:-}" ]]; then
  (cd "$ROOT" && cargo build --release --bin discovery)
fi

# --min-ttl 1s lets BENCH_TTL be short; --expiry-guard 0 so that a whole round expiring at
# once is dropped (the guard would otherwise hold it, as it should in production).
"$BINARY" serve --listen 127.0.0.1:0 --host-ttl "$TTL" --min-ttl 1s --expiry-guard 0 \
  >"$WORK/stdout" 2>"$WORK/stderr" &
SERVER_PID=$!
for _ in $(seq 100); do
  grep -q "listening on" "$WORK/stdout" 2>/dev/null && break
  sleep 0.1
done
URL="$(sed -n 's/^listening on //p' "$WORK/stdout" | head -1)"
[[ -n "$URL" ]] || { echo "the server did not start" >&2; cat "$WORK/stderr" >&2; exit 1; }

rss_mb() { awk '/^VmRSS/ {printf "%.1f", $2 / 1024}' "/proc/$SERVER_PID/status"; }
# A gauge from /metrics, or "absent" (builds before issue 10 have no discovery_services_held).
gauge() { curl -sS "$URL/metrics" | awk -v n="$1" '$1 == n {print $2; found=1} END {if (!found) print "absent"}'; }

round() {
  local prefix="$1"
  local started=$SECONDS
  # heartbeat.lua with one host per service: BENCH_NAMES distinct names "<prefix>-000"...,
  # each registered once; wrk exits once every one has answered 200.
  BENCH_SERVICE="$prefix" BENCH_SERVICES="$NAMES" BENCH_HOSTS=1 BENCH_STOP_AFTER="$NAMES" \
    wrk -t1 -c"$CONNECTIONS" -d600s -s "$BENCH_DIR/heartbeat.lua" "$URL" >"$WORK/wrk-$prefix" 2>&1
  echo "round $prefix: $NAMES names registered in $((SECONDS - started))s; hosts $(gauge discovery_hosts), RSS at peak $(rss_mb) MB"
  # Every host expires (TTL) and every service goes once its last host has.
  until [[ "$(gauge discovery_hosts)" == 0 ]]; do sleep 1; done
  local held
  until held="$(gauge discovery_services_held)"; [[ "$held" == 0 || "$held" == absent ]]; do sleep 1; done
  sleep 2 # let the last sweep's frees settle before reading RSS
  RSS_AFTER="$(rss_mb)"
  echo "round $prefix: all expired after $((SECONDS - started))s; services held: $held; RSS $RSS_AFTER MB"
  if [[ -n "${BENCH_TRIM:-}" ]]; then
    gdb -p "$SERVER_PID" -batch -ex 'call (int) malloc_trim(0)' >/dev/null 2>&1 || true
    echo "round $prefix: after malloc_trim(0): RSS $(rss_mb) MB"
  fi
}

echo "binary: $BINARY"
echo "fresh server: RSS $(rss_mb) MB"
round one
ONE="$RSS_AFTER"
round two
TWO="$RSS_AFTER"
awk -v a="$ONE" -v b="$TWO" 'BEGIN {
  growth = (b - a) / a * 100
  printf "RSS after round 1: %s MB, after round 2: %s MB (%+.1f%%): %s\n", a, b, growth,
    (growth <= 10 ? "within 10%" : "OVER 10%")
  exit (growth <= 10 ? 0 : 1)
}'
