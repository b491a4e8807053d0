# caiclust's Python worker. Started by caiclust-core; speaks JSON lines.
#
#   python python_worker.py worker
#       A worker on stdin/stdout (the spawn start method).
#   python python_worker.py server SOCKET [MODULE ...]
#       A fork server: imports the MODULEs (none: a clean server, the
#       forkserver start method; the task modules: the fork start method),
#       then forks one worker per {"fork": N} line read on stdin. Each
#       worker connects to the Unix socket SOCKET and says hello with N.
#       Exits of forked workers are reported as {"exited": PID, ...}.
#
# Messages to a worker: {"run": [{"id": 1, "f": "pkg.mod:func", "a": ARGS}]}
# or {"stop": true}. Answers, one line per task: {"id": 1, "ok": VALUE} or
# {"id": 1, "err": {"type": ..., "message": ..., "traceback": ...}}.
# Answers to a batch of tiny tasks are written together, at most about a
# millisecond late (the Answers class).
#
# The protocol has private copies of the standard streams: whatever a task
# prints to stdout goes to stderr and cannot corrupt it.

import importlib
import json
import os
import sys


def private_channel(read_fd, write_fd):
    rfd = os.dup(read_fd)
    wfd = os.dup(write_fd)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)
    return os.fdopen(rfd, "rb"), os.fdopen(wfd, "wb")


_functions = {}


def resolve(name):
    f = _functions.get(name)
    if f is None:
        module, sep, attr = name.partition(":")
        if not sep or not module or not attr:
            raise ValueError(f"expected package.module:function, got {name!r}")
        obj = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
        if not callable(obj):
            raise TypeError(f"{name} is not callable")
        _functions[name] = f = obj
    return f


def call(task):
    f = resolve(task["f"])
    a = task.get("a")
    if isinstance(a, list):
        return f(*a)
    if isinstance(a, dict):
        return f(**a)
    if a is None:
        return f()
    return f(a)


def error_of(exc):
    import traceback

    # Drop this worker's own frames (it runs as `python -c`, file "<string>"):
    # the traceback starts at the task's code.
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename == "<string>":
        tb = tb.tb_next
    return {
        "type": type(exc).__name__,
        "message": str(exc),
        "traceback": "".join(traceback.format_exception(type(exc), exc, tb)),
    }


class Answers:
    """Answers waiting to be written. Tiny tasks share one write (and one
    wake-up of the parent); a flusher thread sends whatever waited 1 ms, so
    a long task never holds back the answers before it by more than that
    (plus Python's thread switch interval)."""

    AFTER = 0.001

    def __init__(self, out):
        import threading

        self.out = out
        self.buf = []
        self.since = None
        self.closed = False
        self.broken = False
        self.cv = threading.Condition()
        threading.Thread(target=self._flusher, name="caiclust-answers", daemon=True).start()

    def _flush(self):
        if self.buf and not self.broken:
            try:
                self.out.write(b"".join(self.buf))
                self.out.flush()
            except OSError:
                self.broken = True
        self.buf.clear()
        self.since = None

    def add(self, data, last):
        from time import monotonic

        with self.cv:
            self.buf.append(data)
            now = monotonic()
            if last or (self.since is not None and now - self.since >= self.AFTER):
                self._flush()
            elif self.since is None:
                self.since = now
                self.cv.notify()
            return not self.broken

    def _flusher(self):
        from time import monotonic

        with self.cv:
            while not self.closed:
                if self.since is None:
                    self.cv.wait()
                    continue
                due = self.since + self.AFTER - monotonic()
                if due > 0:
                    self.cv.wait(due)
                else:
                    self._flush()

    def close(self):
        with self.cv:
            self._flush()
            self.closed = True
            self.cv.notify()


def serve(inp, out):
    dumps = json.dumps
    loads = json.loads
    answers = Answers(out)
    try:
        while True:
            line = inp.readline()
            if not line:
                return
            msg = loads(line)
            if msg.get("stop"):
                return
            tasks = msg.get("run", ())
            last = len(tasks) - 1
            for i, task in enumerate(tasks):
                tid = task["id"]
                try:
                    value = call(task)
                    try:
                        answer = dumps({"id": tid, "ok": value})
                    except (TypeError, ValueError) as exc:
                        answer = dumps({"id": tid, "err": {
                            "type": "TypeError",
                            "message": f"result is not JSON-serialisable: {exc}",
                            "traceback": ""}})
                except SystemExit as exc:
                    answer = dumps({"id": tid, "err": {
                        "type": "SystemExit", "message": str(exc.code), "traceback": ""}})
                except BaseException as exc:  # noqa: BLE001 - every failure is reported
                    answer = dumps({"id": tid, "err": error_of(exc)})
                if not answers.add(answer.encode() + b"\n", i == last):
                    return
    finally:
        answers.close()


def hello(out, worker):
    out.write(json.dumps({"hello": {"pid": os.getpid(), "worker": worker,
                                    "python": sys.version.split()[0]}}).encode() + b"\n")
    out.flush()


def die_with_parent():
    """Linux: be killed when the fork server dies (PR_SET_PDEATHSIG)."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, 9)  # PR_SET_PDEATHSIG, SIGKILL
        except (OSError, AttributeError):
            pass


def worker_main():
    inp, out = private_channel(0, 1)
    hello(out, None)
    serve(inp, out)


def server_main(sock_path, preload):
    import select
    import signal
    import socket

    inp, out = private_channel(0, 1)
    for module in preload:
        importlib.import_module(module)
    hello(out, None)

    def report(msg):
        out.write(json.dumps(msg).encode() + b"\n")
        out.flush()

    def reap():
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if os.WIFSIGNALED(status):
                report({"exited": pid, "signal": os.WTERMSIG(status)})
            else:
                report({"exited": pid, "code": os.WEXITSTATUS(status)})

    buf = b""
    while True:
        ready, _, _ = select.select([inp], [], [], 0.05)
        reap()
        if not ready:
            continue
        chunk = os.read(inp.fileno(), 65536)
        if not chunk:
            break
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            msg = json.loads(line)
            n = msg.get("fork")
            if n is None:
                continue
            try:
                pid = os.fork()
            except OSError as exc:
                report({"fork_error": n, "message": str(exc)})
                continue
            if pid == 0:
                code = 0
                try:
                    die_with_parent()
                    os.setpgid(0, 0)
                    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                    inp.close()
                    out.close()
                    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                    s.connect(sock_path)
                    w_in = s.makefile("rb")
                    w_out = s.makefile("wb")
                    hello(w_out, n)
                    serve(w_in, w_out)
                except BaseException:  # noqa: BLE001
                    import traceback

                    traceback.print_exc()
                    code = 70
                finally:
                    sys.stderr.flush()
                    os._exit(code)
            report({"forked": n, "pid": pid})
    # The parent went away: stop the workers this server forked.
    reap()


def main():
    sys.dont_write_bytecode = True
    mode = sys.argv[1] if len(sys.argv) > 1 else "worker"
    if mode == "worker":
        worker_main()
    elif mode == "server":
        server_main(sys.argv[2], [m for m in sys.argv[3:] if m])
    else:
        sys.stderr.write(f"caiclust python worker: unknown mode {mode!r}\n")
        sys.exit(2)


if __name__ == "__main__":
    main()
