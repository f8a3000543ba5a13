#!/usr/bin/env bash
# Starts Flare on the embedded store with the example functions deployed:
#   hello  -> http://127.0.0.1:8080/fn/hello
#   echo   -> http://127.0.0.1:8080/fn/echo/anything and /greet/{name}
#   pyhello, jshello, javahello -> the same greeting from Python, Node.js
#     and Java workers
# Ctrl-C stops it. Data lives in target/demo-data (FLARE_DATA_DIR overrides),
# the admin token the first start made in its admin.token; ports can be
# changed with FLARE_ADDR and FLARE_API_ADDR.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/system-deps.sh
echo "== building the example functions and flare (release)"
scripts/build-guests.sh >/dev/null
cargo build --release --quiet -p flare
flare=target/release/flare

export FLARE_DATA_DIR="${FLARE_DATA_DIR:-$PWD/target/demo-data}"
out=$(mktemp)
"$flare" server >"$out" &
server=$!
trap 'kill $server 2>/dev/null; rm -f "$out"' EXIT INT TERM

for _ in $(seq 100); do
  grep -q '^api listening' "$out" && break
  kill -0 $server 2>/dev/null || { echo "flare server exited; see above"; exit 1; }
  sleep 0.1
done
router=$(sed -n 's/^router listening on //p' "$out")
export FLARE_API=$(sed -n 's/^api listening on //p' "$out")
# The first start wrote the admin token; this script deploys with it.
token_file="$FLARE_DATA_DIR/admin.token"
[ -r "$token_file" ] || { echo "no $token_file: start with an empty FLARE_DATA_DIR, or set FLARE_TOKEN"; exit 1; }
export FLARE_TOKEN="${FLARE_TOKEN:-$(cat "$token_file")}"

scripts/examples.sh "$flare"

cat <<TXT

Flare is running (router $router, API $FLARE_API, data $FLARE_DATA_DIR).
Try, in another terminal:
  curl $router/fn/hello
  curl $router/greet/ada
  curl "$router/fn/pyhello?name=ada"
  curl "$router/fn/jshello?name=ada"
  curl "$router/fn/javahello?name=ada"
  $flare login --api $FLARE_API --token "\$(cat $token_file)"
  $flare fn list
  $flare fn test --name echo --method POST --body '{"a":1}'
  $flare fn logs --name echo --follow
Or open the console at $FLARE_API/ui/ and sign in with the token in $token_file.
Ctrl-C stops the server.
TXT
wait $server
