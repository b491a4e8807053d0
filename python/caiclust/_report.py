"""``caiclust.check()``: the checks of ``caiclust-check``, as Python objects.

``check()`` runs exactly what ``caiclust-check --format json`` runs (the
same library function, in this process) and wraps its JSON report in a
:class:`Report`: the findings, the judgement of the plan with the ways to
make it safe, and renderings as text, HTML (Jupyter) and JSON.
"""

import html
import json
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from caiclust import _core

__all__ = ["check", "Report", "Finding", "Evidence", "Recommendation"]

_LEVELS = ("error", "warning", "info", "allow")


def check(python=None, scripts=(), start_method=None, workers=None, facts=None):
    """Check that parallel Python will run safely, as ``caiclust-check`` does.

    Probes the interpreter ``python`` (a path to an interpreter or to a
    venv or conda folder; ``None``: this interpreter, ``sys.executable``),
    or replays the saved facts ``facts`` (``caiclust probe --json``), runs
    the rules for a pool started with ``start_method`` (``"fork"``,
    ``"spawn"`` or ``"forkserver"``; ``None``: the interpreter's default)
    and ``workers`` worker processes, and lints the Python scripts and
    Jupyter notebooks ``scripts``. The configuration is the nearest
    ``caiclust.toml`` or ``pyproject.toml`` above the working folder.

    Returns a :class:`Report`; ``report.ok`` is false when a finding is at
    the deny level (where ``caiclust-check`` exits with 1).

    Raises ``FileNotFoundError`` for an interpreter, facts file or script
    that does not exist, ``ValueError`` for other bad input (an unknown
    start method, a worker count below 1, both ``python`` and ``facts``, a
    script that cannot be read or parsed, facts that cannot be read, an
    interpreter that cannot be probed, a bad configuration).
    """
    if isinstance(scripts, (str, bytes, os.PathLike)):
        scripts = [scripts]
    scripts = [os.fsdecode(os.fspath(s)) for s in scripts]
    if python is not None and facts is not None:
        raise ValueError(
            "check(python=%r, facts=%r): give the interpreter or the facts, not both"
            % (python, facts)
        )
    if facts is not None:
        facts = _existing("facts file", facts)
    elif python is not None:
        python = _existing("Python interpreter", python)
    else:
        python = sys.executable
        if not python:
            raise ValueError("check(): this interpreter's path is unknown; pass python=")
    for script in scripts:
        _existing("script", script)
    if start_method is not None and not isinstance(start_method, str):
        raise TypeError("check(start_method=%r): expected a str" % (start_method,))
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int)):
        raise TypeError("check(workers=%r): expected an int" % (workers,))
    text, code = _core.check_json(python, scripts, start_method, workers, facts)
    report = Report.from_json(text, exit_code=code)
    if report.errors:
        raise ValueError("; ".join(e.get("message") or str(e.get("path")) for e in report.errors))
    return report


def _existing(what, path):
    path = os.fsdecode(os.fspath(path))
    if not os.path.exists(path):
        raise FileNotFoundError(2, "no such %s" % what, path)
    return path


@dataclass(frozen=True)
class Evidence:
    """One piece of evidence behind a finding."""

    #: Where it comes from: ``static`` (reading a binary), ``runtime`` (the
    #: library's own answer), ``environment``, ``source_code``, ...
    source: str
    detail: str
    #: For source code: ``{"path", "line", "column", ...}``.
    span: Optional[Dict[str, Any]] = None

    @classmethod
    def from_dict(cls, d):
        return cls(source=d.get("source", ""), detail=d.get("detail", ""), span=d.get("span"))


@dataclass(frozen=True)
class Finding:
    """One finding of a rule (``caiclust explain ID`` explains the rule)."""

    #: The rule's id, e.g. ``CC001``.
    id: str
    #: ``error``, ``warning`` or ``info``.
    level: str
    #: The rule's name, e.g. ``gnu-openmp-fork``.
    name: str
    message: str
    evidence: List[Evidence] = field(default_factory=list)
    #: What to do about it.
    fix: Optional[str] = None
    #: The file (and line) it is about.
    location: Optional[str] = None
    #: Environment variables that answer it: ``{"name", "value", "reason"}``.
    env_fix: List[Dict[str, Any]] = field(default_factory=list)
    #: A warning only because nothing shows the code that will run (no
    #: script, no live process): the hazard policy presumes it will bite.
    presumed: bool = False
    #: The finding as the JSON report has it.
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_dict(cls, d):
        return cls(
            id=d.get("rule_id", ""),
            level=d.get("level", ""),
            name=d.get("rule_name", ""),
            message=d.get("message", ""),
            evidence=[Evidence.from_dict(e) for e in d.get("evidence") or []],
            fix=d.get("fix"),
            location=d.get("location"),
            env_fix=list(d.get("env_fix") or []),
            presumed=bool(d.get("presumed")),
            raw=d,
        )


