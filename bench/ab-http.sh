#!/usr/bin/env bash
# A/B of two Flare builds in the same minutes: alternating rounds of wrk
# against each build's wasm hello (/fn/hello) and Python hello (/fn/py),
# one server per build, both running throughout. Prints every round, the
# medians and the ratio B / A.
#
#   bench/ab-http.sh OLD_FLARE NEW_FLARE      (paths to two flare binaries)
# Knobs: ROUNDS (3), DURATION (5s), CONNECTIONS (32).
source "$(dirname "$0")/common.sh"
A=$1 B=$2
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5s}
CONNECTIONS=${CONNECTIONS:-32}
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install wrk" >&2; exit 1; }
"$ROOT/scripts/build-guests.sh" >/dev/null

# serve NAME BINARY: starts a server with both functions; sets NAME_URL.
dirs=() pids=()
serve() {
  local data
  data=$(mktemp -d)
  dirs+=("$data")
  FLARE=$2 start_flare "$data"
  pids+=("$FLARE_PID")
  "$2" env create --name python --runtime python --poolsize 1 >/dev/null
  "$2" fn create --name hello --code "$GUESTS/hello_rust.wasm" --concurrency 1000 >/dev/null
  "$2" fn create --name py --env python --code "$ROOT/examples/python/hello.py" --maxscale 4 >/dev/null
  printf -v "$1_URL" '%s' "$ROUTER"
}
trap 'kill "${pids[@]}" 2>/dev/null; rm -rf "${dirs[@]}"' EXIT
serve A "$A"
serve B "$B"

run() { # run LABEL URL -> "LABEL rps"
  local rps
  rps=$(wrk -t1 -c"$CONNECTIONS" -d"$DURATION" "$2" | awk '/^Requests\/sec/ { print $2 }')
  echo "$1 $rps"
}
for url in "$A_URL" "$B_URL"; do # warm-up, not counted
  wrk -t1 -c"$CONNECTIONS" -d2s "$url/fn/hello" >/dev/null
  wrk -t1 -c4 -d2s "$url/fn/py" >/dev/null
done
results=$(mktemp)
for round in $(seq "$ROUNDS"); do
  run A-wasm "$A_URL/fn/hello" | tee -a "$results"
  run B-wasm "$B_URL/fn/hello" | tee -a "$results"
  CONNECTIONS=4 run A-python "$A_URL/fn/py" | tee -a "$results"
  CONNECTIONS=4 run B-python "$B_URL/fn/py" | tee -a "$results"
done
median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
echo
for kind in wasm python; do
  a=$(awk -v k="A-$kind" '$1 == k { print $2 }' "$results" | median)
  b=$(awk -v k="B-$kind" '$1 == k { print $2 }' "$results" | median)
  printf "%-7s A %10s req/s   B %10s req/s   B/A %.2f\n" "$kind" "$a" "$b" "$(awk -v a="$a" -v b="$b" 'BEGIN { print b / a }')"
done
rm -f "$results"
