# Shared by the benchmark scripts: build what is needed and start servers.
# Source it; it defines start_flare and sets ROOT, FLARE, GUESTS.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# FLARE=/path/to/flare compares another build (e.g. an older commit).
FLARE="${FLARE:-$ROOT/target/release/flare}"
GUESTS="$ROOT/target/guests/wasm32-wasip2/release"

# SKIP_BUILD=1 uses what is built (with FLARE= another binary).
build_all() {
  "$ROOT/scripts/build-guests.sh" >/dev/null
  [ -n "${SKIP_BUILD:-}" ] || (cd "$ROOT" && cargo build --release --quiet -p flare)
}

# start_flare DATA_DIR: starts a server on ephemeral ports; sets FLARE_PID,
# ROUTER and FLARE_API.
start_flare() {
  local data=$1 out
  out=$(mktemp)
  # FLARE_SERVER_ARGS: more flags for this server (word-split).
  # shellcheck disable=SC2086
  FLARE_LOG=warn "$FLARE" server --data-dir "$data" --addr 127.0.0.1:0 --api-addr 127.0.0.1:0 ${FLARE_SERVER_ARGS:-} >"$out" &
  FLARE_PID=$!
  for _ in $(seq 200); do
    grep -q '^api listening' "$out" && break
    sleep 0.05
  done
  ROUTER=$(sed -n 's/^router listening on //p' "$out")
  FLARE_API=$(sed -n 's/^api listening on //p' "$out")
  export FLARE_API
  rm -f "$out"
  [ -n "$FLARE_API" ] || { echo "flare server did not start" >&2; exit 1; }
  # Builds with API tokens write the admin's on the first start (older
  # builds, compared with FLARE=, have none and need none).
  if [ -f "$data/admin.token" ]; then
    FLARE_TOKEN=$(cat "$data/admin.token")
    export FLARE_TOKEN
  else
    unset FLARE_TOKEN
  fi
}

# curl with the API token, for /metrics and /v1.
api_curl() {
  if [ -n "${FLARE_TOKEN:-}" ]; then
    curl -H "Authorization: Bearer $FLARE_TOKEN" "$@"
  else
    curl "$@"
  fi
}

rss_kib() { awk '/^VmRSS/ { print $2 }' "/proc/$1/status"; }

# serve_flare: a server on a fresh data dir for the rest of the script,
# stopped and removed on exit; exports FLARE and ROUTER for helpers.
serve_flare() {
  FLARE_DATA=$(mktemp -d)
  start_flare "$FLARE_DATA"
  trap 'kill $FLARE_PID 2>/dev/null; rm -rf "$FLARE_DATA"' EXIT
  export FLARE ROUTER
}
