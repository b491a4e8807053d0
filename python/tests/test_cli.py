"""The ``caiclust`` and ``caiclust-check`` commands of the installed wheel.

They run the programs in-process, through ``caiclust._core``. Run these
tests with the interpreter of a venv where the wheel is installed (numpy
too, for the live probe); where the cargo-built binaries exist
(``target/release`` or ``$CAICLUST_CARGO_BIN_DIR``), the commands' output is
compared with theirs.
"""

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

import caiclust
from caiclust import _core
from caiclust._report import check

REPO = Path(__file__).resolve().parents[2]
FACTS = REPO / "examples" / "caiman-like-linux.facts.json"
SCRIPTS = Path(sysconfig.get_path("scripts"))
EXE = ".exe" if os.name == "nt" else ""
CARGO_BIN = Path(os.environ.get("CAICLUST_CARGO_BIN_DIR", REPO / "target" / "release"))


def command(name):
    path = SCRIPTS / (name + EXE)
    assert path.is_file(), "the wheel installed no %s command in %s" % (name, SCRIPTS)
    return str(path)


def cargo_binary(name):
    """The cargo-built binary, or None where it was not built."""
    path = CARGO_BIN / (name + EXE)
    return str(path) if path.is_file() else None


def run(args, **kwargs):
    return subprocess.run(args, capture_output=True, text=True, timeout=300, **kwargs)


def test_the_package_is_the_installed_wheel():
    # Not the source tree: these tests are of what pip installed.
    assert REPO / "python" not in Path(caiclust.__file__).resolve().parents
    assert Path(_core.__file__).resolve().parent == Path(caiclust.__file__).resolve().parent


def test_help():
    out = run([command("caiclust"), "--help"])
    assert out.returncode == 0, out.stderr
    assert "Usage: caiclust" in out.stdout
    for sub in ("probe", "explain", "rules", "env", "run", "map"):
        assert sub in out.stdout
    out = run([command("caiclust-check"), "--help"])
    assert out.returncode == 0, out.stderr
    assert "Usage: caiclust-check" in out.stdout


def test_usage_errors_exit_as_the_binaries_do():
    out = run([command("caiclust"), "--no-such-option"])
    assert out.returncode == 2
    assert "--no-such-option" in out.stderr
    out = run([command("caiclust"), "map", "--no-such-option"])
    assert out.returncode == 255
    out = run([command("caiclust-check"), "--no-such-option"])
    assert out.returncode == 2
    assert "--no-such-option" in out.stderr
    out = run([command("caiclust"), "--version"])
    assert out.returncode == 0
    assert out.stdout.strip() == "caiclust %s" % caiclust.__version__


def test_rules():
    out = run([command("caiclust"), "rules"])
    assert out.returncode == 0, out.stderr
    assert "CC001" in out.stdout and "gnu-openmp-fork" in out.stdout
    native = cargo_binary("caiclust")
    if native:
        assert out.stdout == run([native, "rules"]).stdout


def test_explain():
    out = run([command("caiclust"), "explain", "CC001"])
    assert out.returncode == 0, out.stderr
    assert "gnu-openmp-fork" in out.stdout
    native = cargo_binary("caiclust")
    if native:
        assert out.stdout == run([native, "explain", "CC001"]).stdout
    out = run([command("caiclust"), "explain", "CC999"])
    assert out.returncode == 2
    assert "unknown rule 'CC999'" in out.stderr


def test_check_json_is_what_check_returns():
    # The script runs scikit-learn before the fork and in the workers: an
    # error-level CC001, exit code 1.
    script = str(REPO / "examples" / "caiman_like_pipeline.py")
    out = run([command("caiclust-check"), "--facts", str(FACTS), "--format", "json", script])
    assert out.returncode == 1, out.stderr
    report = check(facts=str(FACTS), scripts=[script])
    assert json.loads(out.stdout) == report.raw
    assert out.stdout == report.to_json()
    assert report.exit_code == out.returncode
    native = cargo_binary("caiclust-check")
    if native:
        again = run([native, "--facts", str(FACTS), "--format", "json", script])
        assert (again.returncode, again.stdout) == (out.returncode, out.stdout)


def test_main_runs_in_process():
    assert _core.main("caiclust", ["explain", "CC999"]) == 2
    with pytest.raises(ValueError, match="unknown program"):
        _core.main("caiclust-nope", [])


