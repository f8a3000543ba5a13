#!/usr/bin/env bash
# Builds the example functions and the test guests (wasm32-wasip2) into
# target/guests/wasm32-wasip2/release/*.wasm. Installs the target if absent.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! rustup target list --installed | grep -qx wasm32-wasip2; then
  rustup target add wasm32-wasip2
fi
export CARGO_TARGET_DIR="$PWD/target/guests"
cargo build --quiet --release --target wasm32-wasip2 --manifest-path examples/Cargo.toml
cargo build --quiet --release --target wasm32-wasip2 --manifest-path tests/guests/Cargo.toml
ls "$CARGO_TARGET_DIR"/wasm32-wasip2/release/*.wasm
