"""Ground truth for caiclust-check's verdicts (issue #14): every fixture
script in tests/verdicts/ is run for real under each start method, and
checked by caiclust-check under the same conditions; the table says what
each did, and whether they agree.

    python3 scripts/verdicts.py [--python VENV_PYTHON] [--check CAICLUST_CHECK]
                                [--timeout S] [--markdown VERDICTS.md]
                                [--json target/verdicts/results.json]

Variants of each script: ``fork``, ``fork`` with ``OMP_NUM_THREADS=1`` in
the environment (as a user would export it before starting Python),
``spawn``, ``forkserver``. The script's ``METHOD = "fork"`` line is
rewritten for each (a copy under target/verdicts/scripts/), so the real run
and caiclust-check read the same file.

A script runs in the ``venv-ml`` fixture (or ``--python``) unless a line
``# verdicts: venv-NAME`` names another fixture venv; each line
``# verdicts-variant: VAR=VALUE`` adds a fork variant with that variable
set (``TF_NUM_INTRAOP_THREADS=1`` for TensorFlow's own pool).

What counts:
  - the real run **hangs** when it has not finished after --timeout
    seconds (its whole process group is then killed); a run that finishes
    with exit status 0 **completes**; anything else is a failure of the
    fixture and stops the table (exit status 2);
  - caiclust-check **predicts a hang** when its verdict for the plan lists
    a hazard at level error (``verdict.hazards``): the policy says this
    start method, with this environment and script, is unsafe.

Precision and recall of "hangs" over all rows; the exit status is 1 when
either is below 1.0, 0 otherwise. Standard library only.
"""

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = REPO / "tests" / "verdicts"
VARIANTS = (
    ("fork", "fork", {}),
    ("fork, OMP_NUM_THREADS=1", "fork", {"OMP_NUM_THREADS": "1"}),
    ("spawn", "spawn", {}),
    ("forkserver", "forkserver", {}),
)
METHOD_LINE = 'METHOD = "fork"'
VENV_LINE = re.compile(r"^# verdicts: (venv-[\w-]+)\s*$", re.M)
VARIANT_LINE = re.compile(r"^# verdicts-variant: (\w+)=(\S+)\s*$", re.M)


def fixture_python(venv):
    """The interpreter of fixture venv ``venv-NAME`` (the manifest's
    ``venv_NAME``, else the usual folder)."""
    key = venv.replace("-", "_")
    manifest = REPO / ".fixtures" / "manifest.json"
    try:
        return json.loads(manifest.read_text())[key]
    except (OSError, KeyError, ValueError):
        return str(REPO / ".fixtures" / venv / "bin" / "python")


def script_setup(script, default):
    """The interpreter and the variants of one fixture script."""
    text = script.read_text()
    venv = VENV_LINE.search(text)
    python = fixture_python(venv.group(1)) if venv else default
    variants = list(VARIANTS)
    for var, value in VARIANT_LINE.findall(text):
        variants.append((f"fork, {var}={value}", "fork", {var: value}))
    return python, variants


def default_python():
    return fixture_python("venv-ml")


def variant_script(script, method, out_dir):
    text = script.read_text()
    if METHOD_LINE not in text:
        raise SystemExit(f"{script}: no line {METHOD_LINE!r} to set the start method")
    path = out_dir / f"{script.stem}__{method}.py"
    path.write_text(text.replace(METHOD_LINE, f'METHOD = "{method}"', 1))
    return path


def clean_env(extra):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("OMP_", "OPENBLAS_", "MKL_", "TF_", "CAICLUST_"))
           or k == "CAICLUST_CACHE_DIR"}
    env.update(extra)
    return env


def real_run(python, path, env, timeout):
    """'completes' or 'hangs', with the seconds it took; raises on a
    failure of the fixture itself."""
    start = time.monotonic()
    proc = subprocess.Popen([python, str(path)], cwd=path.parent, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return "hangs", time.monotonic() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{path.name}: exit status {proc.returncode}\n{err[-2000:]}")
    return "completes", time.monotonic() - start


def check(check_bin, python, path, env):
    """caiclust-check's verdict: (predicts a hang, the ids it gives)."""
    proc = subprocess.run([check_bin, "--python", python, "--format", "json", str(path)],
                          cwd=path.parent, env=env, capture_output=True, text=True,
                          timeout=300)
    try:
        report = json.loads(proc.stdout)
    except ValueError as exc:
        raise RuntimeError(
            f"caiclust-check on {path.name}: {exc}\n{proc.stderr[-2000:]}") from exc
    hazards = [f["rule_id"] for f in report["verdict"].get("hazards", [])
               if f.get("level") in ("error", "deny")]
    errors = sorted({f["rule_id"] for f in report["findings"] if f["level"] == "error"})
    return bool(hazards), errors


def table(rows):
    lines = ["| script | start method | real run | s | caiclust-check | errors | agree |",
             "|:---|:---|:---|---:|:---|:---|:---|"]
    for r in rows:
        lines.append(f"| {r['script']} | {r['variant']} | {r['real']} | {r['seconds']:.1f} | "
                     f"{'hangs' if r['predicted'] else 'safe'} | {', '.join(r['errors']) or '-'} | "
                     f"{'yes' if r['agree'] else '**no**'} |")
    return "\n".join(lines)


def versions(python):
    code = ("import importlib.metadata as m, platform, json\n"
            "names = ['numpy', 'scikit-learn', 'lightgbm', 'xgboost', 'tensorflow-cpu',\n"
            "         'numba', 'threadpoolctl']\n"
            "out = {'python': platform.python_version()}\n"
            "for n in names:\n"
            "    try:\n"
            "        out[n] = m.version(n)\n"
            "    except m.PackageNotFoundError:\n"
            "        pass\n"
            "print(json.dumps(out))\n")
    try:
        got = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=60)
        return json.loads(got.stdout)
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return {}


