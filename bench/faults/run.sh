#!/usr/bin/env bash
# The fault harness of issue 14 ("Coverage under failure"): real registry nodes, agents
# and consumers through scripted faults; prints a markdown table, writes an SVG timeline
# per fault, and exits non-zero when a check fails. docs/faults.md explains it all.
#
# Usage: bench/faults/run.sh [--short | --full] [--only kill,freeze,...]
#   --short (default)  3 nodes, 60 agents, 15 s faults: about 3 minutes; tests/run.sh runs it
#   --full             5 nodes, 300 agents, a 60 s freeze and 5 minutes with every node
#                      down: about 20 minutes; the benchmark behind README's figures
# Knobs (environment):
#   FAULTS_BINARY       the `discovery` to test (default target/debug/discovery for --short,
#                       target/release/discovery for --full, built when missing)
#   FAULTS_OUT          where report.md, run.json (every sample), the SVGs and the
#                       processes' logs go (default bench/out/faults-PROFILE)
#   FAULTS_EXPECT_FAIL  checks to report without failing, comma-separated: empty,resurrect,guard
#   FAULTS_NETNS=0      run on plain loopback, without namespaces (the partition is skipped)
#   FAULTS_MAX_SECONDS  the watchdog (default 420 short, 2400 full)
#   FAULTS_NODES, FAULTS_AGENTS  override the profile's sizes
#
# Needs root for the namespaces (ip netns; without them it runs on loopback and skips the
# partition), haproxy (skipped with a warning when missing) and faketime's libfaketime.
# Traffic stays on loopback and on the 10.77.0.0/24 link the harness makes inside its own
# namespaces; the host's interfaces are never touched. Every process started is ended, and
# the namespaces deleted, on any exit.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
PROFILE=short
EXTRA=()
while [ $# -gt 0 ]; do
    case "$1" in
        --short) PROFILE=short ;;
        --full) PROFILE=full ;;
        --only) EXTRA+=(--only "$2"); shift ;;
        *) echo "usage: $0 [--short|--full] [--only FAULT,...]" >&2; exit 2 ;;
    esac
    shift
done

if [ "$PROFILE" = full ]; then
    BINARY="${FAULTS_BINARY:-$ROOT/target/release/discovery}"
    MAX_SECONDS="${FAULTS_MAX_SECONDS:-2400}"
    [ -n "${FAULTS_BINARY:-}" ] || (cd "$ROOT" && cargo build --release --bin discovery)
else
    BINARY="${FAULTS_BINARY:-$ROOT/target/debug/discovery}"
    MAX_SECONDS="${FAULTS_MAX_SECONDS:-420}"
    [ -x "$BINARY" ] || (cd "$ROOT" && cargo build --bin discovery)
fi
OUT="${FAULTS_OUT:-$ROOT/bench/out/faults-$PROFILE}"
mkdir -p "$OUT"
WORK="$(mktemp -d /tmp/discovery-faults.XXXXXX)"
NS=""
HARNESS_PID=""

if ! command -v haproxy >/dev/null; then
    echo "faults: haproxy not installed: running without the HAProxy consumer" >&2
    EXTRA+=(--no-haproxy)
fi

cleanup() {
    local ns pid
    if [ -n "$HARNESS_PID" ]; then kill "$HARNESS_PID" 2>/dev/null || true; wait "$HARNESS_PID" 2>/dev/null || true; fi
    # Whatever is still running inside our namespaces (the harness kills its children
    # itself; this catches the case where it was killed first).
    if [ -n "$NS" ]; then
        for ns in $(ip netns list | awk '{print $1}' | grep -E "^$NS-" || true); do
            for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -CONT "$pid" 2>/dev/null || true; kill -KILL "$pid" 2>/dev/null || true; done
            ip netns del "$ns" 2>/dev/null || true
        done
    fi
    mkdir -p "$OUT/logs" && cp "$WORK"/*.log "$OUT/logs/" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The namespaces: one for the harness and its clients (agents, watchers, EDS poller,
# HAProxy), one per node, each node joined to a bridge in the harness namespace by a veth
# pair. Cutting a node off is `ip link set fhvNb down` in the harness namespace.
make_namespaces() {
    local nodes="$1" i
    NS="fh$$"
    ip netns add "$NS-c" || return 1
    ip -n "$NS-c" link set lo up
    ip -n "$NS-c" link add fhbr type bridge
    ip -n "$NS-c" addr add 10.77.0.1/24 dev fhbr
    ip -n "$NS-c" link set fhbr up
    for i in $(seq 1 "$nodes"); do
        ip netns add "$NS-n$i"
        ip -n "$NS-n$i" link set lo up
        ip link add "fhv${i}a" netns "$NS-n$i" type veth peer name "fhv${i}b" netns "$NS-c"
        ip -n "$NS-n$i" addr add "10.77.0.$((10 + i))/24" dev "fhv${i}a"
        ip -n "$NS-n$i" link set "fhv${i}a" up
        ip -n "$NS-c" link set "fhv${i}b" master fhbr
        ip -n "$NS-c" link set "fhv${i}b" up
    done
}

NODES="${FAULTS_NODES:-$([ "$PROFILE" = full ] && echo 5 || echo 3)}"
RUNNER=()
NETNS_ARG=""
if [ "${FAULTS_NETNS:-1}" != 0 ] && [ "$(id -u)" = 0 ] && command -v ip >/dev/null \
        && make_namespaces "$NODES" 2>"$WORK/netns.err"; then
    RUNNER=(ip netns exec "$NS-c")
    NETNS_ARG="$NS"
else
    [ -s "$WORK/netns.err" ] && cat "$WORK/netns.err" >&2
    echo "faults: no network namespaces: running on loopback, partition skipped" >&2
fi

echo "faults: profile $PROFILE, binary $BINARY, output $OUT"
set +e
timeout --kill-after=15 "$((MAX_SECONDS + 60))" "${RUNNER[@]}" python3 "$HERE/faults.py" \
    --profile "$PROFILE" --binary "$BINARY" --work "$WORK" --out "$OUT" \
    --netns "$NETNS_ARG" --max-seconds "$MAX_SECONDS" "${EXTRA[@]}" &
HARNESS_PID=$!
wait "$HARNESS_PID"
STATUS=$?
HARNESS_PID=""
set -e
exit "$STATUS"
