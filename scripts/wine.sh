#!/usr/bin/env bash
# Windows under wine, for the tests that can run there (issue #16 point 5):
# Debian's wine 8 runs our x86_64-pc-windows-gnu binaries (built with
# mingw-w64) in a private wine prefix under target/.
#
#   bash scripts/wine.sh install     # wine, wine64, mingw-w64 (apt) + the rustup target
#   bash scripts/wine.sh setup       # the prefix, the ProcessPrng stub, env.sh
#   bash scripts/wine.sh smoke       # the CLI on Windows snapshots and wheels
#   bash scripts/wine.sh test [ARGS] # cargo test --workspace for Windows (skips below)
#   bash scripts/wine.sh ci          # install, setup, smoke, test; stops wine at the end
#   bash scripts/wine.sh down        # stops this prefix's wineserver (safe to repeat)
#
# Cargo then needs only the environment:
#
#   source target/wine/env.sh        # WINEPREFIX, WINEDEBUG, the cargo runner/linker
#   cargo test --target x86_64-pc-windows-gnu -p caiclust-probe
#
# The state folder is ${CAICLUST_WINE_DIR:-<repo>/target/wine}:
#
#   prefix/              WINEPREFIX: made by `wineboot -i` (no display needed,
#                        Mono and Gecko not installed), with wine's crash
#                        debugger turned off (AeDebug\Debugger emptied), so a
#                        crash ends the process with 0xC0000005 as on Windows
#   dll/                 bcryptprimitives.dll built from scripts/wine/, also
#                        copied into prefix/drive_c/windows/system32
#   env.sh               the exports above (source it)
#
# Why the stub: Rust's std takes its random bytes from ProcessPrng
# (bcryptprimitives.dll, Windows 10+); wine 8 has no such DLL, and no Rust
# Windows binary starts without it. `setup` proves the stub works by running
# a tiny Rust program that needs it (std's HashMap seeds from ProcessPrng).
#
# Builds go to the default target folder, target/x86_64-pc-windows-gnu/: the
# Linux build (target/debug) is not touched.
#
# Nothing system-wide changes for good: Debian's packages are installed
# with --no-install-recommends (no binfmt handler is registered, no service
# is started), every wine file lives in the state folder, and the prefix's
# wineserver is stopped (`wineserver -k`) when `ci` ends, whatever happens.
#
# Knobs (environment):
#   CAICLUST_WINE_DIR    the state folder (default <repo>/target/wine); give
#                        each worktree its own: one prefix has one wineserver,
#                        and `down` stops it
#   CAICLUST_SKIP_APT=1  `install` never installs (fails if missing)

