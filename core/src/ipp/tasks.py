# caiclust's ipyparallel driver, part 2 of 3: its channel to the parent
# (send, log), the task record, and the helpers about processes and
# outputs that the Driver class (driver.py) uses. core/src/ipp/mod.rs joins engine.py, this file and driver.py into
# one program (DRIVER).

import base64
import json
import os
import sys
import threading


def private_stdout():
    wfd = os.dup(1)
    os.dup2(2, 1)
    return os.fdopen(wfd, "w", buffering=1)


OUT = None
OUT_LOCK = threading.Lock()
# Results not written yet, each as JSON text: the loop writes them once a
# round, as one line ({"results": [...]}) when there are several; any
# other message writes them first, so the order of what the parent reads
# is the order sent.
RESULTS = []


def send(msg):
    # Never raises: when the parent is gone, the cluster must still be
    # stopped.
    line = json.dumps(msg) + "\n"
    with OUT_LOCK:
        write_out(results_line() + line)


def result_text(msg):
    """A result as JSON text. A value JSON cannot carry (NaN, infinity)
    fails that task alone instead of the line that holds it."""
    try:
        return json.dumps(msg, allow_nan=False)
    except ValueError:
        msg.pop("ok", None)
        msg["err"] = {"kind": "error",
                      "message": "the result holds NaN or infinity, which JSON cannot carry"}
        return json.dumps(msg, allow_nan=False, default=str)


def send_result(msg):
    text = msg if isinstance(msg, str) else result_text(msg)
    with OUT_LOCK:
        RESULTS.append(text)


def flush_results():
    with OUT_LOCK:
        if RESULTS:
            write_out(results_line())


def results_line():
    # OUT_LOCK held.
    if not RESULTS:
        return ""
    line = RESULTS[0] if len(RESULTS) == 1 else '{"results": [' + ", ".join(RESULTS) + "]}"
    RESULTS.clear()
    return line + "\n"


def write_out(text):
    # OUT_LOCK held.
    global OUT
    if OUT is None:
        return
    try:
        OUT.write(text)
        OUT.flush()
    except (OSError, ValueError):
        OUT = None


def log(text):
    try:
        sys.stderr.write(f"[caiclust-ipp] {text}\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


def orphaned():
    # The parent is gone: nobody reads our standard error any more, and a
    # write to it must not fail the cleanup.
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)
    except OSError:
        pass


def b64(data):
    if not data:
        return None
    if isinstance(data, str):
        data = data.encode("utf-8", "replace")
    return base64.b64encode(data).decode("ascii")


def tail(text, lines=30):
    return "".join((text or "").splitlines(True)[-lines:])


def proc_tree(pid):
    """pid and its descendants (psutil ships with ipyparallel)."""
    import psutil

    try:
        p = psutil.Process(pid)
        return [p] + p.children(recursive=True)
    except psutil.Error:
        return []


def kill_tree(pid):
    import psutil

    procs = proc_tree(pid)
    for p in procs:
        try:
            p.kill()
        except psutil.Error:
            pass
    return [p.pid for p in procs]


class Task:
    # Per-attempt state starts at these class defaults (set on the
    # instance when it changes): a task costs little until it runs.
    attempts = 0
    ar = None
    msg_id = None
    engine = None
    pid = None
    host = None
    started = None  # driver clock (monotonic) of the attempt's start
    started_wall = None
    stopping = None  # (why, since)
    stopping_killed = False
    result_seen = None
    done = False
    batch = None  # the Batch of the current attempt, if it travels in one
    alone = False  # retried after its engine died: never batched again
    slot = False  # a batchable task sent alone: holds a batch slot
    index = None  # its index in its batch
    # Cancelled or withdrawn while ipyparallel held it, the abort asked:
    # the reason, told once the engine answers "aborted" (if the engine
    # had begun it meanwhile, its own result counts).
    withdrawn = None
    payload = payload_error = None

    def __init__(self, msg):
        self.id = msg["id"]
        # Pickled arguments: decoded once (retries send them again), kept
        # as bytes, which ipyparallel sends as a frame of their own.
        payload = msg.pop("payload", None)
        if payload is not None:
            try:
                self.payload = base64.b64decode(payload, validate=True)
            except (TypeError, ValueError) as exc:
                self.payload_error = f"the task's payload is not base64: {exc}"
        self.msg = msg
        self.timeout = msg.get("timeout")
        self.history = []

    @classmethod
    def call(cls, row):
        """A Python call with JSON arguments from its compact row
        `[id, function, args, timeout]`."""
        t = cls.__new__(cls)
        t.id, f, a, t.timeout = row
        t.msg = {"kind": "python", "f": f, "a": a}
        t.history = []
        return t


