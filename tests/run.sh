#!/usr/bin/env bash
# Every test of the project: README's test command. .ci/run installs the tools these need
# (haproxy, chromium, the Python packages) on a fresh machine, then runs this.
#
# Python tools come from $PATH (.ci/run puts its virtualenv first).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --workspace --all-targets
cargo test --workspace

# Checks against live servers with outside tools (the debug binary built above):
# Envoy's own message definitions, the dashboard in headless Chromium, and schemathesis
# fuzzing against api/openapi.yaml.
python3 -m pytest -q tests/envoy tests/browser
tests/schemathesis/run.sh

# The cluster as separate containers, whenever a Docker engine answers.
if docker info >/dev/null 2>&1; then
    docker/test.sh
else
    echo "docker/test.sh skipped: no Docker engine answers"
fi

echo "all test suites passed"
