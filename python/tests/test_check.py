"""``caiclust.check()`` of the installed wheel.

Run with the interpreter of a venv where the wheel, numpy and scikit-learn
are installed. Where the cargo-built ``caiclust-check`` exists
(``target/release`` or ``$CAICLUST_CARGO_BIN_DIR``) the reports are compared
with its output.
"""

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from caiclust._report import Finding, Report, check

REPO = Path(__file__).resolve().parents[2]
FACTS = REPO / "examples" / "caiman-like-linux.facts.json"
# Runs scikit-learn's OpenMP code in the parent, then in forked workers.
SCRIPT = REPO / "examples" / "caiman_like_pipeline.py"
EXE = ".exe" if os.name == "nt" else ""
CARGO_BIN = Path(os.environ.get("CAICLUST_CARGO_BIN_DIR", REPO / "target" / "release"))

UNGUARDED_POOL = """\
from multiprocessing import Pool


def square(x):
    return x * x


pool = Pool(4)
print(pool.map(square, range(4)))
"""


def native_check(*args):
    """(exit code, JSON text) of the cargo-built caiclust-check, or None."""
    path = CARGO_BIN / ("caiclust-check" + EXE)
    if not path.is_file():
        return None
    out = subprocess.run(
        [str(path), "--format", "json", *args], capture_output=True, text=True, timeout=300
    )
    return out.returncode, out.stdout


def test_a_report_from_saved_facts():
    report = check(facts=FACTS, scripts=[SCRIPT])
    assert isinstance(report, Report)
    assert all(isinstance(f, Finding) for f in report.findings)
    ids = [f.id for f in report.findings]
    assert ids == ["CC001", "CC100", "CC016"]
    cc001 = report.findings[0]
    assert cc001.level == "error"
    assert cc001.name == "gnu-openmp-fork"
    assert "libgomp" in cc001.message
    assert "caiclust explain CC001" in cc001.fix
    assert any(e.source == "environment" for e in cc001.evidence)
    assert cc001.env_fix[0]["name"] == "OMP_NUM_THREADS"
    assert not report.ok
    assert report.verdict == "fails"
    assert report.exit_code == 1
    rec = report.recommendation
    assert rec.start_method == "fork"
    assert rec.hazards == ["CC001"]
    assert not rec.safe
    assert rec.safer_start_method == "forkserver"
    assert rec.env == {"OMP_NUM_THREADS": "1"}
    assert report.raw == json.loads(report.to_json())
    native = native_check("--facts", str(FACTS), str(SCRIPT))
    if native:
        assert native == (report.exit_code, report.to_json())


def test_a_runtime_only_installed_is_a_presumed_warning():
    # No script: nothing shows the pool in use. The report warns and
    # passes; the plan is at risk, and the policy still avoids fork.
    report = check(facts=FACTS)
    cc001 = [f for f in report.findings if f.id == "CC001"][0]
    assert cc001.level == "warning"
    assert cc001.presumed
    assert report.ok
    rec = report.recommendation
    assert rec.hazards == ["CC001"]
    assert rec.only_presumed
    assert rec.safer_start_method == "forkserver"
    assert "at risk if the code runs the pool before the fork and in the workers (CC001)" in str(rec)
    native = native_check("--facts", str(FACTS))
    if native:
        assert native == (report.exit_code, report.to_json())


