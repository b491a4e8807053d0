#!/usr/bin/env bash
# Builds every real environment that caiclust's integration tests need.
#
#   bash scripts/setup-test-envs.sh
#
# Everything goes under ${CAICLUST_FIXTURES:-<repo>/.fixtures} (git-ignored):
#
#   venv-pypi/              CPython venv with PyPI numpy, scipy, scikit-learn,
#                           opencv-python-headless, threadpoolctl
#   venv-ml/                CPython venv with PyPI scikit-learn, lightgbm,
#                           xgboost, threadpoolctl (issue #14's verdicts)
#   venv-numpy1/            CPython venv with PyPI numpy<2, threadpoolctl,
#                           opencv-python-headless 4.10
#   venv-tf/                CPython venv with PyPI tensorflow-cpu (its own
#                           intra-op pool, issue #14's verdicts)
#   venv-torch/             CPython venv with PyPI torch (Linux x86_64: its
#                           bundled GNU OpenMP, and the CUDA runtime wheels it
#                           requires; no GPU is used), issue #14's verdicts
#   venv-ipp/               CPython venv with PyPI ipyparallel, numpy,
#                           scikit-learn (the ipyparallel backend's tests)
#   venv-tools/             ruff, for .ci/run's lint of the Python files; maturin,
#                           which builds the Python package's wheel
#   wheels/<name>/          one unpacked foreign wheel per folder (macOS,
#                           Windows), to be probed statically, each on its own
#   downloads/<name>/       the downloaded .whl files (cache)
#   stamps/                 what was built, so reruns skip it
#   env.sh                  exports CAICLUST_* paths (source it)
#   manifest.json           the same paths, read by tests/src/lib.rs
#
# On Debian/Ubuntu it also installs the Debian packages the tests use (as root,
# or through passwordless sudo). It changes nothing else on the machine: the
# libblas.so.3/liblapack.so.3 alternatives stay as they are (a test that
# needs one BLAS build puts its folder, e.g. /usr/lib/<triplet>/openblas-openmp,
# in LD_LIBRARY_PATH for its own processes).
#
# Idempotent: a rerun checks stamps and does (almost) nothing. Any failure
# exits non-zero: the tests must fail rather than skip when a fixture is
# missing.
#
# Knobs (environment):
#   CAICLUST_FIXTURES      where to build (default <repo>/.fixtures)
#   CAICLUST_PYTHON        interpreter for venv-pypi (default: python3 on PATH)
#   CAICLUST_SKIP_APT=1    never install Debian packages (then they must
#                          already be there, or the script fails)

set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
FIX=${CAICLUST_FIXTURES:-$REPO/.fixtures}
mkdir -p "$FIX"
FIX=$(cd "$FIX" && pwd)
STAMPS=$FIX/stamps
WHEELS=$FIX/wheels
DOWNLOADS=$FIX/downloads
VENV=$FIX/venv-pypi
VENV_NUMBA=$FIX/venv-numba
VENV_MKL=$FIX/venv-mkl
VENV_NUMPY=$FIX/venv-numpy
VENV_IPP=$FIX/venv-ipp
mkdir -p "$STAMPS" "$WHEELS" "$DOWNLOADS"

# Python version the foreign wheels are fetched for.
WHEEL_PY=3.11
# Wheels bigger than this are skipped (bytes).
MAX_WHEEL_BYTES=$((120 * 1024 * 1024))

