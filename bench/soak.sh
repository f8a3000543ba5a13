#!/usr/bin/env bash
# Mixed load for a while, with clients that drop their connections mid-run:
# wasm hello under wrk, a Python function under a wrk that is killed (-9)
# part way through every round, and NATS messages through a trigger. Prints
# the server's RSS after the first round and at the end, error counts, and
# what is still held (in flight, queued, busy, specializing) once the load
# stops: RSS must be flat within 10 %, nothing may stay held, and 100 of
# 100 requests to each function must succeed afterwards.
# Args: [SECONDS=600]
source "$(dirname "$0")/common.sh"
DURATION=${1:-600}
command -v wrk >/dev/null || { echo "needs wrk (apt-get install wrk)" >&2; exit 1; }
"$ROOT/scripts/services.sh" >/dev/null
build_all
[ -n "${SKIP_BUILD:-}" ] || (cd "$ROOT" && cargo build --release --quiet -p flare-triggers --example mq_bench)
MQ_BENCH="$ROOT/target/release/examples/mq_bench"
data=$(mktemp -d)
start_flare "$data"
subject="soak.$$.in"
trap 'kill $FLARE_PID 2>/dev/null; rm -rf "$data"' EXIT
"$FLARE" env create --name python --runtime python --poolsize 2 >/dev/null
"$FLARE" fn create --name hello --code "$GUESTS/hello_rust.wasm" --concurrency 1000 >/dev/null
"$FLARE" fn create --name py --env python --code "$ROOT/examples/python/hello.py" \
  --maxscale 2 --queue 1000 >/dev/null
"$FLARE" mqt create --name soak$$ --function hello --mqtype nats --topic "$subject" \
  --resptopic "soak.$$.out" --concurrency 64 >/dev/null
for _ in $(seq 100); do
  "$FLARE" mqt get --name soak$$ | grep -q connected && break
  sleep 0.1
done

# field NAME FILE: the number wrk printed after NAME (0 when absent).
field() { { grep -o "$1 *[0-9]*" "$2" || true; } | { grep -o '[0-9]*$' || true; } | awk '{ s += $1 } END { print s + 0 }'; }

rounds=0 wasm_requests=0 wasm_bad=0 py_bad=0 mq_ok=0 mq_failed=0
rss_first=""
started=$(date +%s)
out=$(mktemp -d)
while [ $(( $(date +%s) - started )) -lt "$DURATION" ]; do
  wrk -t1 -c32 -d5s "$ROUTER/fn/hello" >"$out/wasm" 2>&1 &
  wasm=$!
  # Killed part way: 32 connections dropped mid-request.
  (timeout -s KILL 3 wrk -t1 -c32 -d5s "$ROUTER/fn/py" >"$out/py" 2>&1 || true) &
  py=$!
  if timeout 60 "$MQ_BENCH" "$subject" "soak.$$.out" 2000 >"$out/mq" 2>&1; then
    mq_ok=$((mq_ok + 1))
  else
    mq_failed=$((mq_failed + 1))
  fi
  wait "$wasm" || true
  wait "$py" || true
  wasm_requests=$((wasm_requests + $(awk '/ requests in / { n = $1 } END { print n + 0 }' "$out/wasm")))
  wasm_bad=$((wasm_bad + $(field 'Non-2xx or 3xx responses:' "$out/wasm")))
  py_bad=$((py_bad + $(field 'Non-2xx or 3xx responses:' "$out/py")))
  rounds=$((rounds + 1))
  [ -n "$rss_first" ] || rss_first=$(rss_kib "$FLARE_PID")
done
rss_end=$(rss_kib "$FLARE_PID")

held() {
  "$FLARE" fn get --name "$1" -o json | python3 -c '
import json, sys
s = json.load(sys.stdin).get("status", {})
i = s.get("instances") or {}
print(s.get("inFlight", 0) + s.get("queued", 0) + i.get("busy", 0) + i.get("specializing", 0))'
}
for _ in $(seq 300); do
  [ "$(held hello)" = 0 ] && [ "$(held py)" = 0 ] && break
  sleep 0.1
done
after() {
  local ok=0
  for _ in $(seq 100); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "$ROUTER/fn/$1")" = 200 ] && ok=$((ok + 1))
  done
  echo "$ok"
}

echo "soak: ${DURATION}s, $rounds rounds"
echo "  wasm hello: $wasm_requests requests, $wasm_bad non-2xx"
echo "  python (wrk killed mid-run every round): $py_bad non-2xx before the kill"
echo "  nats: $mq_ok rounds of 2000 messages answered, $mq_failed incomplete"
echo "  RSS after round 1: $((rss_first / 1024)) MiB, at the end: $((rss_end / 1024)) MiB" \
  "($(awk -v a="$rss_first" -v b="$rss_end" 'BEGIN { printf "%+.1f", (b - a) * 100 / a }') %)"
echo "  held after the load: hello $(held hello), py $(held py)"
echo "  afterwards: hello $(after hello)/100, py $(after py)/100 answered 200"
"$FLARE" mqt delete --name soak$$ >/dev/null
"$MQ_BENCH" --cleanup
