#!/usr/bin/env bash
# Performs the Dockerfile's steps without a container engine: the build stage
# in a clean directory, then the run stage's layout in another, so a test can
# start the daemon exactly as the image would. Prints the run directory.
# Usage: docker/simulate-image.sh OUTDIR
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:?usage: simulate-image.sh OUTDIR}"
build="$out/build-stage"
run="$out/opt/qbd"
rm -rf "$build" "$run"
mkdir -p "$build" "$run"

# Build stage: the same COPY and RUN steps, in the same order.
cp "$repo/package.json" "$repo/package-lock.json" "$repo/binding.gyp" "$build/"
cp -r "$repo/native" "$build/native"
(cd "$build" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
cp "$repo/tsconfig.json" "$build/"
cp -r "$repo/src" "$repo/bench" "$repo/schema" "$build/"
(cd "$build" && npm run build --silent >/dev/null && npm prune --omit=dev --loglevel=error >/dev/null)

# Run stage: only production dependencies and the build.
cp "$build/package.json" "$run/"
cp -r "$build/node_modules" "$build/dist" "$build/schema" "$run/"
if [ -d "$build/build" ]; then cp -r "$build/build" "$run/build"; fi
cp -r "$repo/bin" "$run/bin"
echo "$run"
