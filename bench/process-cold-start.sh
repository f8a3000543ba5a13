#!/usr/bin/env bash
# First request to N fresh Python and Node.js functions (default 100), with
# a warm pool (the target: p99 < 20 ms; Fission's pool: ~110 ms p50) and
# without one (a fresh sandbox per cold start), then warm requests and
# wrk throughput through the router to a Python hello.
source "$(dirname "$0")/common.sh"
N=${1:-100}
"$ROOT/scripts/system-deps.sh"
build_all
data=$(mktemp -d)
start_flare "$data"
trap 'kill $FLARE_PID 2>/dev/null; rm -rf "$data"' EXIT
export FLARE ROUTER
for runtime in python node; do
  python3 "$ROOT/bench/process.py" cold "$runtime" "$N" 3
  python3 "$ROOT/bench/process.py" cold "$runtime" "$((N / 4))" 0
  python3 "$ROOT/bench/process.py" warm "$runtime" 2000
done
if command -v wrk >/dev/null; then
  "$FLARE" fn update --name python-warm-hello --maxscale 4 >/dev/null
  for c in 1 4; do
    echo "  wrk -t1 -c$c -d10s to the Python hello (maxscale 4, one request per instance):"
    wrk -t1 -c$c -d10s --latency "$ROUTER/fn/python-warm-hello" | awk '/Requests\/sec|50%|99%|Non-2xx/ { print "    " $0 }'
  done
fi
