#!/usr/bin/env bash
# Single-node benchmark of `discovery serve` against nginx on the same bytes (issue 2,
# "Performance"). Not run by CI. Traffic goes to 127.0.0.1 only; the run stops by itself
# (a watchdog ends it after BENCH_MAX_SECONDS) and cleans up every process it started.
#
# What it measures (see docs/benchmarks.md for the choices and the figures):
#   1. GET /v1/registration/{svc} for services of 10, 100 and 1000 hosts: requests/s and
#      p99, and nginx serving the identical body bytes as a static file;
#   2. heartbeat POSTs (form bodies) rotating over 1000 distinct hosts: requests/s;
#   3. VmRSS of a fresh server before and after registering 100,000 hosts (100 services of
#      1000), and after GETting every service once (prepared bodies built).
#
# Usage: bench/run.sh            (from anywhere; needs cargo, wrk, nginx, curl, taskset)
# Knobs (environment): BENCH_DURATION (10s), BENCH_WARMUP (2s), BENCH_THREADS (1),
#   BENCH_CONNECTIONS (32), BENCH_SERVER_CPUS (0), BENCH_CLIENT_CPUS (1),
#   BENCH_MAX_SECONDS (600), BENCH_SKIP_BUILD (unset), BENCH_SIZES ("10 100 1000"),
#   BENCH_PARTS ("get heartbeat rss": a subset runs only those parts, for quick A/B runs),
#   BENCH_BINARY (target/release/discovery; another build to compare, with BENCH_SKIP_BUILD=1).

set -euo pipefail

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$BENCH_DIR")"
DURATION="${BENCH_DURATION:-10s}"
WARMUP="${BENCH_WARMUP:-2s}"
THREADS="${BENCH_THREADS:-1}"
CONNECTIONS="${BENCH_CONNECTIONS:-32}"
SERVER_CPUS="${BENCH_SERVER_CPUS:-0}"
CLIENT_CPUS="${BENCH_CLIENT_CPUS:-1}"
MAX_SECONDS="${BENCH_MAX_SECONDS:-600}"
# One server worker per server CPU: the registry's tokio workers and nginx's worker processes.
BINARY="${BENCH_BINARY:-$ROOT/target/release/discovery}"
WORKERS="$(awk -F, '{print NF}' <<<"$SERVER_CPUS")"
read -r -a SIZES <<<"${BENCH_SIZES:-10 100 1000}"
PARTS=" ${BENCH_PARTS:-get heartbeat rss} "
RSS_SERVICES=100
RSS_HOSTS_PER_SERVICE=1000
export BENCH_DIR

WORK="$(mktemp -d /tmp/discovery-bench.XXXXXX)"
PIDS=()

cleanup() {
    local pid
    # The watchdog's sleep first (by its parent's pid), then what the run started.
    pkill -P "$WATCHDOG" 2>/dev/null || true
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'echo "bench: interrupted (or over BENCH_MAX_SECONDS=$MAX_SECONDS)" >&2; exit 130' INT TERM

# The watchdog: the whole run is bounded even if a server or wrk hangs.
( sleep "$MAX_SECONDS" && kill -TERM $$ ) 2>/dev/null &
WATCHDOG=$!
PIDS+=("$WATCHDOG")

log() { echo "bench: $*" >&2; }
die() { log "$*"; exit 1; }

for tool in cargo wrk nginx curl taskset awk; do
    command -v "$tool" >/dev/null || die "missing $tool"
done
[ "$(nproc)" -ge 2 ] || log "warning: fewer than 2 CPUs; client and server will share one"

# A free TCP port on 127.0.0.1, from the kernel.
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# Polls a command until it succeeds, at most $1 seconds.
wait_for() {
    local deadline=$((SECONDS + $1))
    shift
    until "$@" >/dev/null 2>&1; do
        [ "$SECONDS" -lt "$deadline" ] || return 1
        sleep 0.05
    done
}

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

# Starts the registry pinned to the server CPUs; sets REG_PID and REG_URL.
start_registry() {
    local out="$WORK/registry.$1.out"
    taskset -c "$SERVER_CPUS" env TOKIO_WORKER_THREADS="$WORKERS" \
        "$BINARY" serve --listen 127.0.0.1:0 --env bench \
        >"$out" 2>"$WORK/registry.$1.log" &
    REG_PID=$!
    PIDS+=("$REG_PID")
    wait_for 10 grep -q '^listening on http://' "$out" || die "registry did not start: $(cat "$WORK/registry.$1.log")"
    REG_URL="$(sed -n 's/^listening on \(http:\/\/.*\)$/\1/p' "$out" | head -n1)"
    wait_for 10 curl -fsS "$REG_URL/readyz" || die "registry not ready"
}

stop_registry() {
    kill "$REG_PID"
    wait "$REG_PID" 2>/dev/null || true
}

start_nginx() {
    local prefix="$WORK/nginx"
    mkdir -p "$prefix/www" "$prefix/tmp" "$prefix/logs"
    chmod -R a+rX "$WORK"
    NGINX_PORT="$(free_port)"
    local user_line=""
    [ "$(id -u)" -eq 0 ] && user_line="user $(id -un);"
    cat >"$prefix/nginx.conf" <<EOF
$user_line
worker_processes $WORKERS;
daemon off;
pid $prefix/nginx.pid;
error_log $prefix/logs/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    default_type application/json;
    sendfile on;
    tcp_nopush on;
    open_file_cache max=1000 inactive=60s;
    keepalive_requests 100000000;
    client_body_temp_path $prefix/tmp/body;
    proxy_temp_path $prefix/tmp/proxy;
    fastcgi_temp_path $prefix/tmp/fastcgi;
    uwsgi_temp_path $prefix/tmp/uwsgi;
    scgi_temp_path $prefix/tmp/scgi;
    server {
        listen 127.0.0.1:$NGINX_PORT;
        root $prefix/www;
    }
}
EOF
    taskset -c "$SERVER_CPUS" nginx -p "$prefix" -c "$prefix/nginx.conf" \
        2>"$prefix/logs/stderr.log" &
    NGINX_PID=$!
    PIDS+=("$NGINX_PID")
    NGINX_URL="http://127.0.0.1:$NGINX_PORT"
    # Any HTTP answer (the empty root is a 403/404) means nginx is up.
    wait_for 10 curl -sS -o /dev/null "$NGINX_URL/" \
        || die "nginx did not start: $(cat "$prefix/logs/stderr.log" "$prefix/logs/error.log" 2>/dev/null)"
}

