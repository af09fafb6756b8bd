#!/usr/bin/env bash
# TLS benchmark (issue 11, README "TLS" figures): GET of a service of 10 hosts with keep-alive,
# side by side: `discovery serve` over plain HTTP, the same over TLS, and nginx serving the
# identical body bytes over TLS with the same certificate and key. Not run by CI.
#
# Certificates are made here with openssl (an ECDSA P-256 CA and server certificate) and
# removed with the run. Servers are pinned to BENCH_SERVER_CPUS, wrk to BENCH_CLIENT_CPUS.
#
# Usage: bench/tls.sh  (needs cargo, wrk, nginx, openssl, curl, taskset)
# Knobs: BENCH_DURATION (10s), BENCH_CONNECTIONS (32), BENCH_SERVER_CPUS (0),
#   BENCH_CLIENT_CPUS (1), BENCH_SKIP_BUILD (unset), BENCH_BINARY (target/release/discovery).
set -euo pipefail

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$BENCH_DIR")"
DURATION="${BENCH_DURATION:-10s}"
CONNECTIONS="${BENCH_CONNECTIONS:-32}"
SERVER_CPUS="${BENCH_SERVER_CPUS:-0}"
CLIENT_CPUS="${BENCH_CLIENT_CPUS:-1}"
BINARY="${BENCH_BINARY:-${CARGO_TARGET_DIR:-$ROOT/target}/release/discovery}"
WORKERS="$(awk -F, '{print NF}' <<<"$SERVER_CPUS")"
HOSTS=10

WORK="$(mktemp -d /tmp/discovery-tls-bench.XXXXXX)"
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

log() { echo "bench: $*" >&2; }
die() { log "$*"; exit 1; }
for tool in cargo wrk nginx openssl curl taskset; do
    command -v "$tool" >/dev/null || die "missing $tool"
done

wait_for() {
    local deadline=$((SECONDS + $1))
    shift
    until "$@" >/dev/null 2>&1; do
        [ "$SECONDS" -lt "$deadline" ] || return 1
        sleep 0.05
    done
}
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

if [ -z "${BENCH_SKIP_BUILD:-}" ]; then
    log "building release"
    (cd "$ROOT" && cargo build --release --bin discovery) >&2
fi

log "certificates"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
    -keyout "$WORK/ca.key" -out "$WORK/ca.pem" -subj "/CN=bench CA" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$WORK/node.key" -out "$WORK/node.csr" -subj "/CN=localhost" 2>/dev/null
openssl x509 -req -in "$WORK/node.csr" -CA "$WORK/ca.pem" -CAkey "$WORK/ca.key" \
    -CAcreateserial -days 1 -out "$WORK/node.pem" \
    -extfile <(printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth') 2>/dev/null

# start_registry NAME ARGS...: sets URL to the node's base URL.
start_registry() {
    local name=$1 out="$WORK/$1.out"
    shift
    taskset -c "$SERVER_CPUS" env TOKIO_WORKER_THREADS="$WORKERS" \
        "$BINARY" serve --listen 127.0.0.1:0 --env bench "$@" >"$out" 2>"$WORK/$name.log" &
    PIDS+=("$!")
    PID=$!
    wait_for 10 grep -q '^listening on ' "$out" || die "$name did not start: $(cat "$WORK/$name.log")"
    URL="$(sed -n 's/^listening on //p' "$out" | head -n1)"
}

CURL=(curl -fsS --cacert "$WORK/ca.pem")
start_registry plain
PLAIN_URL=$URL PLAIN_PID=$PID
start_registry tls --tls-cert "$WORK/node.pem" --tls-key "$WORK/node.key"
TLS_URL=$URL TLS_PID=$PID
for url in "$PLAIN_URL" "$TLS_URL"; do
    wait_for 10 "${CURL[@]}" "$url/readyz" || die "$url not ready"
    for i in $(seq 1 $HOSTS); do
        "${CURL[@]}" -d "ip=10.0.0.$i" -d port=8080 -d revision=r1 -d ttl=3600 \
            "$url/v1/registration/web" >/dev/null
    done
done

# nginx: the TLS node's bytes as a static file, over TLS with the same certificate. (The
# plain node's body differs only in its check-in times.)
mkdir -p "$WORK/nginx/www/v1/registration" "$WORK/nginx/tmp" "$WORK/nginx/logs"
"${CURL[@]}" "$TLS_URL/v1/registration/web" -o "$WORK/nginx/www/v1/registration/web"
chmod -R a+rX "$WORK"
NGINX_PORT="$(free_port)"
user_line=""
[ "$(id -u)" -eq 0 ] && user_line="user $(id -un);"
cat >"$WORK/nginx/nginx.conf" <<CONF
$user_line
worker_processes $WORKERS;
daemon off;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/logs/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    default_type application/json;
    sendfile on;
    keepalive_requests 100000000;
    client_body_temp_path $WORK/nginx/tmp/body;
    proxy_temp_path $WORK/nginx/tmp/proxy;
    fastcgi_temp_path $WORK/nginx/tmp/fastcgi;
    uwsgi_temp_path $WORK/nginx/tmp/uwsgi;
    scgi_temp_path $WORK/nginx/tmp/scgi;
    server {
        listen 127.0.0.1:$NGINX_PORT ssl;
        ssl_certificate $WORK/node.pem;
        ssl_certificate_key $WORK/node.key;
        ssl_protocols TLSv1.2 TLSv1.3;
        root $WORK/nginx/www;
    }
}
CONF
taskset -c "$SERVER_CPUS" nginx -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" \
    2>"$WORK/nginx/logs/stderr.log" &
