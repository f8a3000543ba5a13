#!/usr/bin/env bash
# Figures per isolation level (namespace, gvisor, microvm) for a Python
# hello: boot of one sandbox, first request from a full and an empty pool,
# warm latency and wrk throughput at c=1 and c=32, memory per idle sandbox
# and how many fit in 4 GiB. Anchors from the survey: RunD ~20 MB per
# sandbox, ~200 ms start, 4,000 per node; Alibaba FC ~250 ms start.
# A level this host cannot provide is reported as such.
#   bench/isolation.sh [LEVEL...]
source "$(dirname "$0")/common.sh"
"$ROOT/scripts/system-deps.sh"
build_all
serve_flare
[ $# -gt 0 ] || set -- namespace gvisor microvm
python3 "$ROOT/bench/isolation.py" "$@"
