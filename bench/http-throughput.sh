#!/usr/bin/env bash
# Requests/s and latency of the same hello component served by
# `wasmtime serve` and by the Flare router, under the same wrk load,
# alternating rounds. Prints each round, the medians and the ratio
# Flare / wasmtime-serve (target: >= 1.0).
#
# Needs: wrk (apt-get install wrk) and wasmtime-cli 48
# (cargo install wasmtime-cli --version 48.0.8 --locked).
# Knobs: ROUNDS (3), DURATION (10s), CONNECTIONS (32).
source "$(dirname "$0")/common.sh"
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-32}
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install wrk" >&2; exit 1; }
WASMTIME=$(command -v wasmtime || echo "$HOME/.cargo/bin/wasmtime")
[ -x "$WASMTIME" ] || { echo "wasmtime is missing: cargo install wasmtime-cli --version 48.0.8 --locked" >&2; exit 1; }
build_all

data=$(mktemp -d)
start_flare "$data"
"$FLARE" fn create --name hello --code "$GUESTS/hello_rust.wasm" >/dev/null
"$FLARE" ht create --name hello --url /hello --method GET --function hello >/dev/null

port=$((20000 + RANDOM % 20000))
"$WASMTIME" serve -Scli --addr "127.0.0.1:$port" "$GUESTS/hello_rust.wasm" 2>/dev/null &
WASMTIME_PID=$!
trap 'kill $FLARE_PID $WASMTIME_PID 2>/dev/null; rm -rf "$data"' EXIT
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/" >/dev/null && break; sleep 0.1; done

echo "wasmtime: $("$WASMTIME" --version); flare: $("$FLARE" --version)"
echo "load: wrk -t1 -c$CONNECTIONS -d$DURATION --latency, $ROUNDS alternating rounds, $(nproc) cores"

# run NAME URL -> prints "NAME rps p50_ms p99_ms"
run() {
  local out rps p50 p99
  out=$(wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --latency "$2")
  rps=$(awk '/^Requests\/sec/ { print $2 }' <<<"$out")
  p50=$(awk '$1 == "50%" { print $2 }' <<<"$out")
  p99=$(awk '$1 == "99%" { print $2 }' <<<"$out")
  if grep -q "Non-2xx" <<<"$out"; then echo "warning: $1 answered non-2xx: $(grep Non-2xx <<<"$out")" >&2; fi
  echo "$1 $rps $(to_ms "$p50") $(to_ms "$p99")"
}
to_ms() { # wrk prints 123.45us / 1.23ms / 1.02s
  awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n *= 1; else if (v ~ /s$/) n *= 1000; printf "%.3f", n }'
}

# Warm-up, not counted.
wrk -t1 -c"$CONNECTIONS" -d2s "http://127.0.0.1:$port/" >/dev/null
wrk -t1 -c"$CONNECTIONS" -d2s "$ROUTER/fn/hello" >/dev/null

results=$(mktemp)
for round in $(seq "$ROUNDS"); do
  run wasmtime-serve "http://127.0.0.1:$port/" | tee -a "$results"
  run flare-fn "$ROUTER/fn/hello" | tee -a "$results"
  run flare-trigger "$ROUTER/hello" | tee -a "$results"
done

echo
printf "%-16s %12s %10s %10s\n" target "req/s" "p50 ms" "p99 ms"
median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
for name in wasmtime-serve flare-fn flare-trigger; do
  rps=$(awk -v n=$name '$1 == n { print $2 }' "$results" | median)
  p50=$(awk -v n=$name '$1 == n { print $3 }' "$results" | median)
  p99=$(awk -v n=$name '$1 == n { print $4 }' "$results" | median)
  printf "%-16s %12.0f %10.3f %10.3f\n" "$name" "$rps" "$p50" "$p99"
  eval "rps_${name//-/_}=$rps"
done
awk -v f="$rps_flare_fn" -v t="$rps_flare_trigger" -v w="$rps_wasmtime_serve" \
  'BEGIN { printf "\nratio flare/wasmtime-serve (median req/s): /fn/hello %.2f, trigger %.2f  (target >= 1.0)\n", f / w, t / w }'
rm -f "$results"