# Packages of the PyPI venv (unpinned on purpose; the versions installed are
# recorded in manifest.json).
VENV_PACKAGES=(numpy scipy scikit-learn opencv-python-headless threadpoolctl)
# A second venv for numba's threading layers: numba, and PyPI tbb (whose
# libtbb.so.12 lands in the venv's lib folder, where numba's tbbpool does
# not look).
VENV_NUMBA_PACKAGES=(numba tbb)
# A third for Intel MKL: the PyPI mkl wheel (libmkl_rt.so in <venv>/lib,
# Intel OpenMP from intel-openmp) and threadpoolctl as the oracle.
VENV_MKL_PACKAGES=(mkl threadpoolctl)
# And one with numpy alone (pthreads OpenBLAS, no OpenMP anywhere).
VENV_NUMPY_PACKAGES=(numpy)
# And two for the verdicts on environments the other fixtures do not cover
# (issue #14): machine-learning packages that load or bundle GNU OpenMP in
# other ways than scikit-learn (LightGBM's ctypes-loaded library needs the
# system libgomp.so.1; xgboost bundles the same hash-renamed libgomp as
# scikit-learn, one SONAME), and numpy 1.x with OpenCV 4.10, whose bundled
# OpenBLAS builds find the libgfortran beside them only because that
# SONAME is already loaded (no RUNPATH).
VENV_ML=$FIX/venv-ml
VENV_ML_PACKAGES=(scikit-learn lightgbm xgboost threadpoolctl)
VENV_NUMPY1=$FIX/venv-numpy1
VENV_NUMPY1_PACKAGES=("numpy<2" threadpoolctl "opencv-python-headless==4.10.0.84")
# And TensorFlow's CPU build: a framework whose own (Eigen, not OpenMP)
# thread pool hangs forked workers once the parent has run an operation.
VENV_TF=$FIX/venv-tf
VENV_TF_PACKAGES=(tensorflow-cpu threadpoolctl)
# And PyTorch as PyPI ships it for Linux x86_64 (about 5 GB with the NVIDIA
# runtime wheels it requires; pip's cache keeps later runs quick): its
# intra-op pool is the GNU OpenMP its wheel bundles, and CUDA is installed
# but never initialised here (no GPU).
VENV_TORCH=$FIX/venv-torch
VENV_TORCH_PACKAGES=("torch==2.5.1" numpy threadpoolctl)
# And one for the ipyparallel backend: a controller and engines from PyPI,
# with the hazard workload's numpy and scikit-learn.
VENV_IPP_PACKAGES=(ipyparallel numpy scikit-learn)
# And one for the project's own Python tooling: ruff, the linter .ci/run
# runs over every Python file of the repository.
VENV_TOOLS=$FIX/venv-tools
VENV_TOOLS_PACKAGES=(ruff "maturin>=1.5,<2")

# Debian packages: BLAS flavours for the system numpy, a C compiler for
# OpenMP test programs, venv support, threadpoolctl for the system python,
# hyperfine for benchmarks.
DEB_PACKAGES=(python3-numpy python3-threadpoolctl libopenblas0-openmp
    libopenblas0-pthread libopenblas0-serial libblis4-openmp libblis4-pthread python3-venv gcc
    hyperfine parallel)

# Foreign wheels: folder name | PyPI package | pip --platform | a path (glob)
# that must exist in the unpacked wheel.
WHEEL_SPECS=(
    # numpy >= 2 for macOS 14 arm64 links Accelerate (cblas_*$NEWLAPACK$ILP64).
    "numpy-macos-arm64-accelerate|numpy|macosx_14_0_arm64|numpy/_core/_multiarray_umath.cpython-*-darwin.so"
    # numpy for macOS 11 arm64 bundles OpenBLAS (ILP64) in numpy/.dylibs.
    "numpy-macos-arm64-openblas|numpy|macosx_11_0_arm64|numpy/.dylibs/libscipy_openblas64_.dylib"
    # numpy for Intel macOS (10.x tag) bundles OpenBLAS (ILP64) in numpy/.dylibs.
    "numpy-macos-x86_64-openblas|numpy|macosx_10_13_x86_64|numpy/.dylibs/libscipy_openblas64_.dylib"
    # numpy for Windows: numpy.libs/libscipy_openblas64_-<hash>.dll (delvewheel).
    "numpy-win-amd64|numpy|win_amd64|numpy.libs/libscipy_openblas64_-*.dll"
    # scipy for macOS 14 arm64 links Accelerate (LP64, *$NEWLAPACK).
    "scipy-macos-arm64-accelerate|scipy|macosx_14_0_arm64|scipy/linalg/_fblas.cpython-*-darwin.so"
    # scipy for macOS 12 arm64 bundles OpenBLAS (LP64) in scipy/.dylibs.
    "scipy-macos-arm64-openblas|scipy|macosx_12_0_arm64|scipy/.dylibs/libscipy_openblas.dylib"
    # scipy for Windows: scipy.libs/libscipy_openblas-<hash>.dll.
    "scipy-win-amd64|scipy|win_amd64|scipy.libs/libscipy_openblas-*.dll"
    # scikit-learn for Windows: MSVC OpenMP in sklearn/.libs/vcomp140.dll.
    "sklearn-win-amd64|scikit-learn|win_amd64|sklearn/.libs/vcomp140.dll"
    # scikit-learn for macOS arm64: LLVM OpenMP in sklearn/.dylibs/libomp.dylib.
    "sklearn-macos-arm64|scikit-learn|macosx_14_0_arm64|sklearn/.dylibs/libomp.dylib"
    # OpenCV for Windows: one big cv2/cv2.pyd (parallel framework Concurrency).
    "opencv-win-amd64|opencv-python-headless|win_amd64|cv2/cv2.pyd"
    # OpenCV for macOS arm64: cv2/cv2.abi3.so + cv2/.dylibs (GCD, Accelerate).
    "opencv-macos-arm64|opencv-python-headless|macosx_14_0_arm64|cv2/cv2.abi3.so"
    # A universal2 (fat x86_64 + arm64) Mach-O extension module.
    "markupsafe-macos-universal2|markupsafe|macosx_10_9_universal2|markupsafe/_speedups.cpython-*-darwin.so"
)

