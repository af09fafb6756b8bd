#!/usr/bin/env bash
# Every test of the project. README's test command; .ci/run installs the tools, then runs this.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --workspace --all-targets
cargo test --workspace

echo "all test suites passed"
