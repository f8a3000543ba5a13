#!/usr/bin/env bash
# First request to N fresh Python and Node.js functions (default 100), with
# a warm pool (the target: p99 < 20 ms; Fission's pool: ~110 ms p50) and
# without one (a fresh sandbox per cold start); then 50 functions created
# back to back with no pause, with a pool of 3 and of 0 (Python: a fork
# from the zygote; target p50 < 2 ms, p99 < 5 ms); then warm requests and
# wrk throughput through the router to a Python hello. Java: first
# request from a pool of pre-started JVMs (target p99 < 50 ms), without
# one, and warm.
source "$(dirname "$0")/common.sh"
N=${1:-100}
"$ROOT/scripts/system-deps.sh"
build_all
serve_flare
for runtime in python node; do
  python3 "$ROOT/bench/process.py" cold "$runtime" "$N" 3
  python3 "$ROOT/bench/process.py" cold "$runtime" "$((N / 4))" 0
  python3 "$ROOT/bench/process.py" rapid "$runtime" 50 3
  python3 "$ROOT/bench/process.py" rapid "$runtime" 50 0
  python3 "$ROOT/bench/process.py" warm "$runtime" 2000
done
# Java: the JVM pre-started in the pool (target: first request p99 < 50 ms).
"$ROOT/examples/java/build.sh" "$ROOT/target/hello.jar" >/dev/null
python3 "$ROOT/bench/process.py" cold java "$((N / 4))" 3
python3 "$ROOT/bench/process.py" cold java 5 0
python3 "$ROOT/bench/process.py" warm java 2000
if command -v wrk >/dev/null; then
  "$FLARE" fn update --name python-warm-hello --maxscale 4 >/dev/null
  for c in 1 4; do
    echo "  wrk -t1 -c$c -d10s to the Python hello (maxscale 4, one request per instance):"
    wrk -t1 -c$c -d10s --latency "$ROUTER/fn/python-warm-hello" | awk '/Requests\/sec|50%|99%|Non-2xx/ { print "    " $0 }'
  done
fi
