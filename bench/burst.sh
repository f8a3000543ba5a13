#!/usr/bin/env bash
# From zero instances to a burst of N (default 200) concurrent requests on
# a Python function that works 100 ms per request, maxscale 20, one request
# per instance: once with a queue (requests wait for an instance), once
# without (beyond capacity they are refused with 503 at once).
source "$(dirname "$0")/common.sh"
N=${1:-200}
"$ROOT/scripts/system-deps.sh"
build_all
data=$(mktemp -d)
start_flare "$data"
trap 'kill $FLARE_PID 2>/dev/null; rm -rf "$data"' EXIT
export ROUTER
"$FLARE" env create --name python --runtime python >/dev/null
probe="$ROOT/tests/functions/probe.py"
"$FLARE" fn create --name queued --env python --code "$probe" --maxscale 20 --queue 1000 --queue-timeout 60s --timeout 60s >/dev/null
"$FLARE" fn create --name unqueued --env python --code "$probe" --maxscale 20 --timeout 60s >/dev/null
sleep 1
echo "burst on a Python function, 100 ms of work per request, maxscale 20, 2 cores:"
python3 "$ROOT/bench/burst.py" "/fn/queued/sleep?s=0.1" "$N"
api_curl -s "$FLARE_API/metrics" | grep -E '^flare_(cold_starts_total|scale_events_total)\{function="queued"' | sed 's/^/    /'
python3 "$ROOT/bench/burst.py" "/fn/unqueued/sleep?s=0.1" "$N"
api_curl -s "$FLARE_API/metrics" | grep -E '^flare_(cold_starts_total|queue_rejections_total)\{function="unqueued"' | sed 's/^/    /'
