#!/usr/bin/env bash
# `flare fn logs` queries on a big log: fills a fresh database with N lines
# (default 1,000,000; 200 functions, 10 lines per invocation), waits for the
# background text index to catch up, and prints the median time of each
# kind of query (by function, invocation, time range, stream, text).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
N=${1:-1000000}
cd "$ROOT"
cargo build --release --quiet -p flare-store --example log_query
"$ROOT/target/release/examples/log_query" "$N"
