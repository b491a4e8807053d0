"""Helpers shared by the Python package's tests: running a script in a
fresh interpreter, and the processes a process left behind."""

import os
import subprocess
import sys
import textwrap

import pytest


def children_of(pid):
    """Live (not zombie) processes whose parent is ``pid``, from /proc."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(entry))
    return found


def descendants(pid):
    """Every live process below ``pid``."""
    out, todo = [], [pid]
    while todo:
        for child in children_of(todo.pop()):
            out.append(child)
            todo.append(child)
    return out


@pytest.fixture
def run_script(tmp_path):
    """Write ``code`` to a script and run it with this interpreter;
    returns the CompletedProcess (text), raising TimeoutExpired after
    ``timeout`` seconds (the process group is killed)."""

    def run(code, timeout=120, name="script.py", env=None, args=()):
        path = tmp_path / name
        path.write_text(textwrap.dedent(code))
        full_env = dict(os.environ)
        full_env.update(env or {})
        proc = subprocess.Popen([sys.executable, str(path), *args], cwd=tmp_path,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=full_env, start_new_session=True)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.communicate()
            raise
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)

    return run
