#!/usr/bin/env bash
# The cluster tour: starts a local cluster of sample-cluster nodes (each a kv-server on its own port, the key
# space split over the nodes), drives it with the real redis-cli and with postal's Redis connection manager
# (sample-cluster-client), prints what it saw, stops every process it started, and exits 0 only when every
# step held. Ctrl-C at any point stops every process it started.
#   samples/cluster/tour.sh --bin BUILD_DIR [--nodes N] [--base-port P] [--keep-running]
# Node k listens for redis-cli on P+100+k and for its peers on P+k (P = 7400 by default). node1 holds the
# configuration file; the tour kills and restarts the last node.
set -uo pipefail

bin=""
nodes=3
base=7400
keep_running=0
while (($#)); do
  case "$1" in
    --bin) bin=$2; shift 2 ;;
    --nodes) nodes=$2; shift 2 ;;
    --base-port) base=$2; shift 2 ;;
    --keep-running) keep_running=1; shift ;;
    *) echo "tour: unknown option $1" >&2; exit 2 ;;
  esac
done
if [[ -z "$bin" || ! -x "$bin/samples/cluster/sample-cluster" ]]; then
  echo "tour: --bin must name a build directory with samples/cluster/sample-cluster" >&2
  exit 2
fi
if ! [[ "$nodes" =~ ^[0-9]+$ ]] || ((nodes < 2 || nodes > 9)); then
  echo "tour: --nodes takes 2 to 9" >&2
  exit 2
fi
command -v redis-cli >/dev/null || { echo "tour: redis-cli is missing (scripts/setup.sh installs it)" >&2; exit 2; }

node_bin="$bin/samples/cluster/sample-cluster"
client_bin="$bin/samples/cluster/sample-cluster-client"
work=$(mktemp -d /tmp/postal-cluster-tour.XXXXXX)
cookie="tour-$RANDOM$RANDOM"
seeds=""
for ((k = 1; k <= nodes; k++)); do seeds+="${seeds:+,}127.0.0.1:$((base + k))"; done
declare -A pid
helpers=()

# Every process this script started is stopped, whatever way it ends.
stop_all() {
  local p
  for p in "${helpers[@]}" "${pid[@]}"; do kill -TERM "$p" 2>/dev/null; done
  for p in "${helpers[@]}" "${pid[@]}"; do
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null
    wait "$p" 2>/dev/null
  done
  rm -rf "$work"
}
trap stop_all EXIT
trap 'echo; echo "tour: interrupted, stopping every node"; exit 130' INT TERM

failures=0
report() {  # report ok|FAILED "what"
  if [[ $1 == ok ]]; then printf '  ok      %s\n' "$2"; else printf '  FAILED  %s\n' "$2"; failures=$((failures + 1)); fi
}
now_ms() { echo $(($(date +%s%N) / 1000000)); }
kv_port() { echo $((base + 100 + $1)); }
cli() { local k=$1; shift; redis-cli -p "$(kv_port "$k")" "$@" 2>&1; }
info_field() { cli "$1" INFO | tr -d '\r' | sed -n "s/^$2://p"; }  # info_field k name: a line of node k's INFO
# wait_until SECONDS command...: runs the command until it succeeds, for at most SECONDS.
wait_until() {
  local deadline=$(($(now_ms) + $1 * 1000)); shift
  until "$@"; do
    (($(now_ms) > deadline)) && return 1
    sleep 0.05
  done
}
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

start_node() {  # start_node k
  local k=$1 config=(--config-from node1)
  ((k == 1)) && config=(--config "$work/cluster.json")
  "$node_bin" --name "node$k" --nodes "$nodes" --port $((base + k)) --kv-port "$(kv_port "$k")" --seeds "$seeds" \
    --cookie "$cookie" --heartbeat-ms 100 --timeout-ms 1000 "${config[@]}" >"$work/node$k.log" 2>&1 &
  pid[$k]=$!
  if ! wait_until 20 grep -qs '^ready$' "$work/node$k.log"; then
    echo "tour: node$k did not start:" >&2
    sed 's/^/    /' "$work/node$k.log" >&2
    exit 1
  fi
}
members_up_everywhere() {  # members_up_everywhere N: every running node's INFO says N members are up
  local k
  for ((k = 1; k <= nodes; k++)); do
    [[ -z "${pid[$k]:-}" ]] && continue
    [[ $(info_field "$k" members_up) == "$1" ]] || return 1
  done
}

for ((k = 1; k <= nodes; k++)); do
  for port in $((base + k)) "$(kv_port "$k")"; do
    port_free "$port" || { echo "tour: port $port is in use (choose others with --base-port)" >&2; exit 1; }
  done
done

echo "postal cluster tour: $nodes nodes on 127.0.0.1"
printf '{"greeting": "hello from node1'"'"'s file"}\n' >"$work/cluster.json"
started=$(now_ms)
for ((k = 1; k <= nodes; k++)); do start_node "$k"; done
if wait_until 10 members_up_everywhere "$nodes"; then
  report ok "$nodes nodes started and joined in $(($(now_ms) - started)) ms (redis-cli ports $(kv_port 1)..$(kv_port "$nodes"))"
else
  report FAILED "the nodes did not all see each other"
fi

# 1. Writes through one node, reads through another: each key lives on the node its hash names.
keys=40
for ((i = 0; i < keys; i++)); do cli 1 SET "key:$i" "value-$i" >/dev/null; done
same=0
for ((i = 0; i < keys; i++)); do [[ $(cli 2 GET "key:$i") == "value-$i" ]] && same=$((same + 1)); done
if ((same == keys)); then
  report ok "redis-cli: $keys keys SET through node1, all $keys read back through node2"
