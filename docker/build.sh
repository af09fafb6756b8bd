#!/usr/bin/env bash
# Builds the image `discovery:latest` (or $IMAGE) from this checkout only: a static release
# binary (glibc, static-pie) copied into an empty image. No base image is pulled.
set -euo pipefail
cd "$(dirname "$0")/.."
IMAGE=${IMAGE:-discovery:latest}
TARGET=x86_64-unknown-linux-gnu

RUSTFLAGS="-C target-feature=+crt-static" \
    cargo build --release --locked --bin discovery --target "$TARGET"

context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
cp "${CARGO_TARGET_DIR:-target}/$TARGET/release/discovery" "$context/discovery"
cp docker/Dockerfile "$context/Dockerfile"
docker build --quiet --tag "$IMAGE" "$context" >/dev/null
echo "built $IMAGE ($(du -h "$context/discovery" | cut -f1) binary)"
