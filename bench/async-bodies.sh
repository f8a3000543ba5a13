#!/usr/bin/env bash
# Queued work must not slow unrelated functions: 30 asynchronous
# invocations of 1 MiB each are submitted to a slow Python function (1 s a
# call, one instance) while a wasm hello is called back to back; prints the
# hello's latency (p50, p99) with and without the burst. (Issue 17: this
# once took the hello's median to 2.4 s, with SQLite writes on the async
# threads.)
source "$(dirname "$0")/common.sh"
N=${1:-30}
"$ROOT/scripts/system-deps.sh"
build_all
data=$(mktemp -d)
start_flare "$data"
trap 'kill $FLARE_PID 2>/dev/null; rm -rf "$data"' EXIT
"$FLARE" env create --name python --runtime python >/dev/null
"$FLARE" fn create --name slow --env python --code "$ROOT/tests/functions/probe.py" \
  --maxscale 1 --timeout 60s --max-body 2000000 >/dev/null
"$FLARE" fn create --name hello --code "$GUESTS/hello_rust.wasm" >/dev/null
body=$(mktemp)
head -c 1048576 /dev/zero | tr '\0' 'x' >"$body"

# latency SECONDS: hello called back to back; prints "p50 p99" in ms.
latency() {
  python3 - "$ROUTER/fn/hello" "$1" <<'PY'
import sys, time, urllib.request
url, seconds = sys.argv[1], float(sys.argv[2])
times, failed, end = [], 0, time.monotonic() + seconds
while time.monotonic() < end:
    t = time.monotonic()
    try:
        urllib.request.urlopen(url, timeout=10).read()
    except Exception:
        failed += 1
    times.append((time.monotonic() - t) * 1000)
times.sort()
print("%.2f %.2f (%d calls, %d failed or over 10 s)"
      % (times[len(times) // 2], times[int(len(times) * 0.99)], len(times), failed))
PY
}
curl -s -o /dev/null "$ROUTER/fn/hello"
echo "hello alone:              p50 p99 ms: $(latency 3)"
for _ in $(seq "$N"); do
  curl -s -o /dev/null -m 60 -X POST --data-binary @"$body" "$ROUTER/async/fn/slow/sleep?s=1" &
done
echo "hello while $N x 1 MiB queue: p50 p99 ms: $(latency 5)"
wait
rm -f "$body"
