#!/usr/bin/env bash
# The project's one test command: builds the fixture environments (idempotent,
# about a second when already built), then runs every test of the workspace,
# then the Python package's tests on its freshly built wheel
# (scripts/test-python.sh).
#
#   bash scripts/test.sh [extra cargo test arguments, e.g. -- --nocapture]
#
# Fails when the setup fails: the integration tests never skip for want of
# fixtures.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"

echo "=== scripts/setup-test-envs.sh"
bash "$REPO/scripts/setup-test-envs.sh"

FIX=${CAICLUST_FIXTURES:-$REPO/.fixtures}
# shellcheck source=/dev/null
source "$FIX/env.sh"

# A real Slurm cluster (two nodes, each a network namespace) and two real
# SSH hosts (sshd in network namespaces) for the ipyparallel backend's
# tests (issue #15): Debian's packages, private configuration and keys
# under target/, taken down again when the tests end, whatever happens.
echo "=== scripts/slurm.sh and scripts/ssh-hosts.sh"
bash "$REPO/scripts/slurm.sh" install
bash "$REPO/scripts/ssh-hosts.sh" install
services_down() {
    bash "$REPO/scripts/ssh-hosts.sh" down || true
    bash "$REPO/scripts/slurm.sh" down || true
}
trap services_down EXIT
bash "$REPO/scripts/slurm.sh" up --nodes 2
bash "$REPO/scripts/ssh-hosts.sh" up
# shellcheck source=/dev/null
source "$REPO/target/slurm/env.sh"
# shellcheck source=/dev/null
source "$REPO/target/ssh-hosts/env.sh"

# caiclust's own caches (interpreter answers, scans, the worker's code)
# for this run only: nothing left in the user's ~/.cache.
export CAICLUST_CACHE_DIR=$REPO/target/test-cache
rm -rf "$CAICLUST_CACHE_DIR"

echo "=== cargo test --workspace"
cargo test --workspace "$@"

# The verdict table (issue #14): every fixture script of tests/verdicts/
# run for real under each start method, against caiclust-check's verdict
# (the debug binary cargo test built); fails unless precision and recall
# are 1.0.
echo "=== scripts/verdicts.py"
python3 "$REPO/scripts/verdicts.py" --check "$REPO/target/debug/caiclust-check" \
    --markdown "$REPO/target/verdicts/VERDICTS.md"

echo "=== scripts/test-python.sh"
bash "$REPO/scripts/test-python.sh"