def test_the_module_serves_a_runtime_query():
    # `python -c "import caiclust._core"` with the query variable set is the
    # helper: it answers and ends before the rest of the program runs.
    request = {
        "protocol": 2,
        "query": {
            "library": "/nonexistent/libopenblas.so",
            "vendor": "openblas",
            "symbol_prefix": None,
            "symbol_suffix": None,
        },
        "affinity": None,
    }
    env = dict(os.environ, CAICLUST_RUNTIME_QUERY=json.dumps(request))
    out = run(
        [sys.executable, "-c", "import caiclust._core; print('not served')"],
        env=env,
        stdin=subprocess.DEVNULL,
    )
    assert out.returncode == 0, out.stderr
    assert "not served" not in out.stdout
    lines = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    assert lines and lines[-1]["caiclust_runtime_query"] == "answer", out.stdout
    assert "/nonexistent/libopenblas.so" in lines[-1]["answer"]["error"]


def test_the_module_serves_the_map_watcher():
    # It waits for its standard input to close, then sweeps (on Linux) and
    # ends.
    env = dict(os.environ, CAICLUST_REAPER_FOR="test-token-%d" % os.getpid())
    out = run(
        [sys.executable, "-c", "import caiclust._core; print('not served')"],
        env=env,
        stdin=subprocess.DEVNULL,
    )
    assert out.returncode == 0, out.stderr
    assert "not served" not in out.stdout


def openblas_answers(facts):
    """{path: runtime version} of the OpenBLAS libraries in probed facts."""
    found = {}
    for lib in facts["libraries"]:
        vendor = lib.get("vendor", {}).get("value")
        if vendor == "openblas" and lib.get("runtime") is not None:
            found[lib["path"]] = (lib["runtime"].get("version"), lib["runtime"].get("error"))
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reading a process is Linux only")
def test_probe_pid_asks_openblas_through_the_python_helper():
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys, numpy; print('ready', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout.readline().strip() == "ready"
        out = run([command("caiclust"), "probe", "--pid", str(child.pid), "--json"])
        assert out.returncode == 0, out.stderr
        answers = openblas_answers(json.loads(out.stdout))
        assert answers, "no OpenBLAS runtime answer in the probe of a numpy process"
        for path, (version, error) in answers.items():
            assert error is None, "%s: %s" % (path, error)
            assert version, path
        native = cargo_binary("caiclust")
        if native:
            again = run([native, "probe", "--pid", str(child.pid), "--json"])
            assert again.returncode == 0, again.stderr
            assert openblas_answers(json.loads(again.stdout)) == answers
        # The human summary names the version too.
        out = run([command("caiclust"), "probe", "--pid", str(child.pid)])
        assert out.returncode == 0, out.stderr
        for version, _ in answers.values():
            assert version in out.stdout
    finally:
        child.stdin.close()
        child.wait(timeout=30)


FIND_WATCHER = """
import os
wanted = ("CAICLUST_REAPER_FOR=" + os.environ["CAICLUST_MAP_RUN"]).encode()
for pid in os.listdir("/proc"):
    try:
        with open("/proc/%s/environ" % pid, "rb") as f:
            env = f.read().split(b"\\0")
        if wanted in env:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                argv = f.read().split(b"\\0")
            print("watcher", os.readlink("/proc/%s/exe" % pid), argv[1].decode())
    except (OSError, ValueError, IndexError):
        pass
"""


def test_map_runs_through_the_wheel_command(tmp_path):
    out = run(
        [command("caiclust"), "map", "--no-bar", "-k", "--", "echo", "{}", ":::", "a", "b"],
        cwd=str(tmp_path),
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["a", "b"]
    if sys.platform.startswith("linux"):
        # The map's watcher is this interpreter loading the extension.
        script = tmp_path / "find_watcher.py"
        script.write_text(FIND_WATCHER)
        out = run(
            [command("caiclust"), "map", "--no-bar", "--", sys.executable, str(script), ":::", "x"],
            cwd=str(tmp_path),
        )
        assert out.returncode == 0, out.stderr
        watchers = [line.split() for line in out.stdout.splitlines() if line.startswith("watcher")]
        assert watchers == [["watcher", str(Path(sys.executable).resolve()), "-I"]], out.stdout