def test_text_and_repr():
    report = check(facts=FACTS, scripts=[SCRIPT])
    text = str(report)
    lines = text.splitlines()
    assert lines[0].split() == ["level", "id", "name", "message"]
    assert lines[1].split()[:3] == ["error", "CC001", "gnu-openmp-fork"]
    assert "plan: fork (the interpreter's default) with 1 worker: unsafe (CC001)" in text
    assert lines[-1].endswith("fails (findings at `error` or above)")
    assert "1 error, 1 warning, 1 info" in lines[-1]
    assert repr(report) == "<caiclust.Report: %s>" % lines[-1]
    # The plan and the last line as caiclust-check prints them.
    human = subprocess.run(
        [
            str(Path(sysconfig.get_path("scripts")) / ("caiclust-check" + EXE)),
            "--facts",
            str(FACTS),
            "--color",
            "never",
            str(SCRIPT),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    ).stdout.splitlines()
    assert lines[-2:] == human[-2:]


def test_the_plan_decides():
    report = check(facts=FACTS, start_method="spawn", workers=4)
    assert report.ok
    assert report.verdict == "passes"
    assert "CC001" not in [f.id for f in report.findings]
    assert report.recommendation.start_method == "spawn"
    assert report.recommendation.workers == 4
    assert report.recommendation.safe
    native = native_check("--facts", str(FACTS), "--start-method", "spawn", "--workers", "4")
    if native:
        assert native == (report.exit_code, report.to_json())


def test_html_names_every_finding_and_escapes():
    report = check(facts=FACTS)
    page = report._repr_html_()
    for f in report.findings:
        assert f.id in page
    # CC100's evidence says "version 0.3.15 is in <0.3.18".
    assert "&lt;0.3.18" in page
    assert "<0.3.18" not in page
    raw = json.loads(report.to_json())
    raw["findings"][0]["message"] = "<script>alert('x')</script> & more"
    page = Report(raw)._repr_html_()
    assert "<script>" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; more" in page


def test_this_interpreter_with_numpy_and_scikit_learn():
    import numpy  # noqa: F401  (the environment must have them)
    import sklearn  # noqa: F401

    report = check()
    assert report.raw["subject"] == {"kind": "python", "executable": sys.executable}
    assert report.findings
    native = native_check("--python", sys.executable)
    if native:
        assert native == (report.exit_code, report.to_json())
    if sys.platform.startswith("linux"):
        # scikit-learn's wheel ships libgomp, and Linux forks by default
        # (before Python 3.14).
        gomp = [f for f in report.findings if "libgomp" in f.message]
        assert gomp, str(report)
        if sys.version_info < (3, 14):
            # Installed, not shown used: a warning the policy presumes.
            cc001 = [f for f in gomp if f.id == "CC001"]
            assert cc001 and cc001[0].presumed, str(report)
            assert "CC001" in report.recommendation.hazards


def test_scripts_are_linted(tmp_path):
    script = tmp_path / "unguarded.py"
    script.write_text(UNGUARDED_POOL)
    report = check(facts=FACTS, scripts=[script])
    cc201 = [f for f in report.findings if f.id == "CC201"]
    assert len(cc201) == 1
    assert cc201[0].location == "%s:8:8" % script
    assert report.raw["scripts"] == [str(script)]
    # One path alone is one script, not a list of characters.
    assert check(facts=FACTS, scripts=str(script)).raw == report.raw


def test_a_missing_script_is_named(tmp_path):
    missing = tmp_path / "no_such_script.py"
    with pytest.raises(FileNotFoundError) as e:
        check(facts=FACTS, scripts=[missing])
    assert str(missing) in str(e.value)


def test_a_script_that_does_not_parse_is_named(tmp_path):
    broken = tmp_path / "broken.py"
    broken.write_text("def f(:\n")
    with pytest.raises(ValueError) as e:
        check(facts=FACTS, scripts=[broken])
    assert str(broken) in str(e.value)


def test_missing_inputs_are_named(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        check(facts=tmp_path / "no.facts.json")
    assert "no.facts.json" in str(e.value)
    with pytest.raises(FileNotFoundError) as e:
        check(python=tmp_path / "no-python")
    assert "no-python" in str(e.value)


def test_bad_arguments_raise_value_error():
    with pytest.raises(ValueError, match="'fok'"):
        check(facts=FACTS, start_method="fok")
    with pytest.raises(ValueError, match="'0'"):
        check(facts=FACTS, workers=0)
    with pytest.raises(ValueError, match="not both"):
        check(python=sys.executable, facts=FACTS)
    with pytest.raises(TypeError):
        check(facts=FACTS, workers="4")


def test_bad_facts_raise_value_error(tmp_path):
    bad = tmp_path / "bad.facts.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="bad.facts.json"):
        check(facts=bad)
