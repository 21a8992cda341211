#!/usr/bin/env bash
# Installs what postal needs, builds it, and runs a sample (default: the main sample).
# usage: scripts/run-sample.sh [sample-name] [arguments...]      e.g. scripts/run-sample.sh channels
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/setup.sh"
sample=${1:-channels}
shift || true
cmake -S "$root" -B "$root/build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$root/build" -j "${POSTAL_JOBS:-$(nproc)}" --target "sample-$sample"
exec "$root/build/samples/$sample/sample-$sample" "$@"
