#!/usr/bin/env bash
# First-request latency of N freshly created functions (default 200).
# Flare compiles at create time, so the first request only instantiates from
# the prepared InstancePre: a cold start is a warm start.
source "$(dirname "$0")/common.sh"
N=${1:-200}
build_all
data=$(mktemp -d)
start_flare "$data"
trap 'kill $FLARE_PID 2>/dev/null; rm -rf "$data"' EXIT
ROUTER=$ROUTER HELLO_WASM="$GUESTS/hello_rust.wasm" python3 "$ROOT/bench/functions.py" cold-start "$N"
