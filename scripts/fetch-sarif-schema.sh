#!/usr/bin/env bash
# Fetch the SARIF 2.1.0 JSON schema (shipped in the npm package
# @microsoft/jest-sarif) and a Python with `jsonschema` to validate against
# it, into ${CAICLUST_FIXTURES:-<repo>/.fixtures}/sarif/. Idempotent: a
# second run does nothing. Prints the schema's path on stdout; the
# validating interpreter is <that folder>/venv/bin/python.
#
# Used by cli/tests/check_sarif.rs; run once with network access, after
# that the test works offline.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dir="${CAICLUST_FIXTURES:-$repo/.fixtures}/sarif"
schema="$dir/npm/node_modules/@microsoft/jest-sarif/lib/schemas/sarif-2.1.0-rtm.5.json"
python="$dir/venv/bin/python"

mkdir -p "$dir"
# Tests run in parallel and may all call this at once: one at a time.
exec 9>"$dir/.lock"
flock 9
if [[ ! -s "$schema" ]]; then
    npm install --silent --no-audit --no-fund --prefix "$dir/npm" @microsoft/jest-sarif >&2
fi
if [[ ! -s "$schema" ]]; then
    echo "fetch-sarif-schema: $schema missing after npm install" >&2
    exit 1
fi
if ! "$python" -c 'import jsonschema' 2>/dev/null; then
    python3 -m venv "$dir/venv" >&2
    "$python" -m pip install --quiet --disable-pip-version-check jsonschema >&2
fi
echo "$schema"
