# caiclust: ask this Python interpreter about itself.
#
# Run as `python -I -S -B -c <this script>`: isolated (no PYTHON* variables,
# no user site), no `site` processing (so no .pth file runs), no bytecode
# written. Only the standard library is imported, never a user package.
# Prints one JSON document on stdout and nothing else.
#
# Must run on CPython and PyPy 3.6 to 3.14 on Linux, macOS and Windows: no
# f-strings or newer syntax; every optional call is guarded and gives null.
import os
import sys

MARKER = "caiclust_python_query"


def attempt(fn, default=None):
    try:
        return fn()
    except Exception:
        return default


def venv_of(executable):
    """What site.venv() would find: (venv prefix or None, system site?).

    With -S the interpreter keeps sys.prefix at the base installation even
    inside a virtual environment (site.venv() is what switches it), so the
    pyvenv.cfg lookup is repeated here, without importing anything.
    """
    if sys.platform == "darwin" and "__PYVENV_LAUNCHER__" in os.environ:
        executable = os.environ["__PYVENV_LAUNCHER__"]
    if not executable:
        return None, True
    exe_dir = os.path.dirname(os.path.abspath(executable))
    site_prefix = os.path.dirname(exe_dir)
    for conf in (os.path.join(exe_dir, "pyvenv.cfg"),
                 os.path.join(site_prefix, "pyvenv.cfg")):
        if os.path.isfile(conf):
            system_site = "true"
            with open(conf, encoding="utf-8") as f:
                for line in f:
                    if "=" in line:
                        key, _, value = line.partition("=")
                        if key.strip().lower() == "include-system-site-packages":
                            system_site = value.strip().lower()
            return site_prefix, system_site == "true"
    return None, True


def user_site_allowed():
    """site.check_enableusersite() as a normal (not isolated) run sees it."""
    if os.environ.get("PYTHONNOUSERSITE"):
        return False
    if hasattr(os, "getuid") and hasattr(os, "geteuid"):
        if os.geteuid() != os.getuid():
            return False
    if hasattr(os, "getgid") and hasattr(os, "getegid"):
        if os.getegid() != os.getgid():
            return False
    return True


def site_packages(site, venv_prefix, system_site):
    """Candidate package folders in import order, as site.main() adds them:
    the venv's, then the user site, then those of site.PREFIXES; then the
    sysconfig purelib/platlib. `site` must have been imported before
    sys.prefix was switched to the venv, as in a normal run. Calls only
    site.getsitepackages() and site.getusersitepackages(), which compute
    paths and read no .pth file.
    The Rust side dedupes and keeps the existing folders."""
    base_prefixes = list(getattr(site, "PREFIXES", [sys.prefix, sys.exec_prefix]))
    found = []
    if venv_prefix:
        found.extend(attempt(lambda: site.getsitepackages([venv_prefix]), []))
        if system_site:
            prefixes = [venv_prefix] + base_prefixes
        else:
            prefixes = [venv_prefix]
    else:
        prefixes = base_prefixes
    if system_site and user_site_allowed():
        user = attempt(site.getusersitepackages)
        if user:
            found.append(user)
    found.extend(attempt(lambda: site.getsitepackages(prefixes), []))

    import sysconfig
    if venv_prefix:
        paths = attempt(lambda: sysconfig.get_paths(
            vars={"base": sys.prefix, "platbase": sys.exec_prefix}), {})
    else:
        paths = attempt(sysconfig.get_paths, {})
    for key in ("purelib", "platlib"):
        if paths.get(key):
            found.append(paths[key])

    # On Windows getsitepackages() lists the prefix itself; it holds the
    # standard library, not installed packages: leave it out.
    def norm(p):
        return os.path.normcase(os.path.normpath(os.path.abspath(p)))
    prefixes_seen = set(norm(p) for p in (sys.prefix, sys.exec_prefix,
                                          sys.base_prefix, getattr(sys, "base_exec_prefix", sys.base_prefix))
                        if p)
    out = []
    seen = set()
    for p in found:
        if not isinstance(p, str) or not p:
            continue
        key = norm(p)
        if key in seen or key in prefixes_seen:
            continue
        seen.add(key)
        out.append(os.path.normpath(os.path.abspath(p)))
    return out


def start_methods():
    import multiprocessing  # imports no user code; starts no process
    methods = attempt(multiprocessing.get_all_start_methods, [])
    default = attempt(lambda: multiprocessing.get_start_method(allow_none=False))
    return default, list(methods)


def machine():
    if hasattr(os, "uname"):
        return os.uname().machine
    import platform
    return platform.machine()


def process_cpu_count():
    if hasattr(os, "process_cpu_count"):
        return os.process_cpu_count()
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return None


def ext_suffix(sysconfig):
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    if suffix:
        return suffix
    import importlib.machinery
    return importlib.machinery.EXTENSION_SUFFIXES[0]


def gil_disabled(sysconfig):
    if sysconfig.get_config_var("Py_GIL_DISABLED"):
        return True
    return "t" in getattr(sys, "abiflags", "")


def version():
    text = sys.version.split()[0] if sys.version else ""
    if not text[:1].isdigit():
        text = "%d.%d.%d" % tuple(sys.version_info[:3])
    return text


def query():
    import site  # with -S, importing site does not run site.main()
    venv_prefix, system_site = attempt(lambda: venv_of(sys.executable), (None, True))
    if venv_prefix:
        # What site.venv() does in a normal run, before anything reads it.
        sys.prefix = sys.exec_prefix = venv_prefix
    doc = {
        MARKER: 1,
        "sys_executable": sys.executable or None,
        "version": version(),
        "version_info": list(sys.version_info[:3]),
        "implementation": attempt(lambda: sys.implementation.name, "unknown"),
        "prefix": sys.prefix,
        "base_prefix": getattr(sys, "base_prefix", sys.prefix),
        "exec_prefix": sys.exec_prefix,
        "is_conda": attempt(lambda: os.path.isdir(os.path.join(sys.prefix, "conda-meta")), False),
        "site_packages": attempt(lambda: site_packages(site, venv_prefix, system_site), []),
        "platform": sys.platform,
        "machine": attempt(machine),
        "os_cpu_count": attempt(os.cpu_count),
        "process_cpu_count": attempt(process_cpu_count),
    }
    doc["is_virtualenv"] = doc["prefix"] != doc["base_prefix"]
    import sysconfig
    doc["sysconfig_platform"] = attempt(sysconfig.get_platform)
    doc["ext_suffix"] = attempt(lambda: ext_suffix(sysconfig))
    doc["gil_disabled"] = attempt(lambda: gil_disabled(sysconfig), False)
    doc["default_start_method"], doc["start_methods"] = attempt(start_methods, (None, []))
    return doc


def main():
    try:
        doc = query()
    except BaseException as exc:  # report, never print a traceback instead
        doc = {MARKER: 1, "error": "%s: %s" % (type(exc).__name__, exc)}
    import json
    sys.stdout.write(json.dumps(doc, sort_keys=True) + "\n")
    sys.stdout.flush()


main()
