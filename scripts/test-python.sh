#!/usr/bin/env bash
# The Python package's tests, on the wheel as a user installs it:
#   1. maturin (from .fixtures/venv-tools) builds the release wheel;
#   2. a fresh venv (target/py-test/venv, made anew each run) gets the wheel
#      and the test dependencies from PyPI (numpy, scipy, scikit-learn,
#      joblib, pytest, ipyparallel);
#   3. pytest runs python/tests there, from a folder outside the source
#      tree, so `import caiclust` is the installed package; the wheel's
#      commands are compared with the native ones (cargo build --release).
#
#   bash scripts/test-python.sh [pytest arguments, e.g. -k faults -x]
#
# Run by scripts/test.sh after the Rust tests; needs the fixtures
# (scripts/setup-test-envs.sh).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
FIX=${CAICLUST_FIXTURES:-$REPO/.fixtures}
PY=${CAICLUST_PYTHON:-python3}
OUT=$REPO/target/py-test
WHEELS=$OUT/wheels
VENV=$OUT/venv
TEST_PACKAGES=(numpy scipy scikit-learn joblib pytest ipyparallel)

log() { printf '[test-python] %s\n' "$*"; }

log "maturin build --release"
rm -rf "$WHEELS"
"$FIX/venv-tools/bin/maturin" build --release --quiet -o "$WHEELS" --interpreter "$(command -v "$PY")"
WHEEL=$(ls "$WHEELS"/caiclust-*.whl)
log "built $(basename "$WHEEL") ($(du -h "$WHEEL" | cut -f1))"

# The native programs, which the wheel's commands are compared with.
log "cargo build --release -p caiclust-cli"
cargo build --release --quiet -p caiclust-cli --bins
export CAICLUST_CARGO_BIN_DIR=$REPO/target/release

log "fresh venv at $VENV"
rm -rf "$VENV"
"$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$WHEEL" "${TEST_PACKAGES[@]}"

# Nothing of the source tree may shadow the installed package.
cd "$OUT"
log "pytest python/tests"
"$VENV/bin/python" -m pytest -p no:cacheprovider -q "$REPO/python/tests" "$@"