@dataclass(frozen=True)
class Recommendation:
    """The judgement of the plan (start method and worker count) and the
    ways to make it safe: the report's ``verdict`` in the JSON."""

    #: The start method judged, and where it comes from (``planned or
    #: configured``, ``the interpreter's default``, ...).
    start_method: str
    start_method_source: str
    workers: int
    #: The ids of the findings that make the plan unsafe.
    hazards: List[str]
    #: The start methods under which no start-method hazard remains, best
    #: first.
    safe_start_methods: List[str]
    #: Variables that make the plan safe with its own start method (empty
    #: when it is safe already, ``None`` when none do).
    env: Optional[Dict[str, str]]
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_dict(cls, d):
        env_fix = d.get("env_fix")
        return cls(
            start_method=d.get("start_method", ""),
            start_method_source=d.get("start_method_source", ""),
            workers=d.get("workers", 0),
            hazards=[h.get("rule_id", "") for h in d.get("hazards") or []],
            safe_start_methods=list(d.get("safe_start_methods") or []),
            env=None if env_fix is None else {e["name"]: e["value"] for e in env_fix},
            raw=d,
        )

    @property
    def safe(self):
        """No hazard at all."""
        return not self.hazards

    @property
    def only_presumed(self):
        """Every hazard is a warning presumed to bite because nothing shows
        the code that will run (no script, no live process): the plan is
        at risk, not shown to fail."""
        found = self.raw.get("hazards") or []
        return bool(found) and all(h.get("presumed") for h in found)

    @property
    def start_method_hazards(self):
        """The hazards that another start method avoids."""
        return list(self.raw.get("start_method_hazards") or [])

    @property
    def safer_start_method(self):
        """The best start method other than the plan's own that avoids the
        start-method hazards, or ``None``."""
        if not self.start_method_hazards:
            return None
        for m in self.safe_start_methods:
            if m != self.start_method:
                return m
        return None

    def __str__(self):
        plan = "%s (%s) with %d worker%s" % (
            self.start_method,
            self.start_method_source,
            self.workers,
            "" if self.workers == 1 else "s",
        )
        if self.safe:
            return plan + ": safe"
        ids = []
        for h in self.hazards:
            if h not in ids:
                ids.append(h)
        ways = []
        if self.start_method_hazards:
            ways += ["start method " + m for m in self.safe_start_methods if m != self.start_method]
        if self.env:
            ways.append(" ".join("%s=%s" % kv for kv in self.env.items()))
        fixes = (
            "safe with " + ", or ".join(ways)
            if ways
            else "no start method or environment avoids it"
        )
        judged = (
            "at risk if the code runs the pool before the fork and in the workers"
            if self.only_presumed
            else "unsafe"
        )
        return "%s: %s (%s); %s" % (plan, judged, ", ".join(ids), fixes)