# wrk pinned to the client CPUs; prints the BENCH line of report.lua.
run_wrk() {
    local duration="$1"
    shift
    timeout $(( ${duration%s} + 30 )) taskset -c "$CLIENT_CPUS" \
        wrk -t"$THREADS" -c"$CONNECTIONS" -d"$duration" --latency "$@" | grep '^BENCH '
}

field() { sed -n "s/.* $1=\([0-9]*\).*/\1/p" <<<"$2"; }

# Live hosts of the services whose names start with $1, from /v1/services.
hosts_of() {
    curl -fsS "$REG_URL/v1/services" | grep -o "\"service\":\"$1[^\"]*\",\"hosts\":[0-9]*" \
        | awk -F: '{s += $NF} END {print s + 0}'
}

# Registers hosts through the loader: $1 service (or prefix), $2 services, $3 hosts each.
# The loader exits after as many answers as hosts; a request still in flight then may be
# lost, so the count is checked and the (idempotent) load repeated if short.
load_hosts() {
    local n=$(($2 * $3)) attempt
    for attempt in 1 2 3; do
        BENCH_SERVICE="$1" BENCH_SERVICES="$2" BENCH_HOSTS="$3" BENCH_STOP_AFTER="$n" \
            timeout 120 taskset -c "$CLIENT_CPUS" \
            wrk -t1 -c"$CONNECTIONS" -d100s -s "$BENCH_DIR/heartbeat.lua" "$REG_URL" >/dev/null \
            || die "loading $1 failed"
        [ "$(hosts_of "$1")" -eq "$n" ] && return 0
        log "$1: $(hosts_of "$1") of $n hosts after load $attempt, loading again"
    done
    die "could not register $n hosts for $1"
}

# ---------------------------------------------------------------------------------------------
if [ -z "${BENCH_SKIP_BUILD:-}" ]; then
    log "building release"
    (cd "$ROOT" && cargo build --release --bin discovery) >&2
fi

log "pinning: servers on CPU $SERVER_CPUS ($WORKERS worker(s)), wrk on CPU $CLIENT_CPUS; wrk -t$THREADS -c$CONNECTIONS -d$DURATION"
start_registry main
start_nginx
log "registry at $REG_URL (pid $REG_PID), nginx at $NGINX_URL (pid $NGINX_PID)"

declare -A GET_RPS GET_P99 NGX_RPS NGX_P99 BODY_BYTES
[[ "$PARTS" == *" get "* ]] || SIZES=()
for n in "${SIZES[@]}"; do
    svc="get-bench-$n"
    load_hosts "$svc" 1 "$n"
    curl -fsS "$REG_URL/v1/registration/$svc" -o "$WORK/nginx/www/$svc"
    got="$(grep -o '"ip_address"' "$WORK/nginx/www/$svc" | wc -l)"
    [ "$got" -eq "$n" ] || die "$svc holds $got hosts, expected $n"
    BODY_BYTES[$n]="$(stat -c %s "$WORK/nginx/www/$svc")"
    cmp -s "$WORK/nginx/www/$svc" <(curl -fsS "$NGINX_URL/$svc") || die "nginx serves other bytes for $svc"

    log "GET $n hosts (${BODY_BYTES[$n]} bytes): registry"
    run_wrk "$WARMUP" -s "$BENCH_DIR/report.lua" "$REG_URL/v1/registration/$svc" >/dev/null
    line="$(run_wrk "$DURATION" -s "$BENCH_DIR/report.lua" "$REG_URL/v1/registration/$svc")"
    [ "$(field failures "$line")" -eq 0 ] || die "registry GET failures: $line"
    cmp -s "$WORK/nginx/www/$svc" <(curl -fsS "$REG_URL/v1/registration/$svc") \
        || die "the registry's body for $svc changed during the run"
    GET_RPS[$n]="$(field rps "$line")"
    GET_P99[$n]="$(field p99_us "$line")"

    log "GET $n hosts (${BODY_BYTES[$n]} bytes): nginx"
    run_wrk "$WARMUP" -s "$BENCH_DIR/report.lua" "$NGINX_URL/$svc" >/dev/null
    line="$(run_wrk "$DURATION" -s "$BENCH_DIR/report.lua" "$NGINX_URL/$svc")"
    [ "$(field failures "$line")" -eq 0 ] || die "nginx GET failures: $line"
    NGX_RPS[$n]="$(field rps "$line")"
    NGX_P99[$n]="$(field p99_us "$line")"