else
  report FAILED "redis-cli: $keys keys SET through node1, only $same read back through node2"
fi

# 2. The connection manager: a postal program writes through node2 and reads through the last node.
if out=$("$client_bin" --write-port "$(kv_port 2)" --read-port "$(kv_port "$nodes")" --keys 1000 2>&1); then
  report ok "$out"
else
  report FAILED "$out"
fi

# 3. Pub/sub across nodes: a subscriber on the last node hears a PUBLISH sent to node1.
redis-cli -p "$(kv_port "$nodes")" SUBSCRIBE news >"$work/subscriber.txt" 2>&1 &
helpers+=($!)
if wait_until 5 grep -qs '^subscribe$' "$work/subscriber.txt"; then
  published_at=$(now_ms)
  cli 1 PUBLISH news "the cluster says hello" >/dev/null
  if wait_until 5 grep -q '^the cluster says hello$' "$work/subscriber.txt"; then
    report ok "PUBLISH on node1 reached SUBSCRIBE on node$nodes in $(($(now_ms) - published_at)) ms"
  else
    report FAILED "PUBLISH on node1 did not reach SUBSCRIBE on node$nodes"
  fi
else
  report FAILED "SUBSCRIBE on node$nodes was not confirmed"
fi

# 4. Configuration: node1's file is edited (written beside it and renamed over it, as editors save); every
# node's INFO shows the new greeting.
greeting_everywhere() {
  local k
  for ((k = 1; k <= nodes; k++)); do [[ $(info_field "$k" greeting) == "$1" ]] || return 1; done
}
edited_at=$(now_ms)
printf '{"greeting": "edited while running"}\n' >"$work/cluster.json.new"
mv "$work/cluster.json.new" "$work/cluster.json"
if wait_until 5 greeting_everywhere "edited while running"; then
  report ok "config: node1's file edited, every node's INFO greets with it within $(($(now_ms) - edited_at)) ms"
else
  report FAILED "config: the edit did not reach every node"
fi
printf '{"greeting": }\n' >"$work/cluster.json.new"
mv "$work/cluster.json.new" "$work/cluster.json"
config_error_on() { [[ -n $(info_field "$1" config_error) ]]; }
if wait_until 5 config_error_on "$nodes" && greeting_everywhere "edited while running"; then
  report ok "config: a broken file changed nothing; node$nodes shows its error: $(info_field "$nodes" config_error | cut -c1-70)"
else
  report FAILED "config: a broken file was not reported everywhere, or changed a value"
fi

# 5. kill -9 of the last node: its keys answer an error while it is down, every other key still works.
victim=$nodes
kill -KILL "${pid[$victim]}"
wait "${pid[$victim]}" 2>/dev/null
unset "pid[$victim]"
killed_at=$(now_ms)
if wait_until 10 members_up_everywhere $((nodes - 1)); then
  report ok "kill -9 node$victim: every other node saw it down after $(($(now_ms) - killed_at)) ms"
else
  report FAILED "kill -9 node$victim: not seen down everywhere"
fi
good=0 down=0 wrong=0
for ((i = 0; i < keys; i++)); do
  answer=$(cli 1 GET "key:$i")
  if [[ $answer == "value-$i" ]]; then good=$((good + 1))
  elif [[ $answer == *"CLUSTERDOWN"*"node$victim"* ]]; then down=$((down + 1))
  else wrong=$((wrong + 1)); fi
done
if ((wrong == 0 && down > 0 && good > 0)); then
  report ok "while node$victim is down: $good keys answer, $down (node$victim's) answer CLUSTERDOWN"
else
  report FAILED "while node$victim is down: $good answer, $down CLUSTERDOWN, $wrong wrong"
fi

# 6. The node restarts and rejoins: its keys answer again (empty: its data was in its memory), and take writes.
restarted_at=$(now_ms)
start_node "$victim"
if wait_until 10 members_up_everywhere "$nodes"; then
  report ok "node$victim restarted and rejoined in $(($(now_ms) - restarted_at)) ms"
else
  report FAILED "node$victim did not rejoin"
fi
# node1 may take a moment to look up the restarted node's shards: wait until no key answers CLUSTERDOWN.
no_key_down() {
  local i
  for ((i = 0; i < keys; i++)); do [[ $(cli 1 GET "key:$i") == *CLUSTERDOWN* ]] && return 1; done
  return 0
}
wait_until 10 no_key_down
for ((i = 0; i < keys; i++)); do cli 1 SET "key:$i" "again-$i" >/dev/null; done
same=0
for ((i = 0; i < keys; i++)); do [[ $(cli "$victim" GET "key:$i") == "again-$i" ]] && same=$((same + 1)); done
if ((same == keys)); then
  report ok "after the restart: $keys keys SET through node1, all read back through node$victim"
else
  report FAILED "after the restart: only $same of $keys keys read back through node$victim"
fi

echo
if ((failures == 0)); then echo "tour: every step held"; else echo "tour: $failures step(s) failed"; fi
if ((keep_running)); then
  echo
  echo "The cluster keeps running; Ctrl-C stops it. Try:"
  for ((k = 1; k <= nodes; k++)); do echo "  redis-cli -p $(kv_port "$k")     # node$k (peers at 127.0.0.1:$((base + k)))"; done
  echo "  node1's configuration file: $work/cluster.json (edit it: INFO shows the greeting everywhere)"
  while :; do sleep 1; done
fi
((failures == 0))
