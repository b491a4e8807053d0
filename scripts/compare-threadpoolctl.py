"""Compare `caiclust probe --json` with threadpoolctl, on any OS.

Usage: python scripts/compare-threadpoolctl.py FACTS.json [MODULE ...]

Run with the interpreter that was probed; threadpoolctl must be installed
there. Every library threadpoolctl lists after importing MODULEs (default:
numpy scipy sklearn) must be in the facts with the same file, internal API,
version and threading layer. Exits 1 on any mismatch. Used by the macOS and
Windows CI jobs, where the Rust integration tests' Linux fixtures don't
exist; on Linux, tests/tests/static_probe_pypi.rs checks the same in Rust.
"""

import importlib
import json
import os
import sys


def main():
    facts_path = sys.argv[1]
    modules = sys.argv[2:] or ["numpy", "scipy", "sklearn"]
    with open(facts_path, encoding="utf-8") as f:
        facts = json.load(f)
    for m in modules:
        importlib.import_module(m)
    import threadpoolctl

    info = threadpoolctl.threadpool_info()
    by_path = {}
    for lib in facts["libraries"]:
        by_path[os.path.normcase(os.path.realpath(lib["path"]))] = lib
    internal = {
        "openblas": "openblas",
        "mkl": "mkl",
        "blis": "blis",
        "flexiblas": "flexiblas",
        "gnu_openmp": "openmp",
        "llvm_openmp": "openmp",
        "intel_openmp": "openmp",
        "msvc_openmp": "openmp",
    }
    failures = []
    for pool in info:
        path = os.path.normcase(os.path.realpath(pool["filepath"]))
        lib = by_path.get(path)
        if lib is None:
            failures.append("missing %s (%s)" % (pool["filepath"], pool["internal_api"]))
            continue
        if internal.get(lib["vendor"]["value"]) != pool["internal_api"]:
            failures.append("%s: vendor %s vs %s" % (path, lib["vendor"]["value"], pool["internal_api"]))
        version = pool.get("version")
        ours = (lib.get("version") or {}).get("value")
        if version and ours != version:
            failures.append("%s: version %s vs %s" % (path, ours, version))
        layer = pool.get("threading_layer")
        ours_layer = (lib.get("threading_layer") or {}).get("value")
        if layer and ours_layer != layer:
            failures.append("%s: threading layer %s vs %s" % (path, ours_layer, layer))
        print("ok  %-10s %s" % (pool["internal_api"], pool["filepath"]))
    if not info:
        failures.append("threadpoolctl listed nothing: nothing was compared")
    for f in failures:
        print("FAIL", f)
    print("%d passed, %d failed" % (len(info) - len(failures), len(failures)))
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
