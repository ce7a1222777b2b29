#!/usr/bin/env bash
# Builds the graunt image: a statically linked binary (glibc, crt-static)
# copied onto `scratch`. Usage: deploy/build-image.sh [TAG]   (default graunt:latest)
set -euo pipefail
cd "$(dirname "$0")/.."
tag="${1:-graunt:latest}"
target=x86_64-unknown-linux-gnu
RUSTFLAGS='-C target-feature=+crt-static' cargo build --release -p graunt --target "$target"
ctx=target/docker-context
rm -rf "$ctx"
mkdir -p "$ctx/data"
cp "target/$target/release/graunt" "$ctx/graunt"
# The release profile keeps line tables for profiling; the image need not.
strip "$ctx/graunt" 2>/dev/null || true
cp deploy/Dockerfile "$ctx/Dockerfile"
docker build -q -t "$tag" "$ctx" >/dev/null
echo "$tag"
