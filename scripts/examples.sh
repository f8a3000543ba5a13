#!/usr/bin/env bash
# Deploys the example functions (what is missing of them) through the API
# at $FLARE_API with $FLARE_TOKEN, using the flare binary given:
#   hello, echo (+ the /greet/{name} route): wasm; pyhello, jshello,
#   javahello: the same greeting from Python, Node.js and Java workers.
# Used by scripts/demo.sh and scripts/cluster.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
flare=$1
guests=target/guests/wasm32-wasip2/release

deploy() { # name, code, extra flags...
  local name=$1 code=$2; shift 2
  "$flare" fn get --name "$name" >/dev/null 2>&1 || "$flare" fn create --name "$name" --code "$code" "$@" >/dev/null
}
environment() { # name, runtime, extra flags...
  local name=$1 runtime=$2; shift 2
  "$flare" env get --name "$name" >/dev/null 2>&1 || "$flare" env create --name "$name" --runtime "$runtime" "$@" >/dev/null
}
deploy hello "$guests/hello_rust.wasm"
deploy echo "$guests/echo.wasm" --env GREETING="hello from the echo example"
environment python python
environment node node --poolsize 1
deploy pyhello examples/python/hello.py --env python
deploy jshello examples/node/hello.js --env node
examples/java/build.sh target/hello.jar >/dev/null
environment java java --poolsize 1
deploy javahello target/hello.jar --env java
"$flare" ht get --name greet >/dev/null 2>&1 ||
  "$flare" ht create --name greet --url '/greet/{name}' --method GET --function echo >/dev/null