done

if [[ "$PARTS" == *" heartbeat "* ]]; then
log "heartbeats over 1000 hosts"
export BENCH_SERVICE=heartbeat-bench BENCH_SERVICES=1 BENCH_HOSTS=1000 BENCH_STOP_AFTER=0
run_wrk "$WARMUP" -s "$BENCH_DIR/heartbeat.lua" "$REG_URL" >/dev/null
line="$(run_wrk "$DURATION" -s "$BENCH_DIR/heartbeat.lua" "$REG_URL")"
unset BENCH_SERVICE BENCH_SERVICES BENCH_HOSTS BENCH_STOP_AFTER
[ "$(field failures "$line")" -eq 0 ] || die "heartbeat failures: $line"
HB_RPS="$(field rps "$line")"
HB_P99="$(field p99_us "$line")"
[ "$(hosts_of heartbeat-bench)" -eq 1000 ] || die "heartbeat-bench does not hold 1000 hosts"
fi

kill "$NGINX_PID"
stop_registry

if [[ "$PARTS" == *" rss "* ]]; then
log "RSS: fresh registry, $RSS_SERVICES services x $RSS_HOSTS_PER_SERVICE hosts"
start_registry rss
sleep 1
RSS_BASE="$(rss_kib "$REG_PID")"
load_hosts rss-bench "$RSS_SERVICES" "$RSS_HOSTS_PER_SERVICE"
RSS_TOTAL=$((RSS_SERVICES * RSS_HOSTS_PER_SERVICE))
sleep 1
RSS_LOADED="$(rss_kib "$REG_PID")"
for ((s = 0; s < RSS_SERVICES; s++)); do
    curl -fsS -o /dev/null "$REG_URL/v1/registration/$(printf 'rss-bench-%03d' "$s")"
done
sleep 1
RSS_VIEWS="$(rss_kib "$REG_PID")"
stop_registry
fi

# ---------------------------------------------------------------------------------------------
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else printf "n/a" }'; }
per_host() { awk -v a="$1" -v b="$2" -v n="$3" 'BEGIN { printf "%.0f", (a - b) * 1024 / n }'; }
ms() { awk -v us="$1" 'BEGIN { printf "%.2f", us / 1000 }'; }

echo
echo "### discovery single-node benchmark"
echo
echo "$(nproc) CPUs ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)); servers pinned to CPU $SERVER_CPUS with $WORKERS worker(s), wrk pinned to CPU $CLIENT_CPUS; wrk -t$THREADS -c$CONNECTIONS -d$DURATION after a $WARMUP warm-up."
if [ "${#SIZES[@]}" -gt 0 ]; then
echo
echo "| GET /v1/registration/{svc} | body bytes | discovery req/s | discovery p99 ms | nginx req/s | nginx p99 ms | discovery / nginx |"
echo "|---|---:|---:|---:|---:|---:|---:|"
for n in "${SIZES[@]}"; do
    echo "| $n hosts | ${BODY_BYTES[$n]} | ${GET_RPS[$n]} | $(ms "${GET_P99[$n]}") | ${NGX_RPS[$n]} | $(ms "${NGX_P99[$n]}") | $(ratio "${GET_RPS[$n]}" "${NGX_RPS[$n]}") |"
done
fi
if [ -n "${HB_RPS:-}" ]; then
echo
echo "| heartbeats (form POST, 1000 hosts) | req/s | p99 ms | / GET of 10 hosts |"
echo "|---|---:|---:|---:|"
echo "| discovery | $HB_RPS | $(ms "$HB_P99") | $(ratio "$HB_RPS" "${GET_RPS[10]:-0}") |"
fi
if [ -n "${RSS_VIEWS:-}" ]; then
echo
echo "| memory, $RSS_TOTAL hosts ($RSS_SERVICES services) | VmRSS KiB | bytes per host |"
echo "|---|---:|---:|"
echo "| after startup | $RSS_BASE | |"
echo "| hosts registered | $RSS_LOADED | $(per_host "$RSS_LOADED" "$RSS_BASE" "$RSS_TOTAL") |"
echo "| every service read once (prepared bodies) | $RSS_VIEWS | $(per_host "$RSS_VIEWS" "$RSS_BASE" "$RSS_TOTAL") |"
fi
