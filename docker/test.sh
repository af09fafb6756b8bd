#!/usr/bin/env bash
# The 3-node cluster as separate hosts: builds the image, starts docker/compose.yaml, writes
# through different nodes, cuts one node off the cluster network while writes go on on both
# sides, heals it, and checks that every node converges with nothing lost and nothing
# resurrected; then kills a node and checks that it bootstraps before it reports ready.
# Removes every container, network and image it made, also when it fails.
#
# With --tls, the same on the TLS profile (docker/compose.tls.yaml): certificates made here
# with openssl, HTTPS on every node, mutual TLS between them, every check over HTTPS.
set -euo pipefail
cd "$(dirname "$0")/.."

TLS=0
[ "${1:-}" = --tls ] && TLS=1

RUN=discovery-test-$$
[ $TLS = 1 ] && RUN=discovery-tls-test-$$
export IMAGE=discovery:$RUN
export PORT_1=0 PORT_2=0 PORT_3=0   # let Docker pick free loopback ports
FILES=(-f docker/compose.yaml)
SCHEME=http
CURL=(curl)
CERTS=""
if [ $TLS = 1 ]; then
    CERTS=$(mktemp -d)
    export CERTS
    FILES+=(-f docker/compose.tls.yaml)
    SCHEME=https
    CURL=(curl --cacert "$CERTS/ca.pem")
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
        -keyout "$CERTS/ca.key" -out "$CERTS/ca.pem" -subj "/CN=discovery test CA" 2>/dev/null
    for node in registry-1 registry-2 registry-3; do
        openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
            -keyout "$CERTS/$node.key" -out "$CERTS/$node.csr" -subj "/CN=$node" 2>/dev/null
        openssl x509 -req -in "$CERTS/$node.csr" -CA "$CERTS/ca.pem" -CAkey "$CERTS/ca.key" \
            -CAcreateserial -days 2 -out "$CERTS/$node.pem" -extfile <(printf '%s\n' \
            "subjectAltName=DNS:$node,DNS:localhost,IP:127.0.0.1" \
            "extendedKeyUsage=serverAuth,clientAuth") 2>/dev/null
    done
    # The container runs as nobody: it must read the keys (test keys, gone after the run).
    chmod 755 "$CERTS"
    chmod 644 "$CERTS"/*
fi
COMPOSE=(docker compose -p "$RUN" "${FILES[@]}")
if ! docker compose version >/dev/null 2>&1; then
    COMPOSE=(docker-compose -p "$RUN" "${FILES[@]}")
fi

expected=$(mktemp)
cleanup() {
    status=$?
    rm -f "$expected"
    [ -n "$CERTS" ] && rm -rf "$CERTS"
    if [ $status -ne 0 ]; then
        echo "--- FAILED; last logs:" >&2
        "${COMPOSE[@]}" logs --tail 30 >&2 || true
    fi
    "${COMPOSE[@]}" down --volumes --remove-orphans --timeout 5 >/dev/null 2>&1 || true
    docker image rm -f "$IMAGE" >/dev/null 2>&1 || true
    exit $status
}
trap cleanup EXIT

step() { echo "== $*"; }

# wait_for SECONDS DESCRIPTION COMMAND...: retries COMMAND every 0.2 s until it succeeds.
wait_for() {
    local deadline=$((SECONDS + $1)) what=$2
    shift 2
    until "$@" >/dev/null 2>&1; do
        if [ $SECONDS -ge $deadline ]; then
            echo "timed out waiting for $what" >&2
            return 1
        fi
        sleep 0.2
    done
}

step "building $IMAGE"
IMAGE=$IMAGE docker/build.sh >/dev/null

step "starting the cluster"
"${COMPOSE[@]}" up -d --quiet-pull 2>/dev/null || "${COMPOSE[@]}" up -d
url() { echo "$SCHEME://$("${COMPOSE[@]}" port "registry-$1" 8080 | tail -n1)"; }
N1=$(url 1) N2=$(url 2) N3=$(url 3)
NODES=("$N1" "$N2" "$N3")
container() { "${COMPOSE[@]}" ps -q "registry-$1"; }
NET="${RUN}_cluster"

ready() { [ "$("${CURL[@]}" -s -o /dev/null -w '%{http_code}' "$1/readyz")" = 200 ]; }
for n in "${NODES[@]}"; do wait_for 60 "$n ready" ready "$n"; done

register() { # NODE SERVICE IP
    "${CURL[@]}" -sf -d "ip=$3" -d port=8080 -d revision=r1 -d ttl=600 "$1/v1/registration/$2" >/dev/null
}
deregister() { "${CURL[@]}" -sf -X DELETE "$1/v1/registration/$2/$3" >/dev/null; }

# The sorted "service ip:port" lines a node serves for the given services.
state() { # NODE SERVICE...
    local node=$1
    shift
    for s in "$@"; do
        "${CURL[@]}" -sf "$node/v1/registration/$s"
    done | python3 -c '
import json, sys
dec = json.JSONDecoder()
text = sys.stdin.read()
i, rows = 0, []
while i < len(text):
    obj, i = dec.raw_decode(text, i)
    rows += ["%s %s:%s" % (h["service"], h["ip_address"], h["port"]) for h in obj["hosts"]]
    while i < len(text) and text[i].isspace():
        i += 1
print("\n".join(sorted(rows)))'
}

# converged EXPECTED_FILE SERVICE...: every node serves exactly the expected hosts.
converged() {
    local expected=$1
    shift
    for n in "${NODES[@]}"; do
        diff -q <(state "$n" "$@") "$expected" >/dev/null || return 1
    done
}

SERVICES=(alpha beta gamma)

step "writes through every node"
for i in 1 2 3; do
    register "$N1" alpha "10.1.0.$i"
    register "$N2" beta "10.2.0.$i"
    register "$N3" gamma "10.3.0.$i"
done
printf '%s\n' alpha\ 10.1.0.{1,2,3}:8080 beta\ 10.2.0.{1,2,3}:8080 gamma\ 10.3.0.{1,2,3}:8080 | sort >"$expected"
wait_for 30 "all nodes to converge" converged "$expected" "${SERVICES[@]}"

step "the demo agent's heartbeats reach every node"
# (grep reads all its input: with -q it could quit early and fail the pipeline on SIGPIPE.)
has_demo() { for n in "${NODES[@]}"; do state "$n" demo | grep ':9000$' >/dev/null || return 1; done; }
wait_for 60 "the agent's host on all nodes" has_demo

if [ $TLS = 1 ]; then
    # Each node advertises its name (the one its certificate holds): no node learns another
    # by its container IP, which would fail the name check and linger as a suspect peer.
    step "every node lists exactly the two others, by name, alive"
    peers_by_name() { # NODE_URL N
        "${CURL[@]}" -sf "$1/v1/peers" | python3 -c '
import json, sys
me = int(sys.argv[1])
rows = sorted((p["address"], p["state"]) for p in json.load(sys.stdin)["peers"])
want = [("https://registry-%d:8080" % i, "alive") for i in (1, 2, 3) if i != me]
sys.exit(rows != want)' "$2"
    }
    for i in 1 2 3; do
        wait_for 30 "registry-$i to list its peers by name" peers_by_name "${NODES[$((i - 1))]}" "$i"
    done
fi

step "partition: registry-3 cut off the cluster network"
docker network disconnect "$NET" "$(container 3)"
# Docker re-maps an ephemeral published port when a container's networks change.
N3=$(url 3)
NODES=("$N1" "$N2" "$N3")
# Writes go on on both sides of the partition.
register "$N1" alpha 10.1.0.10
register "$N2" beta 10.2.0.10
deregister "$N1" alpha 10.1.0.1
register "$N3" gamma 10.3.0.10
deregister "$N3" gamma 10.3.0.1
# The isolated node still serves what it had (never an empty answer) plus its own writes.
state "$N3" gamma | grep '10.3.0.10:8080' >/dev/null
state "$N3" alpha | grep '10.1.0.1:8080' >/dev/null

step "heal"
docker network connect --alias registry "$NET" "$(container 3)"
N3=$(url 3)
NODES=("$N1" "$N2" "$N3")
printf '%s\n' alpha\ 10.1.0.{2,3,10}:8080 beta\ 10.2.0.{1,2,3,10}:8080 gamma\ 10.3.0.{2,3,10}:8080 | sort >"$expected"
wait_for 60 "convergence after the heal" converged "$expected" "${SERVICES[@]}"
# Nothing resurrected: the deleted hosts stay deleted a while later.
sleep 3
converged "$expected" "${SERVICES[@]}"

step "restart: registry-2 killed and started again bootstraps before it is ready"
docker kill "$(container 2)" >/dev/null
docker start "$(container 2)" >/dev/null
N2=$(url 2)
NODES=("$N1" "$N2" "$N3")
wait_for 60 "registry-2 to answer" "${CURL[@]}" -s -o /dev/null "$N2/healthz"
# Poll readiness; the first time it is ready, its state must already be complete.
deadline=$((SECONDS + 60))
until ready "$N2"; do
    [ $SECONDS -lt $deadline ] || { echo "registry-2 never became ready" >&2; exit 1; }
    code=$("${CURL[@]}" -s -o /dev/null -w '%{http_code}' "$N2/v1/registration/alpha")
    [ "$code" = 503 ] || [ "$code" = 000 ] || { echo "not ready but answered $code" >&2; exit 1; }
    sleep 0.1
done
diff <(state "$N2" "${SERVICES[@]}") "$expected"

step "all checks passed"