log() { printf '[setup-test-envs] %s\n' "$*"; }
die() { printf '[setup-test-envs] ERROR: %s\n' "$*" >&2; exit 1; }

# One run at a time per fixtures folder.
if command -v flock >/dev/null 2>&1; then
    exec 9>"$FIX/.lock"
    flock 9
fi

START=$(date +%s)
log "fixtures folder: $FIX"

# ---------------------------------------------------------------------------
# 1. Debian packages
# ---------------------------------------------------------------------------
SUDO=()
can_admin() {
    if [ "$(id -u)" = 0 ]; then
        SUDO=()
        return 0
    fi
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        SUDO=(sudo -n)
        return 0
    fi
    return 1
}

deb_installed() {
    [ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null || true)" = installed ]
}

alt_value() {
    update-alternatives --query "$1" 2>/dev/null | sed -n 's/^Value: //p'
}

alt_status() {
    update-alternatives --query "$1" 2>/dev/null | sed -n 's/^Status: //p'
}

MULTIARCH=""
DEBIAN_PYTHON=""
OPENBLAS_PTHREAD_DIR=""
OPENBLAS_OPENMP_DIR=""

if [ -r /etc/debian_version ] && command -v dpkg-query >/dev/null 2>&1; then
    missing=()
    for p in "${DEB_PACKAGES[@]}"; do
        deb_installed "$p" || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        [ "${CAICLUST_SKIP_APT:-0}" = 1 ] &&
            die "Debian packages missing: ${missing[*]} (and CAICLUST_SKIP_APT=1)"
        can_admin || die "Debian packages missing: ${missing[*]}; run as root (or with passwordless sudo) once"
        log "apt: installing ${missing[*]}"
        "${SUDO[@]}" apt-get update -qq
        "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
            apt-get install -y -qq -o Dpkg::Use-Pty=0 --no-install-recommends "${missing[@]}"
    else
        log "apt: all ${#DEB_PACKAGES[@]} Debian packages already installed"
    fi

    if command -v dpkg-architecture >/dev/null 2>&1; then
        MULTIARCH=$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || true)
    fi
    if [ -z "$MULTIARCH" ] && command -v gcc >/dev/null 2>&1; then
        MULTIARCH=$(gcc -print-multiarch)
    fi
    [ -n "$MULTIARCH" ] || die "cannot tell the multiarch triplet (dpkg-architecture, gcc -print-multiarch)"

    OPENBLAS_OPENMP_DIR=/usr/lib/$MULTIARCH/openblas-openmp
    OPENBLAS_PTHREAD_DIR=/usr/lib/$MULTIARCH/openblas-pthread
    # Both builds must be there: tests pick one per process with
    # LD_LIBRARY_PATH. The folder holds all three libraries of a build
    # (libblas.so.3 and liblapack.so.3 are thin wrappers that NEED
    # libopenblas.so.0), so the process never mixes builds.
    for lib in libblas.so.3 liblapack.so.3 libopenblas.so.0; do
        for dir in "$OPENBLAS_OPENMP_DIR" "$OPENBLAS_PTHREAD_DIR"; do
            [ -e "$dir/$lib" ] || die "$dir/$lib not found (are libopenblas0-openmp and libopenblas0-pthread installed?)"
        done
        # Older versions of this script pointed these alternatives at the
        # OpenMP build by hand (update-alternatives --set), for every
        # program on the machine. This one leaves them alone and says how
        # to give Debian its own choice back.
        name=$lib-$MULTIARCH
        if [ "$(alt_status "$name")" = manual ] &&
            [ "$(alt_value "$name")" = "$OPENBLAS_OPENMP_DIR/$lib" ]; then
            log "note: alternative $name is set by hand to $OPENBLAS_OPENMP_DIR/$lib" \
                "(older versions of this script did that; the tests no longer need it):" \
                "'update-alternatives --auto $name' restores Debian's choice"
        fi
    done

    DEBIAN_PYTHON=/usr/bin/python3
    "$DEBIAN_PYTHON" -c 'import numpy, threadpoolctl' ||
        die "$DEBIAN_PYTHON cannot import numpy and threadpoolctl"