def markdown(rows, summary, args, pythons):
    envs = []
    for venv, python in sorted(pythons.items()):
        v = versions(python)
        envs.append(f"- `{venv}`: " + ", ".join(f"{k} {v}" for k, v in v.items()))
    return "\n".join([
        "# Verdicts against real runs (issue #14)",
        "",
        "Each fixture script of `tests/verdicts/` ran for real under each start method,",
        "and `caiclust-check` judged the same file in the same environment. A run that",
        f"had not finished after {args.timeout:g} s hangs (the fork runs that hang wait",
        "forever in libgomp, GCC bug 60035, in TensorFlow's own pool, or for a worker",
        "numba killed); caiclust-check predicts a hang when its verdict lists a hazard",
        "at level error for the plan.",
        "",
        "```sh",
        "bash scripts/setup-test-envs.sh && cargo build --release -p caiclust-cli",
        "python3 scripts/verdicts.py --markdown VERDICTS.md   # about 6 minutes",
        "```",
        "",
        "Environments (fixture venvs; a script names its own with `# verdicts: venv-NAME`,",
        "else `venv-ml`; Debian 12's system `libgomp.so.1` serves LightGBM):",
        "",
        *envs,
        "",
        "`scripts/test.sh` runs the same table in CI and fails unless precision and",
        "recall are both 1.0.",
        "",
        table(rows),
        "",
        summary,
        "",
    ])


def scores(rows):
    tp = sum(r["real"] == "hangs" and r["predicted"] for r in rows)
    fp = sum(r["real"] != "hangs" and r["predicted"] for r in rows)
    fn = sum(r["real"] == "hangs" and not r["predicted"] for r in rows)
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    return {"tp": tp, "fp": fp, "fn": fn, "tn": len(rows) - tp - fp - fn,
            "precision": precision, "recall": recall}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--python", default=default_python())
    ap.add_argument("--check", default=str(REPO / "target" / "release" / "caiclust-check"))
    ap.add_argument("--timeout", type=float, default=30.0)
    ap.add_argument("--markdown", default=None, help="write the table here too")
    ap.add_argument("--json", default=str(REPO / "target" / "verdicts" / "results.json"))
    ap.add_argument("scripts", nargs="*", help="only these fixture scripts (file names)")
    args = ap.parse_args(argv)
    args.check = str(Path(args.check).resolve())
    out_dir = REPO / "target" / "verdicts" / "scripts"
    out_dir.mkdir(parents=True, exist_ok=True)
    scripts = sorted(p for p in SCRIPTS.glob("*.py")
                     if not args.scripts or p.name in args.scripts)
    rows = []
    pythons = {}
    for script in scripts:
        python, variants = script_setup(script, args.python)
        venv = VENV_LINE.search(script.read_text())
        pythons[venv.group(1) if venv else "venv-ml"] = python
        for variant, method, extra in variants:
            path = variant_script(script, method, out_dir)
            env = clean_env(extra)
            try:
                real, seconds = real_run(python, path, env, args.timeout)
                predicted, errors = check(args.check, python, path, env)
            except RuntimeError as exc:
                print(f"verdicts: {exc}", file=sys.stderr)
                return 2
            rows.append({"script": script.name, "variant": variant, "real": real,
                         "seconds": seconds, "predicted": predicted, "errors": errors,
                         "agree": predicted == (real == "hangs")})
            print(f"{script.name:40} {variant:26} {real:9} {seconds:5.1f}s  check: "
                  f"{'hangs' if predicted else 'safe'} {','.join(errors)}", flush=True)
    s = scores(rows)
    summary = (f"{len(rows)} runs: {s['tp']} hangs predicted, {s['fp']} false alarms, "
               f"{s['fn']} hangs missed; precision {s['precision']:.2f}, "
               f"recall {s['recall']:.2f}")
    print(table(rows))
    print(summary)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"rows": rows, "scores": s,
                                           "python": args.python}, indent=2))
    if args.markdown:
        Path(args.markdown).write_text(markdown(rows, summary, args, pythons))
    return 0 if s["precision"] == 1.0 and s["recall"] == 1.0 else 1


if __name__ == "__main__":
    sys.exit(main())
