#!/usr/bin/env bash
# Builds the console into dist/ (index.html, app.js, app.css), which the
# flare binary embeds at compile time: `ui/build.sh [OUT_DIR]`. dist/ is
# committed, so the binary builds without Node; this script reproduces it
# byte for byte from the pinned versions in package-lock.json, and
# scripts/test.sh builds it again elsewhere and fails when dist/ differs.
set -euo pipefail
cd "$(dirname "$0")"
npm ci --no-audit --no-fund --loglevel=error
out="$(realpath -m "${1:-dist}")"
mkdir -p "$out"
npx --no-install esbuild src/main.jsx \
  --bundle --minify --format=esm --target=es2022 \
  --jsx=automatic --jsx-import-source=preact \
  --legal-comments=none --charset=utf8 \
  --outfile="$out/app.js"
cp src/index.html "$out/index.html"