else
    die "not a Debian/Ubuntu system: the Linux fixtures need Debian's python3-numpy and OpenBLAS"
fi

# ---------------------------------------------------------------------------
# 2. The PyPI venv
# ---------------------------------------------------------------------------
PY=${CAICLUST_PYTHON:-python3}
command -v "$PY" >/dev/null 2>&1 || die "no $PY on PATH"
# The real interpreter (not a pyenv shim) and its version.
PY=$("$PY" -c 'import sys; print(sys.executable)')
PY_VERSION=$("$PY" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])')
# build_venv NAME DIR CHECK PACKAGES...: a venv at DIR with PACKAGES from
# PyPI, rebuilt only when the interpreter or the package list changed (the
# stamp's first line), checked by the shell command CHECK (run with $1 set
# to the venv's python). The stamp also records `pip freeze` for the
# manifest.
build_venv() {
    local name=$1 dir=$2 check=$3
    shift 3
    local stamp=$STAMPS/$name
    local want="python=$PY python_version=$PY_VERSION packages=$*"
    if [ -x "$dir/bin/python" ] && [ -f "$stamp" ] &&
        [ "$(head -n 1 "$stamp")" = "$want" ]; then
        log "$name: up to date ($PY_VERSION, $*)"
        return
    fi
    log "$name: creating with $PY ($PY_VERSION)"
    rm -f "$stamp"
    rm -rf "$dir"
    "$PY" -m venv "$dir"
    log "$name: pip install $*"
    "$dir/bin/python" -m pip install --quiet --disable-pip-version-check "$@"
    bash -c "$check" check "$dir/bin/python" || die "$name: check failed: $check"
    {
        echo "$want"
        "$dir/bin/python" -m pip freeze --disable-pip-version-check
    } >"$stamp.tmp"
    mv "$stamp.tmp" "$stamp"
    log "$name: done"
}

# The checks are shell code run later with $1 bound: single quotes on purpose.
# shellcheck disable=SC2016
build_venv venv-pypi "$VENV" \
    '"$1" -c "import numpy, scipy, sklearn, cv2, threadpoolctl"' "${VENV_PACKAGES[@]}"
# shellcheck disable=SC2016
build_venv venv-numba "$VENV_NUMBA" '"$1" -c "import numba"' "${VENV_NUMBA_PACKAGES[@]}"
# shellcheck disable=SC2016
build_venv venv-mkl "$VENV_MKL" \
    'ls "$(dirname "$(dirname "$1")")"/lib/libmkl_rt.so* >/dev/null' "${VENV_MKL_PACKAGES[@]}"
# shellcheck disable=SC2016
build_venv venv-numpy "$VENV_NUMPY" '"$1" -c "import numpy"' "${VENV_NUMPY_PACKAGES[@]}"
# shellcheck disable=SC2016
build_venv venv-ml "$VENV_ML" '"$1" -c "import sklearn, lightgbm, xgboost, threadpoolctl"' \
    "${VENV_ML_PACKAGES[@]}"
# shellcheck disable=SC2016
build_venv venv-numpy1 "$VENV_NUMPY1" '"$1" -c "import numpy, cv2, threadpoolctl"' \
    "${VENV_NUMPY1_PACKAGES[@]}"
# shellcheck disable=SC2016
build_venv venv-tf "$VENV_TF" '"$1" -c "import tensorflow, threadpoolctl"' "${VENV_TF_PACKAGES[@]}"
# shellcheck disable=SC2016
build_venv venv-torch "$VENV_TORCH" '"$1" -c "import torch, numpy, threadpoolctl"' \
    "${VENV_TORCH_PACKAGES[@]}"
# shellcheck disable=SC2016
build_venv venv-ipp "$VENV_IPP" \
    '"$1" -c "import ipyparallel, numpy, sklearn" && [ -x "$(dirname "$1")/ipcluster" ]' \
    "${VENV_IPP_PACKAGES[@]}"
