#!/usr/bin/env bash
# Checks the API against its own OpenAPI document with schemathesis (PyPI):
# starts flare on free loopback ports with an empty data dir, runs every
# check on every operation with a fixed seed, and fails on any finding.
# Builds nothing: FLARE names the binary (default target/debug/flare).
# SCHEMA tests another document (a file or URL) against the live server
# instead of the one it serves; ST_SEED and ST_EXAMPLES (per operation and
# phase) change the run. Installs schemathesis with pip when `st` is absent.
set -euo pipefail
# Paths given relative to where the script is called from.
for var in FLARE SCHEMA; do
  if [ -e "${!var:-}" ]; then
    printf -v "$var" '%s' "$(realpath "${!var}")"
  fi
done
cd "$(dirname "$0")/.."

ST_VERSION=4.32.5
flare="${FLARE:-target/debug/flare}"
seed="${ST_SEED:-1}"
examples="${ST_EXAMPLES:-100}"

[ -x "$flare" ] || { echo "no flare binary at $flare (cargo build -p flare, or set FLARE)" >&2; exit 1; }
st=$(command -v st || true)
if [ -z "$st" ]; then
  echo "installing schemathesis $ST_VERSION"
  python3 -m pip install --quiet "schemathesis==$ST_VERSION"
  hash -r
  # pip puts it beside python3's other scripts, which may not be on PATH.
  st=$(command -v st || echo "$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')/st")
fi
[ -x "$st" ] || { echo "schemathesis installed, but no st program found" >&2; exit 1; }
installed=$("$st" --version | sed 's/.* //')
[ "$installed" = "$ST_VERSION" ] || echo "note: st $installed, this script is pinned to $ST_VERSION" >&2

work=$(mktemp -d)
server=
cleanup() {
  if [ -n "$server" ]; then
    kill "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

"$flare" server --data-dir "$work/data" --addr 127.0.0.1:0 --api-addr 127.0.0.1:0 \
  >"$work/out" 2>"$work/server.log" &
server=$!
for _ in $(seq 300); do
  grep -q '^api listening' "$work/out" && break
  kill -0 "$server" 2>/dev/null || { cat "$work/server.log" >&2; echo "flare server exited" >&2; exit 1; }
  sleep 0.1
done
api=$(sed -n 's/^api listening on //p' "$work/out")
[ -n "$api" ] || { echo "flare server did not start listening" >&2; exit 1; }
for _ in $(seq 100); do
  curl -fsS -o /dev/null "$api/healthz" 2>/dev/null && break
  sleep 0.1
done
schema="${SCHEMA:-$api/v1/openapi.json}"
token=$(cat "$work/data/admin.token")

# Only these rejections of schema-valid data are not findings: what OpenAPI
# 3.0 cannot state (what is stored, the bytes of a package, rules across
# fields). schemathesis lets 400 through for valid data (see the config
# below); this check fails every other 400 a valid request gets.
cat >"$work/hooks.py" <<'PY'
import re

import schemathesis

EXPLAINED = [
    r'does not exist; create it first',  # a trigger's function, a function's environment
    r'^package sha256:[0-9a-f]{64} is not stored',  # spec.package names no uploaded package
    r'^(package|component) ',  # the bytes are not a servable package
    r' but the URL names ',  # metadata.name differs from the name in the URL
    r'^invalid cron .* runs backwards',  # a range like 5-2
    r'^unknown time zone ',  # not in the IANA database
    r'^the worker program .* must be an absolute path',  # command[0] of a custom environment
    r'^min scale \d+ is above max scale',  # minScale > maxScale
    r'^timeout .* is out of range|^queue timeout is over|^keep-alive is over',  # duration bounds
    r'would loop on its own output',  # topic consumes resptopic or errortopic
    r'^invalid environment variable name ',  # env keys: 3.0 has no propertyNames
    r'^invalid URL pattern .*appears twice',  # a repeated path parameter name
    r'^a new function needs code',  # neither a code part nor spec.package
    r'^the first multipart part must be',  # parts are read in order: spec, then code
    r'^invalid expiry |^a token.s expiry must be after now|^expiry .* is too far',  # a duration in free text
    r'^an admin token acts in every namespace',  # role admin with a namespace
    r'^since: .* is neither a duration',  # a time in free text (logs, audit)
    r'^the document is in namespace .* but the request is for',  # metadata.namespace vs ?namespace=
    r' is not in a namespace; leave metadata.namespace out',  # cluster-wide kinds
    r'does not exist in namespace',  # a trigger's function, a function's secrets, in its namespace
    r'is not base64$|is in both data and stringData$',  # a secret's values
    r'^invalid (secret|config) key ',  # keys: 3.0 has no propertyNames
    r'^isolation \w+ (needs|is not available)|^the java runtime needs a JDK',  # what this host lacks
    r'^a trigger names an alias or weighted versions, not both',  # alias vs weights
    r'^weights must sum to 100|^versions start at 1',  # a trigger's weights
    r'^invalid http trigger document: invalid (value|type): .*(number in quotes|expected u64)',  # weights keys: 3.0 has no propertyNames
    r' has no version \d+',  # an alias or weight names a version not stored
    r'^alias ".*" names a version of function|^alias ".*" names versions of function',  # an alias of another function
    r'^a canary moves traffic between two versions; from and to are both',  # from == to
    r'^canary ".*" already runs on function',  # one running canary per function (what is stored)
    r'^interval .* is out of range',  # a canary's interval: a duration in free text
]


@schemathesis.check
def flare_valid_data_rejected_only_for_a_stated_reason(ctx, response, case):
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive or response.status_code != 400:
        return None
    try:
        message = response.json()["error"]["message"]
    except Exception:
        raise AssertionError(f"400 without an Error document: {response.text[:200]!r}")
    if not any(re.search(pattern, message, re.DOTALL) for pattern in EXPLAINED):
        raise AssertionError(f"Schema-valid request rejected: {message}")
    return None
PY

cat >"$work/schemathesis.toml" <<'TOML'
[checks.positive_data_acceptance]
expected-statuses = ["2xx", "3xx", "400", "401", "403", "404", "409", "429", "5xx"]

# Revoking a token could revoke the one this run uses (the stateful phase
# follows GET /v1/tokens to DELETE): every later operation would see only
# 401. tests/access.rs tests revocation.
[[operations]]
include-name = "DELETE /v1/tokens/{name}"
enabled = false

# follow=true streams without end: a request/response check cannot read it.
[[operations]]
include-name = "GET /v1/functions/{name}/logs"
parameters = { "query.follow" = "false" }
TOML

echo "== schemathesis $installed: $schema against $api (seed $seed, $examples examples)"
status=0
# From $work: st keeps replay files in ./.schemathesis.
(cd "$work" && SCHEMATHESIS_HOOKS="$work/hooks.py" "$st" --config-file "$work/schemathesis.toml" run "$schema" \
  --url "$api" \
  --header "Authorization: Bearer $token" \
  --checks all \
  --seed "$seed" \
  --max-examples "$examples" \
  --generation-database none \
  --request-timeout 20 \
  --workers 1 \
  --no-color) || status=$?
if [ "$status" -ne 0 ]; then
  echo "== server log (last 40 lines)"
  tail -n 40 "$work/server.log"
fi
exit "$status"
