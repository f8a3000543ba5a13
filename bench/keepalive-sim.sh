#!/usr/bin/env bash
# Replays synthetic Azure-like invocation traces against a fixed 10-minute
# keep-alive and Flare's adaptive policy (the same code the server runs:
# crates/flare-scaling); prints cold-start rates and wasted instance-hours.
# Args: [FUNCTIONS=500] [DAYS=7] [SEED=2020]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo run --quiet --release -p flare-scaling --example keepalive_sim -- "$@"