# shellcheck disable=SC2016
build_venv venv-tools "$VENV_TOOLS" '"$(dirname "$1")/ruff" --version && "$(dirname "$1")/maturin" --version' "${VENV_TOOLS_PACKAGES[@]}"

# The SARIF 2.1.0 schema and a validator, for the --format sarif tests.
log "sarif schema: $(CAICLUST_FIXTURES="$FIX" bash "$(dirname "${BASH_SOURCE[0]}")/fetch-sarif-schema.sh")"

# ---------------------------------------------------------------------------
# 3. Foreign wheels
# ---------------------------------------------------------------------------
# The version of PyPI package $1 installed in the PyPI venv (from its
# stamp's `pip freeze`); empty when it is not installed there.
venv_pypi_version() {
    sed -n "s/^$1==//Ip" "$STAMPS/venv-pypi" 2>/dev/null | head -n 1
}

# A wheel of a package the PyPI venv also has is fetched for the venv's
# version of it, so that tests can compare the foreign build with the Linux
# one of the same release (threadpoolctl is the oracle there).
fetch_wheel() {
    local name=$1 pkg=$2 platform=$3 expect=$4
    local dest=$WHEELS/$name dl=$DOWNLOADS/$name stamp=$STAMPS/wheel-$name
    local version spec=$pkg
    version=$(venv_pypi_version "$pkg")
    [ -z "$version" ] || spec="$pkg==$version"
    # The venv's version is part of what was asked for: a new venv fetches
    # again (whether that release or, without one for the platform, the
    # newest).
    local want="package=$pkg platform=$platform python=$WHEEL_PY expect=$expect venv=${version:-none}"

    if [ -d "$dest" ] && [ -f "$stamp" ] && [ "$(head -n 1 "$stamp")" = "$want" ]; then
        log "wheel $name: up to date ($(sed -n 2p "$stamp"))"
        return 0
    fi
    rm -f "$stamp"
    mkdir -p "$dl"
    log "wheel $name: pip download $spec --platform $platform --python-version $WHEEL_PY"
    rm -f "$dl"/*.whl
    local pip_dl=("$VENV/bin/python" -m pip download --quiet --disable-pip-version-check
        --no-deps --only-binary=:all: --platform "$platform" --python-version "$WHEEL_PY" -d "$dl")
    if ! "${pip_dl[@]}" "$spec"; then
        # The venv's release has no wheel for that platform (a project may
        # publish platforms apart): the newest that has one. Tests that
        # compare releases say so when they differ.
        [ "$spec" != "$pkg" ] || die "wheel $name: pip download $pkg failed"
        log "wheel $name: no $spec for $platform; taking the newest $pkg there"
        "${pip_dl[@]}" "$pkg"
    fi
    local whl
    whl=$(find "$dl" -maxdepth 1 -name '*.whl' | head -n 1)
    [ -n "$whl" ] || die "wheel $name: pip download produced no .whl"
    local size
    size=$(stat -c %s "$whl")
    if [ "$size" -gt "$MAX_WHEEL_BYTES" ]; then
        log "wheel $name: $(basename "$whl") is $((size / 1048576)) MB > $((MAX_WHEEL_BYTES / 1048576)) MB: skipped"
        rm -rf "$dest" "$dl"
        return 0
    fi
    log "wheel $name: unpacking $(basename "$whl") ($((size / 1048576)) MB)"
    rm -rf "$dest" "$dest.tmp"
    "$VENV/bin/python" -m zipfile -e "$whl" "$dest.tmp"
    # shellcheck disable=SC2086 # $expect is a glob
    if ! compgen -G "$dest.tmp/$expect" >/dev/null; then
        die "wheel $name: $(basename "$whl") has no $expect (did the wheel's layout change?)"
    fi
    mv "$dest.tmp" "$dest"
    printf '%s\n%s\n' "$want" "$(basename "$whl")" >"$stamp"
}

for spec in "${WHEEL_SPECS[@]}"; do
    IFS='|' read -r w_name w_pkg w_platform w_expect <<<"$spec"
    fetch_wheel "$w_name" "$w_pkg" "$w_platform" "$w_expect"
done

# The universal2 wheel must really hold a fat Mach-O.
fat=$(compgen -G "$WHEELS/markupsafe-macos-universal2/markupsafe/_speedups.cpython-*-darwin.so" | head -n 1)
magic=$(od -An -tx1 -N4 "$fat" | tr -d ' \n')
[ "$magic" = cafebabe ] || die "$fat is not a fat Mach-O (magic $magic)"

# ---------------------------------------------------------------------------
# 4. env.sh and manifest.json
# ---------------------------------------------------------------------------
write_if_changed() { # file; content on stdin
    cat >"$1.tmp"
    if [ -f "$1" ] && cmp -s "$1" "$1.tmp"; then
        rm -f "$1.tmp"
    else
        mv "$1.tmp" "$1"
        log "wrote $1"
    fi
}

write_if_changed "$FIX/env.sh" <<EOF
# Generated by scripts/setup-test-envs.sh: source it.
export CAICLUST_FIXTURES='$FIX'
export CAICLUST_VENV_PYPI='$VENV/bin/python'
export CAICLUST_VENV_IPP='$VENV_IPP/bin/python'
export CAICLUST_RUFF='$VENV_TOOLS/bin/ruff'
export CAICLUST_DEBIAN_PYTHON='$DEBIAN_PYTHON'
export CAICLUST_WHEELS='$WHEELS'
export CAICLUST_OPENBLAS_PTHREAD_DIR='$OPENBLAS_PTHREAD_DIR'
export CAICLUST_OPENBLAS_OPENMP_DIR='$OPENBLAS_OPENMP_DIR'
export CAICLUST_MULTIARCH='$MULTIARCH'
EOF

WHEEL_SPECS_TEXT=$(printf '%s\n' "${WHEEL_SPECS[@]}")
export FIX VENV VENV_NUMBA VENV_MKL VENV_NUMPY VENV_ML VENV_NUMPY1 VENV_TF VENV_TORCH VENV_IPP WHEELS STAMPS DEBIAN_PYTHON OPENBLAS_PTHREAD_DIR \
    OPENBLAS_OPENMP_DIR MULTIARCH WHEEL_SPECS_TEXT
"$VENV/bin/python" - <<'PY' | write_if_changed "$FIX/manifest.json"
import json, os, re

env = os.environ
stamps = env["STAMPS"]

def stamp_lines(name):
    try:
        with open(os.path.join(stamps, name)) as f:
            return f.read().splitlines()
    except FileNotFoundError:
        return None

packages = {}
for line in (stamp_lines("venv-pypi") or [])[1:]:
    if "==" in line:
        k, v = line.split("==", 1)
        packages[k.lower()] = v

wheels = {}
for spec in env["WHEEL_SPECS_TEXT"].splitlines():
    name, pkg, platform, expect = spec.split("|")
    lines = stamp_lines("wheel-" + name)
    if not lines:
        continue  # skipped (too big)
    filename = lines[1]
    m = re.match(r"^([^-]+)-([^-]+)-", filename)
    wheels[name] = {
        "path": os.path.join(env["WHEELS"], name),
        "package": pkg,
        "platform": platform,
        "wheel": filename,
        "version": m.group(2) if m else None,
    }

manifest = {
    "version": 1,
    "fixtures": env["FIX"],
    "venv_pypi": os.path.join(env["VENV"], "bin", "python"),
    "venv_pypi_packages": packages,
    "venv_numba": os.path.join(env["VENV_NUMBA"], "bin", "python"),
    "venv_mkl": os.path.join(env["VENV_MKL"], "bin", "python"),
    "venv_numpy": os.path.join(env["VENV_NUMPY"], "bin", "python"),
    "venv_ml": os.path.join(env["VENV_ML"], "bin", "python"),
    "venv_numpy1": os.path.join(env["VENV_NUMPY1"], "bin", "python"),
    "venv_tf": os.path.join(env["VENV_TF"], "bin", "python"),
    "venv_torch": os.path.join(env["VENV_TORCH"], "bin", "python"),
    "venv_ipp": os.path.join(env["VENV_IPP"], "bin", "python"),
    "debian_python": env["DEBIAN_PYTHON"],
    "multiarch": env["MULTIARCH"],
    "openblas_pthread_dir": env["OPENBLAS_PTHREAD_DIR"],
    "openblas_openmp_dir": env["OPENBLAS_OPENMP_DIR"],
    "wheels_dir": env["WHEELS"],
    "wheels": wheels,
}
print(json.dumps(manifest, indent=2, sort_keys=True))
PY

log "ready in $(($(date +%s) - START)) s; source $FIX/env.sh for the CAICLUST_* variables"
