#!/usr/bin/env bash
# Builds a Java function's jar with the JDK's javac and jar: the function's
# classes only, compiled against Flare's Java API (environments/java/flare:
# Handler, Request, Response), with the handler class named in the
# manifest (Flare-Handler), so `flare fn create` needs no --entrypoint.
#   examples/java/build.sh [OUT.jar [SRC_DIR HANDLER_CLASS]]
# With no arguments: examples/java/hello.jar from src/ (example.Hello).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-$here/hello.jar}"
src="${2:-$here/src}"
handler="${3:-example.Hello}"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
javac --release 17 -nowarn -d "$work/api" "$here"/../../environments/java/flare/*.java
# -XDstringConcat=inline: string concatenation as plain code; its
# invokedynamic form costs the first request milliseconds.
javac --release 17 -nowarn -XDstringConcat=inline -cp "$work/api" -d "$work/classes" $(find "$src" -name '*.java')
printf 'Flare-Handler: %s\n' "$handler" > "$work/manifest"
jar --create --file "$out" --manifest "$work/manifest" -C "$work/classes" .
echo "$out"
