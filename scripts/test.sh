#!/usr/bin/env bash
# The whole test suite, exactly as CI runs it (.ci/run calls this script).
# Installs what is missing (bubblewrap, python3, node, the wasm32-wasip2
# target), builds the guest functions,
# checks formatting and lints, runs every test, then checks the API against
# its OpenAPI document with schemathesis.
set -euo pipefail
cd "$(dirname "$0")/.."
# Incremental caches only pay off when editing; on a clean run they are
# 1.5 GB of disk and no speed.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

echo "== system tools (bubblewrap, python3, node)"
scripts/system-deps.sh

echo "== brokers (NATS JetStream, Redis, Mosquitto, RabbitMQ)"
scripts/services.sh

echo "== guests (wasm32-wasip2)"
scripts/build-guests.sh >/dev/null

echo "== console assets (ui/dist is what ui/build.sh makes from ui/src)"
rebuilt="$(mktemp -d)"
ui/build.sh "$rebuilt" >/dev/null
diff -r "$rebuilt" ui/dist
rm -rf "$rebuilt"

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy"
cargo clippy --quiet --all-targets -- -D warnings

echo "== cargo test"
# pipefail would end the script here when a test fails; keep cargo's status
# and print the summary either way.
status=0
cargo test --workspace --no-fail-fast 2>&1 | tee target/test-output.txt || status=$?

echo "== API contract (schemathesis against a live server)"
contract=0
scripts/schemathesis.sh > target/schemathesis-output.txt 2>&1 || contract=$?
# A failure's details (the request to replay, the message) come before the
# summary: show them too.
if [ "$contract" -ne 0 ]; then tail -n 200 target/schemathesis-output.txt; else tail -n 25 target/schemathesis-output.txt; fi

# Summarize: one line a newcomer (and CI) can read at a glance.
awk '/^test result:/ { p += $4; f += $6 } END { printf "\n%d passed, %d failed\n", p, f; exit (f > 0) }' target/test-output.txt || status=1
if [ "$status" -ne 0 ]; then
    grep -E '^    [a-z_:]+$|^error: ' target/test-output.txt | sort -u | sed 's/^/failed: /' || true
fi
if [ "$contract" -ne 0 ]; then
    echo "failed: the API contract check (target/schemathesis-output.txt)"
    status=1
fi
exit "$status"