PREPICKLED = {}


def prepickled(fn):
    """The engine function `fn`, serialised once (ipyparallel's
    PrePickled): ipyparallel otherwise pickles a function's code for
    every task, 1.5 ms of the driver's time each."""
    pre = PREPICKLED.get(fn)
    if pre is None:
        try:
            from ipyparallel.serialize import PrePickled

            pre = PrePickled(fn)
        except Exception:  # noqa: BLE001 - an ipyparallel without it
            pre = fn
        PREPICKLED[fn] = pre
    return pre


def task_metadata(t):
    # The AsyncResult keeps its own reference: the client forgets a task's
    # metadata once its output is complete.
    try:
        md = t.ar.metadata
    except Exception:  # noqa: BLE001
        return None
    return md if isinstance(md, dict) else None


def why_text(why):
    return {"timeout": "ran past its timeout", "cancel": "cancelled"}.get(why, why)


def safe_output(launcher):
    try:
        return launcher.get_output() or ""
    except Exception as exc:  # noqa: BLE001
        return f"(no output: {exc})"


def describe(pids):
    import psutil

    out = []
    for p in pids:
        try:
            out.append(f"{p} ({' '.join(psutil.Process(p).cmdline())[:80]})")
        except psutil.Error:
            out.append(str(p))
    return ", ".join(out)


def pid_alive(pid):
    import psutil

    try:
        return psutil.Process(pid).status() not in ("zombie", "dead")
    except psutil.Error:
        return False


class Batch:
    """Tasks that travel to one engine as one ipyparallel task
    (engine.py's _caiclust_batch); each keeps its own result, timeout,
    retries and cancel.

    `rows` are what the engine gets (`[id, function, args, timeout]`, or
    `[..., payload]` for a pickled call). A batch of fresh submits (`tasks`
    None) has no Task per row until one is needed (a cancel, an error, a
    retry: Driver.task_at); then `tasks[i]` holds it. `done[i]` marks a
    row whose result went out."""

    def __init__(self, rows, tasks=None):
        self.rows = rows
        self.fresh = tasks is None  # rows of first attempts, no Task made yet
        self.tasks = [None] * len(rows) if tasks is None else tasks
        self.made = 0 if tasks is None else len(rows)  # Tasks in self.tasks
        self.done = bytearray(len(rows))
        self.ar = None
        self.msg_id = None
        self.engine = None
        self.pid = None
        self.host = None
        self.seq = 0  # the next "d<seq>" key of its published results
        self.running = None  # the index running, as last published
        self.running_since = None  # driver clock
        self.began = False  # an engine has it (published, or its metadata says)
        self.result_seen = None
        self.kill_after = None  # (index, driver clock): a cancelled task still running
        self.killed = False  # caiclust stopped its engine (timeout, cancel)
        self.aborted = False  # taken back before an engine began it
        self.where = None  # (engine, pid, host) of its last quick result
        self.where_text = ""  # ... as JSON members

    def is_done(self, i):
        if self.done[i]:
            return True
        t = self.tasks[i]
        return t is not None and (t.done or t.batch is not self)


class RowRun:
    """Fresh submits of one function in a row, as the parent sent them
    (compact rows `[id, function, args, timeout]`): queued without a Task
    each. Batches take slices from the front (`pos`); a row taken out on
    its own (a cancel, a task alone) leaves None. `taken` records where
    each slice went: (first index, Batch)."""

    def __init__(self, rows):
        self.rows = rows
        self.f = rows[0][1]
        self.pos = 0
        self.holes = 0  # rows taken out on their own (None)
        self.taken = []

    def left(self):
        return len(self.rows) - self.pos

    def batch_of(self, i):
        """The batch that took row i (< pos), and its index there."""
        for first, b in reversed(self.taken):
            if first <= i:
                return (b, i - first) if i - first < len(b.rows) else (None, None)
        return None, None
