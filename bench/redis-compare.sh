#!/usr/bin/env bash
# The Redis figures of postal-bench, side by side from one run (see bench/README.md):
#   1. redis-benchmark -t set,get -n 1000000 -P 16 -c 50 against samples/kv-server and against redis-server;
#   2. postal-bench conn_manager (50 tasks, SET then GET, through one connection manager) against that same
#      redis-server, beside redis-benchmark -t set,get -P 16 -c 50 against it (from step 1);
#   3. the same redis-benchmark against node1 of a 3-node samples/cluster (two thirds of its keys live on the
#      other nodes and are forwarded there), beside redis-server from step 1.
# Both servers listen on 127.0.0.1 at free ports and are stopped afterwards.
# usage: bench/redis-compare.sh [BUILD_DIR]      (default: build; needs sample-kv-server and postal-bench)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$root/build}
kv_server="$build/samples/kv-server/sample-kv-server"
bench="$build/bench/postal-bench"
cluster_node="$build/samples/cluster/sample-cluster"
for program in "$kv_server" "$bench" "$cluster_node"; do
  [[ -x $program ]] || { echo "redis-compare: $program is missing: build the project first" >&2; exit 2; }
done

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' 2>/dev/null ||
              shuf -i 20000-60000 -n 1; }
wait_for_port() {  # until something accepts on 127.0.0.1:$1 (bounded: 10 s)
  for _ in $(seq 1000); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.01
  done
  echo "redis-compare: nothing listens on port $1" >&2
  return 1
}
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

redis_port=$(free_port)
redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no --daemonize no --logfile /dev/null &
pids+=($!)
kv_port=$(free_port)
"$kv_server" --port "$kv_port" >/dev/null &
pids+=($!)
wait_for_port "$redis_port"
wait_for_port "$kv_port"

# requests per second of one redis-benchmark test (SET or GET) from its -q output
rps() { tr '\r' '\n' | sed -n "s/^$1: \([0-9.]*\) requests per second.*/\1/p" | tail -n1; }
run_redis_benchmark() {
  local output
  output=$(timeout 300 redis-benchmark -p "$1" -t set,get -n 1000000 -P 16 -c 50 -q 2>/dev/null)
  echo "$(rps SET <<<"$output") $(rps GET <<<"$output")"
}
# A 3-node sample cluster on free ports; node1 is the one redis-benchmark talks to.
cluster_dir=$(mktemp -d /tmp/postal-redis-compare.XXXXXX)
echo '{"greeting": "benchmark"}' >"$cluster_dir/cluster.json"
cluster_ports=() cluster_kv=()
for k in 1 2 3; do cluster_ports+=("$(free_port)"); cluster_kv+=("$(free_port)"); done
cookie="compare-$RANDOM$RANDOM"
seeds="127.0.0.1:${cluster_ports[0]},127.0.0.1:${cluster_ports[1]},127.0.0.1:${cluster_ports[2]}"
for k in 1 2 3; do
  config=(--config-from node1)
  ((k == 1)) && config=(--config "$cluster_dir/cluster.json")
  "$cluster_node" --name "node$k" --nodes 3 --port "${cluster_ports[k - 1]}" --kv-port "${cluster_kv[k - 1]}" \
    --seeds "$seeds" --cookie "$cookie" "${config[@]}" >"$cluster_dir/node$k.log" 2>&1 &
  pids+=($!)
  wait_for_port "${cluster_kv[k - 1]}" || { cat "$cluster_dir/node$k.log" >&2; exit 1; }
done
until redis-cli -p "${cluster_kv[0]}" INFO 2>/dev/null | grep -q '^members_up:3'; do sleep 0.05; done

read -r kv_set kv_get < <(run_redis_benchmark "$kv_port")
read -r cluster_set cluster_get < <(run_redis_benchmark "${cluster_kv[0]}")
rm -rf "$cluster_dir"
read -r redis_set redis_get < <(run_redis_benchmark "$redis_port")
manager=$(REDIS_PORT=$redis_port "$bench" conn_manager 3 | sed -n 's/^conn_manager MEDIAN rate=\([0-9.]*\)\/s.*/\1/p')
manager_default=$(REDIS_PORT=$redis_port "$bench" conn_manager_default 3 |
                  sed -n 's/^conn_manager_default MEDIAN rate=\([0-9.]*\)\/s.*/\1/p')

awk -v kv_set="$kv_set" -v kv_get="$kv_get" -v r_set="$redis_set" -v r_get="$redis_get" \
    -v c_set="$cluster_set" -v c_get="$cluster_get" -v m="$manager" -v md="$manager_default" 'BEGIN {
  printf "%-44s %12s %12s %7s\n", "redis-benchmark -P 16 -c 50", "kv-server", "redis-server", "ratio"
  printf "%-44s %12.0f %12.0f %7.2f\n", "SET requests/s", kv_set, r_set, kv_set / r_set
  printf "%-44s %12.0f %12.0f %7.2f\n", "GET requests/s", kv_get, r_get, kv_get / r_get
  printf "\n%-44s %12s %12s %7s\n", "redis-benchmark -P 16 -c 50", "cluster node", "redis-server", "ratio"
  printf "%-44s %12.0f %12.0f %7.2f\n", "SET requests/s (3 nodes, 2/3 forwarded)", c_set, r_set, c_set / r_set
  printf "%-44s %12.0f %12.0f %7.2f\n", "GET requests/s (3 nodes, 2/3 forwarded)", c_get, r_get, c_get / r_get
  both = (r_set + r_get) / 2
  printf "\n%-44s %12s %12s %7s\n", "against redis-server", "postal", "benchmark", "ratio"
  printf "%-44s %12.0f %12.0f %7.2f\n", "conn_manager (busy poll 200 us) ops/s", m, both, m / both
  printf "%-44s %12.0f %12.0f %7.2f\n", "conn_manager_default ops/s", md, both, md / both
  printf "(benchmark: redis-benchmark SET and GET, averaged)\n"
}'
