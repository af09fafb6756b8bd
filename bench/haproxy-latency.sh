#!/usr/bin/env bash
# How long `discovery haproxy-sync` takes to turn a registry change into an HAProxy change:
# from `POST /v1/registration` answered until the server is in `show servers state`, and
# from `DELETE` of a host whose check fails until the server is gone. N samples (default 20).
# Needs haproxy and socat (Debian packages); runs everything on loopback in a temp folder and
# stops what it started. Not run by CI.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-20}
cargo build --quiet --bin discovery
BIN=target/debug/discovery
work=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

cat >"$work/cfg" <<CFG
global
    stats socket $work/admin.sock mode 600 level admin
defaults
    mode http
    timeout connect 1s
    timeout client 5s
    timeout server 5s
backend be
    balance roundrobin
    option httpchk GET /
CFG
haproxy -f "$work/cfg" >"$work/haproxy.log" 2>&1 &
pids+=($!)
"$BIN" serve --listen 127.0.0.1:0 >"$work/serve.out" 2>/dev/null &
pids+=($!)
until [ -S "$work/admin.sock" ] && grep -q '^listening on ' "$work/serve.out"; do sleep 0.05; done
URL=$(sed -n 's/^listening on //p' "$work/serve.out")
"$BIN" haproxy-sync --registry "$URL" --socket "$work/admin.sock" --backend web=be \
    --interval 5s --check-inter 200ms --fall 2 --rise 1 2>"$work/sync.log" &
pids+=($!)

q() { printf '%s\n' "$1" | socat stdio "UNIX-CONNECT:$work/admin.sock"; }
present() { q "show servers state be" | grep " d-127.0.0.1-$1 " >/dev/null; }
# An anchor host, so that no removal is a drastic shrink (1 to 0 is held back 60 s).
curl -sf -o /dev/null -d ip=127.0.0.1 -d port=19999 -d revision=r "$URL/v1/registration/web"
until present 19999; do sleep 0.05; done

adds=()
dels=()
for i in $(seq 1 "$N"); do
    port=$((20000 + i))
    t0=$(date +%s%N)
    curl -sf -o /dev/null -d ip=127.0.0.1 -d port=$port -d revision=r "$URL/v1/registration/web"
    until present $port; do :; done
    t1=$(date +%s%N)
    adds+=($(((t1 - t0) / 1000000)))
    curl -sf -o /dev/null -X DELETE "$URL/v1/registration/web/127.0.0.1?port=$port"
    while present $port; do :; done
    t2=$(date +%s%N)
    dels+=($(((t2 - t1) / 1000000)))
done
summary() {
    sort -n | awk -v what="$1" '{a[NR]=$1} END {print what ": median", a[int((NR+1)/2)], "ms, max", a[NR], "ms over", NR}'
}
printf '%s\n' "${adds[@]}" | summary "registration -> server present"
printf '%s\n' "${dels[@]}" | summary "delete of a host whose check fails -> server gone"
