#!/usr/bin/env bash
# Installs what postal needs, builds it, and runs a sample. With no argument: the main sample, the cluster
# tour (samples/cluster: three nodes of a distributed mini Redis on 127.0.0.1, driven with redis-cli).
# usage: scripts/run-sample.sh [--nodes N] [--keep-running]          the cluster tour
#        scripts/run-sample.sh SAMPLE [arguments...]                  another sample, e.g. channels
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/setup.sh"
sample=cluster
if (($#)) && [[ $1 != -* ]]; then
  sample=$1
  shift
fi
cmake -S "$root" -B "$root/build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
if [[ $sample == cluster ]]; then
  cmake --build "$root/build" -j "${POSTAL_JOBS:-$(nproc)}" --target sample-cluster sample-cluster-client
  exec "$root/samples/cluster/tour.sh" --bin "$root/build" "$@"
fi
cmake --build "$root/build" -j "${POSTAL_JOBS:-$(nproc)}" --target "sample-$sample"
exec "$root/build/samples/$sample/sample-$sample" "$@"
