#!/usr/bin/env bash
# What tracing costs on the data path: wasm hello req/s (wrk) through
#   A  an older build without tracing (OLD_FLARE, "today's"),
#   B  this build with tracing off (no --otlp-endpoint),
#   C  this build exporting spans over OTLP/HTTP at --trace-sample-rate 0.01
#      (to bench/otlp-sink.py on loopback), and
#   D  the same at 1.0 (every request traced), for scale,
# in alternating rounds, all servers up throughout. Prints every round, the
# medians and the ratios B/A (target >= 0.98) and C/A (target >= 0.90).
#
#   bench/traces.sh OLD_FLARE
# Knobs: ROUNDS (5), DURATION (5s), CONNECTIONS (32).
source "$(dirname "$0")/common.sh"
OLD=${1:?usage: bench/traces.sh OLD_FLARE (a flare binary built before tracing)}
ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-5s}
CONNECTIONS=${CONNECTIONS:-32}
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install wrk" >&2; exit 1; }
build_all
NEW=$FLARE

sink_out=$(mktemp)
python3 "$ROOT/bench/otlp-sink.py" >"$sink_out" &
SINK_PID=$!
for _ in $(seq 100); do [ -s "$sink_out" ] && break; sleep 0.05; done
SINK="http://127.0.0.1:$(head -1 "$sink_out")"

dirs=() pids=()
trap 'kill "${pids[@]}" 2>/dev/null; kill $SINK_PID 2>/dev/null; rm -rf "${dirs[@]}" "$sink_out"' EXIT
# serve NAME BINARY [SERVER ARGS]: a server with the wasm hello; sets NAME_URL.
serve() {
  local name=$1 binary=$2 data
  shift 2
  data=$(mktemp -d)
  dirs+=("$data")
  FLARE=$binary FLARE_SERVER_ARGS="$*" start_flare "$data"
  pids+=("$FLARE_PID")
  "$binary" fn create --name hello --code "$GUESTS/hello_rust.wasm" --concurrency 1000 >/dev/null
  printf -v "${name}_URL" '%s' "$ROUTER"
}
serve A "$OLD"
serve B "$NEW"
serve C "$NEW" --otlp-endpoint "$SINK" --trace-sample-rate 0.01
serve D "$NEW" --otlp-endpoint "$SINK" --trace-sample-rate 1

for url in "$A_URL" "$B_URL" "$C_URL" "$D_URL"; do # warm-up, not counted
  wrk -t1 -c"$CONNECTIONS" -d2s "$url/fn/hello" >/dev/null
done
results=$(mktemp)
for round in $(seq "$ROUNDS"); do
  for name in A B C D; do
    url_var="${name}_URL"
    rps=$(wrk -t1 -c"$CONNECTIONS" -d"$DURATION" "${!url_var}/fn/hello" | awk '/^Requests\/sec/ { print $2 }')
    echo "round $round $name $rps" | tee -a "$results"
  done
done
median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
echo
declare -A med
for name in A B C D; do
  med[$name]=$(awk -v k="$name" '$3 == k { print $4 }' "$results" | median)
done
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b / a }'; }
printf "A old build              %10s req/s\n" "${med[A]}"
printf "B tracing off            %10s req/s   B/A %s (target >= 0.98)\n" "${med[B]}" "$(ratio "${med[A]}" "${med[B]}")"
printf "C tracing on, 1%% sampled %10s req/s   C/A %s (target >= 0.90)\n" "${med[C]}" "$(ratio "${med[A]}" "${med[C]}")"
printf "D tracing on, all        %10s req/s   D/A %s\n" "${med[D]}" "$(ratio "${med[A]}" "${med[D]}")"
# The servers first (they flush their spans on the way out), then the sink.
kill "${pids[@]}" 2>/dev/null
for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
pids=()
kill $SINK_PID && wait $SINK_PID 2>/dev/null
tail -1 "$sink_out"
rm -f "$results"
