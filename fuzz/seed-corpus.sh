#!/usr/bin/env bash
# Seeds fuzz/corpus/fingerprint_file/ with real binaries from the test
# fixtures (scripts/setup-test-envs.sh builds them): ELF from the PyPI venv,
# PE from the Windows wheels, thin and fat Mach-O from the macOS wheels.
# Large libraries are cut to their first 64 KiB (headers, load commands,
# section tables); small extension modules are copied whole so the fuzzer
# also starts from inputs that parse completely.
#
# Usage: fuzz/seed-corpus.sh            (idempotent; fuzz/corpus is git-ignored)
# Env:   CAICLUST_FIXTURES  fixtures folder (default: <workspace>/.fixtures)
#        SEED_MAX_BYTES     cut larger files to this many bytes (default 65536)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
fixtures="${CAICLUST_FIXTURES:-$root/.fixtures}"
case "$fixtures" in /*) ;; *) fixtures="$root/$fixtures" ;; esac
max="${SEED_MAX_BYTES:-65536}"
out="$here/corpus/fingerprint_file"
site="$(ls -d "$fixtures"/venv-pypi/lib/python3*/site-packages 2>/dev/null | head -n1 || true)"
wheels="$fixtures/wheels"

if [ -z "$site" ] || [ ! -d "$wheels" ]; then
    echo "seed-corpus.sh: no fixtures in $fixtures; run scripts/setup-test-envs.sh first" >&2
    exit 1
fi
mkdir -p "$out"

copied=0
# add <tag> <glob...>: for each glob, copy the first matching file to
# corpus/<tag>-<name>, cut to $max bytes. Missing files are skipped.
add() {
    local tag="$1"
    shift
    local pattern file
    for pattern in "$@"; do
        # shellcheck disable=SC2086  # the pattern is a glob on purpose
        for file in $pattern; do
            [ -f "$file" ] || continue
            head -c "$max" "$file" >"$out/$tag-$(basename "$file")"
            copied=$((copied + 1))
            break
        done
    done
}

# ELF (Linux x86_64): OpenBLAS, libgfortran, libquadmath, libgomp (cut);
# small extension modules (whole).
add elf \
    "$site/numpy.libs/libscipy_openblas64_-*.so" \
    "$site/numpy.libs/libquadmath-*.so*" \
    "$site/scipy.libs/libscipy_openblas-*.so" \
    "$site/scipy.libs/libgfortran-*.so*" \
    "$site/scikit_learn.libs/libgomp-*.so*" \
    "$site/scipy/_lib/_fpumode.cpython-*.so" \
    "$site/numpy/_core/_struct_ufunc_tests.cpython-*.so"

# PE (Windows amd64): OpenBLAS DLLs, MSVC's OpenMP, cv2.pyd (cut);
# small .pyd (whole).
add pe \
    "$wheels/numpy-win-amd64/numpy.libs/libscipy_openblas64_-*.dll" \
    "$wheels/scipy-win-amd64/scipy.libs/libscipy_openblas-*.dll" \
    "$wheels/sklearn-win-amd64/sklearn/.libs/vcomp140.dll" \
    "$wheels/opencv-win-amd64/cv2/cv2.pyd" \
    "$wheels/numpy-win-amd64/numpy/_core/_rational_tests.cp311-win_amd64.pyd" \
    "$wheels/scipy-win-amd64/scipy/_lib/_fpumode.cp311-win_amd64.pyd"

# Mach-O: OpenBLAS dylibs (arm64 and x86_64 share a file name, the tag
# tells them apart), libomp, cv2 (cut); small bundles (whole); the fat
# (universal2) MarkupSafe module whole (67 KB: both slices).
add macho-arm64 "$wheels/numpy-macos-arm64-openblas/numpy/.dylibs/libscipy_openblas64_.dylib"
add macho-x86_64 "$wheels/numpy-macos-x86_64-openblas/numpy/.dylibs/libscipy_openblas64_.dylib"
add macho \
    "$wheels/sklearn-macos-arm64/sklearn/.dylibs/libomp.dylib" \
    "$wheels/opencv-macos-arm64/cv2/cv2.abi3.so" \
    "$wheels/numpy-macos-x86_64-openblas/numpy/_core/_struct_ufunc_tests.cpython-*-darwin.so" \
    "$wheels/numpy-macos-arm64-accelerate/numpy/linalg/lapack_lite.cpython-*-darwin.so"
max=$((max > 131072 ? max : 131072)) add macho-fat \
    "$wheels/markupsafe-macos-universal2/markupsafe/_speedups.cpython-*-darwin.so"

echo "seed-corpus.sh: $copied files (cut to $max bytes) in $out"