class Report:
    """What ``caiclust-check`` found: see :func:`check`.

    Attributes: ``findings`` (:class:`Finding`, most severe first),
    ``recommendation`` (:class:`Recommendation`, ``None`` for scripts
    alone), ``verdict`` (``"passes"`` or ``"fails"``), ``ok`` (no finding
    at the deny level), ``deny_level``, ``subject`` (what was checked),
    ``errors`` (files that could not be linted), ``exit_code`` (that of
    ``caiclust-check``) and ``raw`` (the parsed JSON report).
    """

    def __init__(self, raw, exit_code=None, text=None):
        self.raw = raw
        self.exit_code = exit_code
        self._text = text
        self.findings = [Finding.from_dict(f) for f in raw.get("findings") or []]
        verdict = raw.get("verdict")
        self.recommendation = None if verdict is None else Recommendation.from_dict(verdict)
        self.deny_level = raw.get("deny_level", "error")
        self.ok = not raw.get("denied", False)
        self.verdict = "passes" if self.ok else "fails"
        self.errors = list(raw.get("errors") or [])
        self.subject = _describe_subject(raw)

    @classmethod
    def from_json(cls, text, exit_code=None):
        """A report from the JSON ``caiclust-check --format json`` prints."""
        return cls(json.loads(text), exit_code=exit_code, text=text)

    def to_json(self):
        """The report as ``caiclust-check --format json`` prints it."""
        if self._text is not None:
            return self._text
        return json.dumps(self.raw, indent=2, sort_keys=True) + "\n"

    def counts(self):
        """``{level: number of findings}`` for the levels found, most
        severe first."""
        counts = {}
        for level in _LEVELS:
            n = sum(1 for f in self.findings if f.level == level)
            if n:
                counts[level] = n
        return counts

    def summary(self):
        """One line: the counts, what was checked, and the verdict."""
        if not self.findings:
            return "ok: no findings for %s" % self.subject
        parts = ", ".join(_plural(n, level) for level, n in self.counts().items())
        if self.ok:
            tail = "passes (nothing at `%s` or above)" % self.deny_level
        else:
            tail = "fails (findings at `%s` or above)" % self.deny_level
        return "%s for %s: %s" % (parts, self.subject, tail)

    def __str__(self):
        lines = []
        if self.findings:
            rows = [("level", "id", "name", "message")]
            rows += [(f.level, f.id, f.name, f.message) for f in self.findings]
            widths = [max(len(r[i]) for r in rows) for i in range(3)]
            for r in rows:
                lines.append("  ".join(c.ljust(w) for c, w in zip(r[:3], widths)) + "  " + r[3])
            lines.append("")
            lines.append("fixes:")
            for f in self.findings:
                if f.fix:
                    lines.append("  %s: %s" % (f.id, f.fix))
            lines.append("")
        if self.recommendation is not None:
            lines.append("plan: %s" % self.recommendation)
        lines.append(self.summary())
        return "\n".join(lines)

    def __repr__(self):
        return "<caiclust.Report: %s>" % self.summary()

    def _repr_html_(self):
        e = html.escape
        out = ['<div class="caiclust-report">']
        if self.findings:
            out.append(
                "<table><thead><tr><th>level</th><th>id</th><th>name</th>"
                "<th>message</th><th>fix</th></tr></thead><tbody>"
            )
            for f in self.findings:
                evidence = "".join(
                    "<li>%s: %s</li>" % (e(ev.source), e(ev.detail)) for ev in f.evidence
                )
                details = (
                    "<details><summary>evidence</summary><ul>%s</ul></details>" % evidence
                    if evidence
                    else ""
                )
                out.append(
                    "<tr><td>%s</td><td><code>%s</code></td><td>%s</td>"
                    "<td>%s%s</td><td>%s</td></tr>"
                    % (
                        e(f.level),
                        e(f.id),
                        e(f.name),
                        e(f.message),
                        details,
                        e(f.fix or ""),
                    )
                )
            out.append("</tbody></table>")
        if self.recommendation is not None:
            out.append("<p><b>plan:</b> %s</p>" % e(str(self.recommendation)))
        out.append("<p><b>%s</b></p>" % e(self.summary()))
        out.append("</div>")
        return "\n".join(out)


def _plural(n, level):
    if n == 1 or level == "info":
        return "%d %s" % (n, level)
    return "%d %ss" % (n, level)


def _describe_subject(raw):
    """What was checked, as ``caiclust-check`` names it."""
    s = raw.get("subject") or {}
    kind = s.get("kind")
    scripts = raw.get("scripts") or []
    if kind == "python":
        what = "Python %s" % s.get("executable")
    elif kind == "tree":
        what = "tree %s" % s.get("root")
    elif kind == "process":
        what = "process %s (%s)" % (s.get("pid"), s.get("executable"))
    elif kind == "scripts":
        what = None
    else:
        what = str(kind)
    if len(scripts) == 1:
        listed = scripts[0]
    elif scripts:
        listed = "%d scripts and notebooks" % len(scripts)
    else:
        listed = None
    if what and listed:
        what = "%s and %s" % (what, listed)
    elif listed:
        what = "a script lint of %s" % listed
    if raw.get("facts_path"):
        what = "%s (facts from %s)" % (what, raw["facts_path"])
    return what or "nothing"