PIDS+=("$!")
NGINX_PID=$!
NGINX_URL="https://localhost:$NGINX_PORT"
wait_for 10 "${CURL[@]}" "$NGINX_URL/v1/registration/web" \
    || die "nginx did not start: $(cat "$WORK/nginx/logs/"*)"
cmp -s "$WORK/nginx/www/v1/registration/web" <("${CURL[@]}" "$NGINX_URL/v1/registration/web") \
    || die "nginx serves other bytes"
BYTES="$(stat -c %s "$WORK/nginx/www/v1/registration/web")"

# CPU time (user + system, in clock ticks) of a process and its children's threads: the
# server's cost per request, which a loaded machine changes far less than requests/s.
cpu_ticks() { # PID...
    local pid total=0
    for pid in "$@"; do
        total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat")))
    done
    echo "$total"
}

run() { # NAME URL PID...
    local line name=$1 url=$2 before after requests
    shift 2
    wrk -t1 -c"$CONNECTIONS" -d1s "$url/v1/registration/web" >/dev/null 2>&1 || true  # warm-up
    before=$(cpu_ticks "$@")
    line="$(timeout $(( ${DURATION%s} + 30 )) taskset -c "$CLIENT_CPUS" \
        wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --latency -s "$BENCH_DIR/report.lua" \
        "$url/v1/registration/web" | grep '^BENCH ')"
    after=$(cpu_ticks "$@")
    requests="$(sed -n 's/.* requests=\([0-9]*\).*/\1/p' <<<"$line")"
    printf '| %s | %s | %s | %s | %s | %s |\n' "$name" \
        "$(sed -n 's/.* rps=\([0-9]*\).*/\1/p' <<<"$line")" \
        "$(sed -n 's/.* p50_us=\([0-9]*\).*/\1/p' <<<"$line")" \
        "$(sed -n 's/.* p99_us=\([0-9]*\).*/\1/p' <<<"$line")" \
        "$(awk -v t=$((after - before)) -v n="$requests" -v hz="$(getconf CLK_TCK)" \
            'BEGIN { printf "%.1f", t / hz * 1e6 / n }')" \
        "$(sed -n 's/.* failures=\([0-9]*\).*/\1/p' <<<"$line")"
}

log "GET of $HOSTS hosts ($BYTES bytes), wrk -t1 -c$CONNECTIONS -d$DURATION keep-alive; servers on CPU $SERVER_CPUS, wrk on CPU $CLIENT_CPUS"
echo "| server | requests/s | p50 µs | p99 µs | server CPU µs/request | failures |"
echo "|---|---|---|---|---|---|"
run "discovery, plain HTTP" "$PLAIN_URL" "$PLAIN_PID"
run "discovery, TLS (rustls, ring)" "$TLS_URL" "$TLS_PID"
# nginx's workers are the master's children.
run "nginx 1.22, TLS (OpenSSL), same bytes" "$NGINX_URL" $(pgrep -P "$NGINX_PID")
