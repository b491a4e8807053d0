#!/usr/bin/env bash
# The Windows CLI under wine, on real Windows data (issue #16 point 5):
# `caiclust --help`, `rules`, `explain`; `caiclust-check --facts` on every
# Windows facts snapshot, whose verdict, findings and exit code must equal
# the Linux build's; `caiclust probe --tree` on the real Windows wheels of
# the fixtures (numpy, scipy, scikit-learn, OpenCV), with plain paths (no
# `\\?\`) and the DLLs' own file names.
#
#   bash scripts/wine.sh smoke       # (runs this with the prefix's environment)
#
# Needs scripts/wine.sh setup (the prefix) and the fixtures
# (scripts/setup-test-envs.sh) for the wheels.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
FIX=${CAICLUST_FIXTURES:-$REPO/.fixtures}
TARGET=x86_64-pc-windows-gnu
WIN_BIN=$REPO/target/$TARGET/debug
LINUX_BIN=$REPO/target/debug
[ -n "${WINEPREFIX:-}" ] || { echo "smoke: no WINEPREFIX: run it as bash scripts/wine.sh smoke" >&2; exit 2; }

log() { printf '[wine smoke] %s\n' "$*"; }
fail() { printf '[wine smoke] FAILED: %s\n' "$*" >&2; exit 1; }

log "building the Windows and Linux binaries"
cargo build -q -p caiclust-cli --bins --target "$TARGET"
cargo build -q -p caiclust-cli --bins

# A Windows path for an argument (Z: is the Unix root in a wine prefix).
winpath() { winepath -w "$1" 2>/dev/null; }

# Runs a Windows binary, its stdout in $OUT, its exit code in $RC.
run_win() {
    local exe=$1
    shift
    set +e
    OUT=$(wine "$WIN_BIN/$exe.exe" "$@" 2>"$REPO/target/wine/smoke.err")
    RC=$?
    set -e
}

run_win caiclust --help
[ "$RC" = 0 ] || fail "caiclust --help exited $RC"
grep -q '^Usage: caiclust' <<<"$OUT" || fail "caiclust --help printed no usage"
log "caiclust --help: ok"

run_win caiclust rules
[ "$RC" = 0 ] || fail "caiclust rules exited $RC"
grep -q 'CC001' <<<"$OUT" || fail "caiclust rules does not list CC001"
log "caiclust rules: ok ($(grep -c '^CC' <<<"$OUT" || true) rules)"

run_win caiclust explain CC001
[ "$RC" = 0 ] || fail "caiclust explain CC001 exited $RC"
[ "$OUT" = "$("$LINUX_BIN/caiclust" explain CC001)" ] || fail "caiclust explain CC001 differs from Linux"
log "caiclust explain CC001: ok (same text as on Linux)"

# The verdict, the findings' codes and the exit code of a facts file.
summary() {
    python3 -c '
import json, sys
d = json.load(sys.stdin)
v = d["verdict"]
print(json.dumps({
    "denied": d["denied"],
    "findings": sorted(f["rule_id"] + ":" + f["level"] for f in d["findings"]),
    "start_method": v["start_method"],
    "safe": v["safe_start_methods"],
    "workers": v["workers"],
    "env_fix": v["env_fix"],
}, sort_keys=True))'
}

facts_files=(rules/tests/snapshots/windows-*.facts.json rules/tests/snapshots/*-windows.facts.json cli/tests/data/check-numpy-windows.json)
for f in "${facts_files[@]}"; do
    run_win caiclust-check --facts "$(winpath "$REPO/$f")" --format json
    [ "$RC" -le 1 ] || fail "caiclust-check --facts $f exited $RC: $(cat "$REPO/target/wine/smoke.err")"
    win=$(summary <<<"$OUT") || fail "caiclust-check --facts $f: not JSON"
    set +e
    lin_out=$("$LINUX_BIN/caiclust-check" --facts "$f" --format json)
    lin_rc=$?
    set -e
    lin=$(summary <<<"$lin_out")
    [ "$RC" = "$lin_rc" ] || fail "caiclust-check --facts $f: exit $RC under wine, $lin_rc on Linux"
    [ "$win" = "$lin" ] || fail "caiclust-check --facts $f: wine says $win, Linux says $lin"
    log "caiclust-check --facts $f: exit $RC, as on Linux"
done

for w in numpy-win-amd64 scipy-win-amd64 sklearn-win-amd64 opencv-win-amd64; do
    dir=$FIX/wheels/$w
    [ -d "$dir" ] || fail "no fixture wheel $dir: run scripts/setup-test-envs.sh"
    run_win caiclust probe --tree "$(winpath "$dir")" --json
    [ "$RC" = 0 ] || fail "caiclust probe --tree $w exited $RC: $(cat "$REPO/target/wine/smoke.err")"
    python3 -c '
import json, sys
name, text = sys.argv[1], sys.stdin.read()
d = json.loads(text)
assert d["target_os"] == "windows", d["target_os"]
assert d["libraries"], "no library found"
assert "\\\\?\\" not in text, "a verbatim \\\\?\\ path is shown"
if name.startswith("sklearn"):
    files = [l["path"].replace("\\", "/").rsplit("/", 1)[-1] for l in d["libraries"]]
    assert "vcomp140.dll" in files, files
print(len(d["libraries"]), "libraries")
' "$w" <<<"$OUT" >"$REPO/target/wine/smoke.check" 2>&1 ||
        fail "caiclust probe --tree $w: $(cat "$REPO/target/wine/smoke.check")"
    log "caiclust probe --tree $w: ok ($(cat "$REPO/target/wine/smoke.check"))"
done

log "all smoke checks passed"