set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DIR=${CAICLUST_WINE_DIR:-$REPO/target/wine}
case $DIR in /*) ;; *) DIR=$PWD/$DIR ;; esac
TARGET=x86_64-pc-windows-gnu
MINGW_GCC=x86_64-w64-mingw32-gcc

DEB_PACKAGES=(wine wine64 gcc-mingw-w64-x86-64)

# The tests that compile for Windows but cannot pass under wine are listed,
# each with its reason, in .ci/run (WINE_SKIPS), read from there; cargo
# test's --skip matches substrings of test names. Everything else of
# `cargo test --workspace --target x86_64-pc-windows-gnu` runs.
eval "$(sed -n '/^WINE_SKIPS=(/,/^)/p' "$REPO/.ci/run")"
[ "${#WINE_SKIPS[@]}" -gt 0 ] || { echo "wine.sh: no WINE_SKIPS list in .ci/run" >&2; exit 1; }

log() { printf '[wine] %s\n' "$*"; }
die() { printf '[wine] ERROR: %s\n' "$*" >&2; exit 1; }

usage() {
    sed -n '2,/^$/p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
    exit "${1:-0}"
}

wine_env() {
    export WINEPREFIX=$DIR/prefix
    export WINEDEBUG=-all
    # No Mono or Gecko installer dialog when the prefix is made or updated.
    export WINEDLLOVERRIDES="mscoree,mshtml="
    export CARGO_TARGET_X86_64_PC_WINDOWS_GNU_RUNNER=wine
    export CARGO_TARGET_X86_64_PC_WINDOWS_GNU_LINKER=$MINGW_GCC
    unset DISPLAY WAYLAND_DISPLAY
}

# ---------------------------------------------------------------------------
# install
# ---------------------------------------------------------------------------
deb_installed() {
    [ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null || true)" = installed ]
}

cmd_install() {
    local missing=() p
    for p in "${DEB_PACKAGES[@]}"; do
        deb_installed "$p" || missing+=("$p")
    done
    if [ ${#missing[@]} = 0 ]; then
        log "install: ${DEB_PACKAGES[*]} already installed"
    else
        { [ -r /etc/debian_version ] && command -v apt-get >/dev/null 2>&1; } ||
            die "install: only Debian/Ubuntu (apt) is supported; install ${DEB_PACKAGES[*]} yourself"
        [ "${CAICLUST_SKIP_APT:-0}" = 1 ] &&
            die "Debian packages missing: ${missing[*]} (and CAICLUST_SKIP_APT=1)"
        local sudo=()
        if [ "$(id -u)" != 0 ]; then
            sudo -n true 2>/dev/null || die "Debian packages missing: ${missing[*]}; run as root (or with passwordless sudo) once"
            sudo=(sudo -n)
        fi
        log "apt: installing ${missing[*]}"
        "${sudo[@]}" apt-get update -qq
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
            apt-get install -y -qq -o Dpkg::Use-Pty=0 --no-install-recommends "${missing[@]}"
    fi
    if rustup target list --installed 2>/dev/null | grep -qx "$TARGET"; then
        log "install: rustup target $TARGET already installed"
    else
        log "install: rustup target add $TARGET"
        rustup target add "$TARGET"
    fi
    log "install: done ($(wine --version 2>/dev/null || echo 'wine: ?'))"
}

require_tools() {
    local t
    for t in wine wineboot wineserver "$MINGW_GCC"; do
        command -v "$t" >/dev/null 2>&1 || die "$t not found; run: bash scripts/wine.sh install"
    done
}

# ---------------------------------------------------------------------------
# setup
# ---------------------------------------------------------------------------
cmd_setup() {
    require_tools
    wine_env
    mkdir -p "$DIR/dll"

    # The ProcessPrng stub (rebuilt when its source changes).
    local src=$REPO/scripts/wine/bcryptprimitives.c dll=$DIR/dll/bcryptprimitives.dll
    if [ ! -e "$dll" ] || [ "$src" -nt "$dll" ]; then
        log "setup: building $dll"
        "$MINGW_GCC" -shared -O2 -Wall -Werror -o "$dll.tmp" "$src" -ladvapi32
        mv -f "$dll.tmp" "$dll"
    fi

    if [ ! -e "$WINEPREFIX/system.reg" ]; then
        log "setup: wineboot -i in $WINEPREFIX"
        mkdir -p "$WINEPREFIX"
        wineboot -i >"$DIR/wineboot.log" 2>&1 || {
            tail -n 20 "$DIR/wineboot.log" >&2
            die "wineboot -i failed (log: $DIR/wineboot.log)"
        }
    fi
    # No crash dialog, no winedbg: an access violation ends the process
    # with its NTSTATUS as exit code, as on Windows without a debugger.
    wine reg add 'HKLM\Software\Microsoft\Windows NT\CurrentVersion\AeDebug' \
        /v Debugger /t REG_SZ /d '' /f >/dev/null 2>&1 ||
        die "cannot empty AeDebug\\Debugger in $WINEPREFIX"
    wine reg add 'HKLM\Software\Microsoft\Windows NT\CurrentVersion\AeDebug' \
        /v Auto /t REG_SZ /d 0 /f >/dev/null 2>&1 || true
    cp -f "$dll" "$WINEPREFIX/drive_c/windows/system32/bcryptprimitives.dll"
    # The registry is written when the wineserver ends.
    wineserver -w

    cat >"$DIR/env.sh.tmp" <<EOF
# Written by scripts/wine.sh setup: source it to run Windows binaries (and
# cargo test --target $TARGET) in this prefix.
export WINEPREFIX='$WINEPREFIX'
export WINEDEBUG=-all
export WINEDLLOVERRIDES='mscoree,mshtml='
export CARGO_TARGET_X86_64_PC_WINDOWS_GNU_RUNNER=wine
export CARGO_TARGET_X86_64_PC_WINDOWS_GNU_LINKER=$MINGW_GCC
unset DISPLAY WAYLAND_DISPLAY
EOF
    mv -f "$DIR/env.sh.tmp" "$DIR/env.sh"
    proof
    log "setup: done; source $DIR/env.sh"
}

# A Rust program that needs ProcessPrng (std's HashMap seeds its hasher
# from it) starts and prints: the stub is found and works.
proof() {
    local p=$DIR/proof
    mkdir -p "$p"
    cat >"$p/proof.rs" <<'EOF'
fn main() {
    let mut m = std::collections::HashMap::new();
    m.insert("ProcessPrng", 1);
    println!("proof: rust std started under wine ({} entry)", m.len());
}
EOF
    if [ ! -e "$p/proof.exe" ] || [ "$p/proof.rs" -nt "$p/proof.exe" ]; then
        rustc --edition 2021 --target "$TARGET" -C linker="$MINGW_GCC" \
            -o "$p/proof.exe" "$p/proof.rs"
    fi
    local out
    out=$(wine "$p/proof.exe" 2>&1) || die "the proof program failed under wine: $out"
    grep -q '^proof: rust std started' <<<"$out" || die "the proof program printed: $out"
    log "setup: ${out#proof: }"
}

# ---------------------------------------------------------------------------
# down
# ---------------------------------------------------------------------------
cmd_down() {
    wine_env
    [ -d "$WINEPREFIX" ] || return 0
    command -v wineserver >/dev/null 2>&1 || return 0
    wineserver -k 2>/dev/null || true
}

# ---------------------------------------------------------------------------
# smoke and test
# ---------------------------------------------------------------------------
cmd_smoke() {
    require_tools
    wine_env
    bash "$REPO/scripts/wine-smoke.sh" "$@"
}

cmd_test() {
    require_tools
    wine_env
    local skips=() s
    for s in "${WINE_SKIPS[@]}"; do
        skips+=(--skip "${s%%|*}")
        log "test: skipped under wine: ${s%%|*} (${s#*|})"
    done
    cd "$REPO"
    cargo test --workspace --target "$TARGET" "$@" -- "${skips[@]}"
}

cmd_ci() {
    cmd_install
    trap cmd_down EXIT
    cmd_setup
    local t0=$SECONDS
    cmd_smoke
    cmd_test
    log "ci: smoke and tests took $((SECONDS - t0)) s"
}

case ${1:-} in
    install) shift; cmd_install ;;
    setup) shift; cmd_setup ;;
    smoke) shift; cmd_smoke "$@" ;;
    test) shift; cmd_test "$@" ;;
    ci) shift; cmd_ci ;;
    down) shift; cmd_down ;;
    -h | --help | help) usage 0 ;;
    *) usage 2 >&2 ;;
esac
