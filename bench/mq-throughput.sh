#!/usr/bin/env bash
# Messages per second from NATS JetStream through a trigger into the wasm
# hello function and back out on the response subject. Target >= 10,000/s.
# Args: [N=20000] [CONCURRENCY=64]
source "$(dirname "$0")/common.sh"
N=${1:-20000}
CONCURRENCY=${2:-64}
"$ROOT/scripts/services.sh"
build_all
(cd "$ROOT" && cargo build --release --quiet -p flare-triggers --example mq_bench)
data=$(mktemp -d)
start_flare "$data"
subject="bench.$$.in"
trap 'kill $FLARE_PID 2>/dev/null; rm -rf "$data"' EXIT
"$FLARE" fn create --name hello --code "$GUESTS/hello_rust.wasm" --concurrency 1000 >/dev/null
"$FLARE" mqt create --name bench$$ --function hello --mqtype nats --topic "$subject" \
  --resptopic "bench.$$.out" --concurrency "$CONCURRENCY" >/dev/null
for _ in $(seq 100); do
  "$FLARE" mqt get --name bench$$ | grep -q connected && break
  sleep 0.1
done
echo "NATS JetStream -> trigger (concurrency $CONCURRENCY) -> wasm hello -> response subject, $N messages:"
"$ROOT/target/release/examples/mq_bench" "$subject" "bench.$$.out" "$N"
"$FLARE" mqt delete --name bench$$ >/dev/null
"$ROOT/target/release/examples/mq_bench" --cleanup
