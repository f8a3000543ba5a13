#!/usr/bin/env bash
# Deploys N hello functions (default 10000) on one server, then calls each
# once; prints the server's RSS and the time for all of them to answer.
# Then the same with DISTINCT (default 200) functions that each have their
# own package, to show the cost of code that is not shared.
source "$(dirname "$0")/common.sh"
N=${1:-10000}
build_all
data=$(mktemp -d)
start_flare "$data"
trap 'kill $FLARE_PID 2>/dev/null; rm -rf "$data"' EXIT
FLARE_PID=$FLARE_PID ROUTER=$ROUTER HELLO_WASM="$GUESTS/hello_rust.wasm" python3 "$ROOT/bench/functions.py" many "$N"
kill $FLARE_PID; wait $FLARE_PID 2>/dev/null || true
rm -rf "$data"; data=$(mktemp -d)
start_flare "$data"
FLARE_PID=$FLARE_PID ROUTER=$ROUTER HELLO_WASM="$GUESTS/hello_rust.wasm" python3 "$ROOT/bench/functions.py" distinct "${DISTINCT:-200}"
