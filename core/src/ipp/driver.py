# caiclust's ipyparallel driver, part 3 of 3 (engine.py and tasks.py come
# first in the one program core/src/ipp/mod.rs joins). Started by
# caiclust-core as
#
#   python -c DRIVER CONFIG_JSON      (or CONFIG_JSON as the first stdin line)
#
# (caiclust-core sends this source as the first input line to a one-line
# `python -c` bootstrap, then CONFIG_JSON: the same thing, shorter than a
# Windows command line.)
#
# It starts an ipyparallel cluster with ipyparallel's own Python API (or
# attaches to a running one), waits for the engines with a deadline, then
# serves tasks read as JSON lines on stdin and answers with JSON lines on
# stdout. Nothing here reimplements ipyparallel's protocols: engines,
# controller, launchers, heartbeats and the load-balancing scheduler are
# ipyparallel's.
#
# To the driver (one JSON object a line):
#   {"op": "run", "id": N, "kind": "python", "f": "pkg.mod:func", "a": ARGS,
#    "timeout": S | null}
#   {"op": "run", "id": N, "kind": "python", "f": "pkg.mod:func",
#    "payload": BASE64, "timeout": S | null}
#       (pickled (args, kwargs), as python_worker.py's call_pickled takes
#       them; the result's "ok" is null and its "payload" the pickled
#       return value, base64)
#   {"op": "run", "id": N, "kind": "command", "argv": [...], "env": {...},
#    "cwd": DIR | null, "stdin": BASE64 | null, "timeout": S | null}
#   {"op": "submit_many", "tasks": [RUN | ROW, ...]}   (tasks, in order; a
#       ROW [N, "pkg.mod:func", ARGS, S | null] is a Python call with JSON
#       arguments, the common case, shorter to write and read)
#   {"op": "cancel", "id": N}
#   {"op": "shutdown"}
# End of input means shutdown too: the driver never outlives its parent.
#
# From the driver:
#   {"event": "controller", "pid": P, "host": H}
#   {"event": "engine", "engine": K, "pid": P, "host": H, "pids": [...]}
#   {"event": "ready", "engines": [K, ...], "cluster_id": ..., ...}
#   {"event": "failed", "message": ..., "engines": [{...}]}      (startup)
#   {"event": "engine_died", "engine": K, "pid": P, "host": H,
#    "tasks": [N, ...], "reason": ...}
#   {"event": "started", "id": N, "engine": K, "pid": P, "host": H,
#    "attempt": A}                       (when seen; quick tasks may not be)
#   {"event": "notice", "message": ...}
#   {"id": N, "ok": VALUE, ...details}
#   {"id": N, "ok": null, "payload": BASE64, ...details}   (pickled calls)
#   {"id": N, "err": {"kind": ..., ...}, ...details}
#   {"batch": {"engine": K, "pid": P, "host": H, "attempts": A},
#    "ids": [N, ...], "starts": [NS, ...], "ends": [NS, ...],
#    "values": [VALUE, ...]}   (plain values of a batch, as the engine
#       wrote them; start and end in ns since the epoch:
#       core/src/ipp/result_lines.rs)
#   {"results": [RESULT | BATCH, ...]}   (several of the above, in order)
#   {"event": "stopped", "left": [pids still alive]}
# Details: "attempts", "history" (failures of earlier attempts), "engine",
# "pid", "host", "started" (unix seconds), "runtime" (seconds), "stdout",
# "stderr" (base64), "exit" ({"code": C} or {"signal": S}, commands).
#
# Tasks are queued here and handed to ipyparallel's load-balanced view
# alone or, small Python calls, in batches (engine.py's _caiclust_batch;
# "Batches" in core/src/ipp/mod.rs): the protocol above stays per task
# either way.
#
# The protocol has a private copy of the standard output: whatever
# ipyparallel or a library prints goes to stderr and cannot corrupt it.

import base64
import collections
import gc
import itertools
import json
import os
import queue
import signal
import socket
import sys
import threading
import time
import traceback

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    # Defined before this file in the joined program (core/src/ipp/mod.rs).
    from driver_batches import DriverBatches
    from driver_queue import DriverQueue
    from driver_startup import DriverStartup
    from engine import (_caiclust_call, _caiclust_call_pickled,
                        _caiclust_command)
    from tasks import (Task, b64, describe, kill_tree, log, orphaned, pid_alive,
                       flush_results, prepickled, private_stdout, send, send_result,
                       task_metadata, why_text)

HOST = socket.gethostname()



# ---------------------------------------------------------------------------
# The driver
# ---------------------------------------------------------------------------


class Driver(DriverStartup, DriverQueue, DriverBatches):
    """The driver: startup (driver_startup.py), tasks, the queue
    (driver_queue.py), batches (driver_batches.py), and the loop."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.cluster = None
        self.client = None
        self.view = None
        self.owned = cfg.get("mode", "start") == "start"
        self.grace = float(cfg.get("grace") or 2.0)
        self.retries = int(cfg.get("retries") or 0)
        self.engines = {}  # id -> {"pid", "host", "pids"}
        self.known_ids = set()
        self.whoami = {}  # engine id -> {"ars": [AsyncResult], "last": when sent}
        self.tasks = {}  # id -> Task (a fresh row has one only once needed)
        # Current attempts by msg_id: all, those not seen starting yet (in
        # submission order), those running, those whose result came.
        self.by_msg = {}
        self.waiting = {}
        self.running = {}
        self.finishing = {}
        self.done_q = queue.Queue()  # msg_ids, from the AsyncResults' callbacks
        # Tasks not handed to ipyparallel yet: Tasks, and RowRuns of fresh
        # compact rows; how many tasks in all.
        self.queue = collections.deque()
        self.queued = 0
        self.fair_share = None  # tasks per batch while dispatch() runs
        # Where each row without a Task is, by id (task_of builds it).
        self.homes = None
        self.batches = {}  # msg_id -> Batch out on the cluster
        self.means = {}  # function -> its mean time on the engines (seconds)
        self.ops = queue.Queue()
        self.parent_gone = threading.Event()
        self.pids = set()  # every process of the cluster this driver started
        self.controller_pid = None
        self.next_engine_check = 0.0

    # -- tasks --------------------------------------------------------------

    def submit(self, t):
        kind = t.msg.get("kind")
        t.attempts += 1
        t.engine = t.pid = t.host = t.started = t.started_wall = None
        t.stopping = None
        t.result_seen = None
        timeout = t.timeout
        # The engine-side backstop fires a little after the driver would
        # have stopped the task, for engines the driver cannot reach.
        backstop = (timeout + self.grace + 5.0) if timeout else None
        if t.payload_error is not None:
            self.finish(t, err={"kind": "start", "message": t.payload_error})
            return
        try:
            if kind == "python" and t.payload is not None:
                ar = self.view.apply_async(prepickled(_caiclust_call_pickled), t.msg["f"],
                                           t.payload, timeout, backstop)
            elif kind == "python":
                ar = self.view.apply_async(prepickled(_caiclust_call), t.msg["f"], t.msg.get("a"),
                                           timeout, backstop)
            elif kind == "command":
                ar = self.view.apply_async(prepickled(_caiclust_command), t.msg["argv"],
                                           t.msg.get("env") or {}, t.msg.get("cwd"),
                                           t.msg.get("stdin"), timeout, self.grace)
            else:
                self.finish(t, err={"kind": "start", "message": f"unknown task kind {kind!r}"})
                return
        except Exception as exc:  # noqa: BLE001
            self.finish(t, err={"kind": "start", "message": f"submission failed: {exc}"})
            return
        t.ar = ar
        t.msg_id = msg_id = ar.msg_ids[0]
        self.by_msg[msg_id] = t
        self.waiting[msg_id] = t
        ar.add_done_callback(lambda _f: self.done_q.put(msg_id))

    def forget_attempt(self, t):
        for d in (self.by_msg, self.waiting, self.running, self.finishing):
            d.pop(t.msg_id, None)

    def finish(self, t, ok=None, err=None, res=None, **extra):
        if t.done:
            return
        t.done = True
        if t.batch is not None and t.index is not None:
            t.batch.done[t.index] = 1
        if t.msg_id:
            self.forget_attempt(t)
            # The client keeps every result; this one is delivered.
            try:
                self.client.results.pop(t.msg_id, None)
            except Exception:  # noqa: BLE001
                pass
        self.tasks.pop(t.id, None)
        msg = {"id": t.id, "attempts": t.attempts, "history": t.history,
               "engine": t.engine, "pid": t.pid, "host": t.host}
        res = res or {}
        if t.started_wall is not None or res.get("started"):
            msg["started"] = res.get("started") or t.started_wall
        if res.get("started") and res.get("ended"):
            msg["runtime"] = max(0.0, res["ended"] - res["started"])
            self.learn(t, max(0.0, msg["runtime"] - (res.get("setup") or 0.0)))
        elif t.started is not None:
            msg["runtime"] = time.monotonic() - t.started
        for k in ("stdout", "stderr", "exit"):
            if res.get(k) is not None:
                msg[k] = res[k]
        if err is None and res.get("payload") is not None:
            msg["payload"] = base64.b64encode(res["payload"]).decode("ascii")
        if res.get("pid"):
            msg["pid"] = res["pid"]
        msg.update(extra)
        if err is None:
            try:
                msg["ok"] = json.loads(ok) if isinstance(ok, str) else ok
            except ValueError as exc:
                err = {"kind": "error", "message": f"the engine's answer is not JSON: {exc}"}
        if err is not None:
            msg["err"] = err
        send_result(msg)

    def on_result(self, t):
        ar = t.ar
        md = task_metadata(t)
        eid = md.get("engine_id")
        if eid is not None:
            t.engine = eid
        out_streams = {}
        for name in ("stdout", "stderr"):
            if md.get(name):
                out_streams[name] = b64(md[name])
        try:
            res = ar.get(0)
        except Exception as exc:  # noqa: BLE001 - RemoteError, EngineError, ...
            ename = getattr(exc, "ename", type(exc).__name__)
            if t.withdrawn is not None and "Aborted" in type(exc).__name__:
                t.attempts = max(0, t.attempts - 1)
                self.finish(t, err={"kind": "cancelled", "reason": t.withdrawn})
                return
            if ename == "EngineError" or type(exc).__name__ == "EngineError":
                self.lost(t, f"engine {t.engine if t.engine is not None else '?'} died "
                             f"while running it ({getattr(exc, 'evalue', exc)})")
                return
            if t.stopping is not None:
                self.stopped(t)
                return
            self.finish(t, err={"kind": "exception", "type_name": ename,
                                "message": str(getattr(exc, "evalue", exc)),
                                "traceback": "\n".join(
                                    getattr(exc, "traceback", None) or [])},
                        res=out_streams)
            return
        res = dict(res)
        if res.get("pid") and t.pid is None:
            t.pid = res["pid"]
        for k, v in out_streams.items():
            res.setdefault(k, v)
        err = res.get("err")
        if err is not None and err.get("kind") == "interrupted":
            if t.stopping is not None:
                self.stopped(t, res)
                return
            err = {"kind": "exception", "type_name": "KeyboardInterrupt",
                   "message": "interrupted", "traceback": ""}
        if t.stopping is not None and t.stopping[0] == "cancel":
            self.stopped(t, res)
            return
        if err is not None:
            self.finish(t, err=err, res=res)
        else:
            self.finish(t, ok=res.get("ok", "null"), res=res)

    def stopped(self, t, res=None):
        why, _ = t.stopping
        if why == "timeout":
            self.learn(t, t.timeout)
            self.finish(t, err={"kind": "timed_out", "after_ms": int(t.timeout * 1000)},
                        res=res)
        else:
            self.finish(t, err={"kind": "cancelled", "reason": why_text(why)}, res=res)

    def lost(self, t, reason, engine_pid=None):
        """The attempt's engine died: retry elsewhere, within the limit.
        (`engine_pid`: the engine's, for a task not seen starting.)"""
        if t.done:
            return
        if t.stopping is not None:
            self.stopped(t)
            return
        if t.withdrawn is not None:
            # Cancelled or withdrawn before it began: not sent again.
            t.attempts = max(0, t.attempts - 1)
            self.finish(t, err={"kind": "cancelled", "reason": t.withdrawn})
            return
        t.history.append({"kind": "worker_died", "exit": None,
                          "pid": t.pid or engine_pid or 0, "reason": reason})
        self.forget_attempt(t)
        if t.attempts <= self.retries:
            send({"event": "notice", "task": t.id,
                  "message": f"task {t.id}: {reason}; retrying on another engine "
                             f"(attempt {t.attempts + 1} of {self.retries + 1})"})
            self.submit(t)
        else:
            last = t.history.pop()
            self.finish(t, err=last)

    def watch_tasks(self):
        now = time.monotonic()
        # Results, as the AsyncResults' callbacks announced them.
        while True:
            try:
                msg_id = self.done_q.get_nowait()
            except queue.Empty:
                break
            b = self.batches.get(msg_id)
            if b is not None and b.result_seen is None:
                b.result_seen = now
            t = self.by_msg.get(msg_id)
            if t is not None and not t.done and t.result_seen is None:
                t.result_seen = now
                self.waiting.pop(msg_id, None)
                self.running.pop(msg_id, None)
                self.finishing[msg_id] = t
        for t in list(self.finishing.values()):
            # The output (iopub) may come just after the result.
            if t.ar.wait_for_output(0) or now - t.result_seen > 1.0:
                self.finishing.pop(t.msg_id, None)
                self.on_result(t)
        # Starts: the scheduler hands tasks out in order, one per engine, so
        # only the oldest waiting ones can have started.
        window = 4 * max(1, len(self.engines)) + 8
        for t in list(itertools.islice(self.waiting.values(), window)):
            md = task_metadata(t)
            if md is None:
                continue
            data = (md.get("data") or {}).get("caiclust")
            if data or md.get("engine_id") is not None:
                t.started = now
                t.started_wall = (data or {}).get("started") or time.time()
                t.engine = md.get("engine_id")
                if data:
                    t.pid, t.host = data.get("pid"), data.get("host")
                else:
                    info = self.engines.get(t.engine) or {}
                    t.pid, t.host = info.get("pid"), info.get("host")
                self.waiting.pop(t.msg_id, None)
                self.running[t.msg_id] = t
                send({"event": "started", "id": t.id, "engine": t.engine, "pid": t.pid,
                      "host": t.host, "attempt": t.attempts})
                if t.withdrawn == "cancelled" and t.stopping is None:
                    # The abort came too late: stopped as a running task.
                    self.stop_running(t, "cancel")
        for t in list(self.running.values()):
            if t.done:
                continue
            if t.pid is None or t.engine is None:
                md = task_metadata(t) or {}
                data = (md.get("data") or {}).get("caiclust")
                if data and t.pid is None:
                    t.pid, t.host = data.get("pid"), data.get("host")
                if t.engine is None and md.get("engine_id") is not None:
                    t.engine = md.get("engine_id")
            if t.stopping is None and t.timeout and now - t.started > t.timeout:
                if t.msg.get("kind") == "command":
                    # The engine stops its own command at the timeout; the
                    # driver steps in only when the engine does not answer.
                    if now - t.started > t.timeout + 2 * self.grace + 5.0:
                        self.stop_running(t, "timeout")
                else:
                    self.stop_running(t, "timeout")
            elif t.stopping is not None:
                why, since = t.stopping
                if now - since > self.grace and not t.stopping_killed:
                    t.stopping_killed = True
                    self.kill_engine_of(t, why)

    def stop_running(self, t, why):
        """Interrupt a running task (SIGINT through the engine's nanny); the
        engine is killed and replaced when it does not stop within the grace."""
        t.stopping = (why, time.monotonic())
        t.stopping_killed = False
        if t.msg.get("kind") == "python" and why == "timeout":
            # A Python task past its timeout may hold the GIL or catch
            # KeyboardInterrupt: no second chance, stop its engine.
            t.stopping_killed = True
            self.kill_engine_of(t, why)
            return
        if t.engine is not None:
            try:
                self.client.send_signal(signal.SIGINT, targets=[t.engine], block=False)
            except Exception as exc:  # noqa: BLE001
                log(f"cannot interrupt engine {t.engine}: {exc}")

    def kill_engine_of(self, t, why):
        info = self.engines.get(t.engine) or {}
        pid = t.pid or info.get("pid")
        host = t.host or info.get("host")
        if pid and host == HOST:
            killed = kill_tree(pid)
            send({"event": "notice", "task": t.id,
                  "message": f"task {t.id}: {why_text(why)}; stopped engine {t.engine} "
                             f"(pid {pid}, processes {killed})"})
            self.forget_engine(t.engine, pid, host, f"stopped by caiclust: task {t.id} "
                                                    f"{why_text(why)}", expected=True)
            self.stopped(t)
            self.replace_engine()
        else:
            # Another host: the engine-side backstop (faulthandler) ends it.
            send({"event": "notice", "task": t.id,
                  "message": f"task {t.id}: {why_text(why)}; engine {t.engine} on "
                             f"{host or 'an unknown host'} cannot be stopped from here, "
                             f"its own watchdog will end it"})

    def replace_engine(self):
        if not self.owned or not self.cfg.get("replace_engines", True):
            return
        try:
            self.in_cluster_thread(self.cluster.start_engines, 1)
            self.report_launcher_pids()
        except Exception as exc:  # noqa: BLE001
            send({"event": "notice", "message": f"could not start a replacement engine: {exc}"})

    def forget_engine(self, eid, pid, host, reason, expected=False):
        if eid not in self.engines:
            return
        del self.engines[eid]
        # Tasks whose result already came are not lost.
        lost = [t for t in self.by_msg.values()
                if t.engine == eid and not t.done and t.result_seen is None]
        tasks = [t.id for t in lost]
        batches = [b for b in self.batches.values() if b.engine == eid]
        tasks += [t.id for b in batches for t in self.unfinished(b)]
        send({"event": "engine_died", "engine": eid, "pid": pid, "host": host,
              "tasks": tasks, "reason": reason, "expected": expected})
        for t in lost:
            if not t.done:
                self.lost(t, f"engine {eid} (pid {pid} on {host}) {reason}", pid)
        for b in batches:
            self.lost_batch(b, f"engine {eid} (pid {pid} on {host}) {reason}")

    def watch_engines(self):
        ids = set(self.client.ids)
        self.identify(ids)
        for eid in list(self.engines):
            info = self.engines[eid]
            if eid not in ids:
                self.forget_engine(eid, info["pid"], info["host"],
                                   "unregistered (heartbeat or nanny)")
                continue
            if info["host"] == HOST and not pid_alive(info["pid"]):
                self.forget_engine(eid, info["pid"], info["host"], "exited")

    def cancel(self, tid):
        t = self.task_of(tid)
        if t is None or t.done:
            return
        if t.batch is not None:
            self.cancel_batched(t)
            return
        if t.started is None and t.ar is not None:
            try:
                self.abort_queued(t.ar, t.id)
            except Exception:  # noqa: BLE001 - it started meanwhile
                pass
            else:
                # Cancelled when the engine answers "aborted"; one that
                # began meanwhile is stopped when seen running.
                t.withdrawn = "cancelled"
                return
        if t.ar is None:
            self.finish(t, err={"kind": "cancelled", "reason": "cancelled"})
            return
        self.stop_running(t, "cancel")

    def abort_queued(self, ar, what):
        """ipyparallel's AsyncResult.abort() without its hang: that asks
        every engine the client knows and waits for every answer, and an
        engine that has just died (gone for the driver, not yet unregistered
        by the controller's heartbeat) never answers. Here only the engines
        alive are asked, and their answers awaited at most the grace
        period. Raises, as abort() does, when the task is done or an engine
        refuses."""
        import concurrent.futures

        if ar.ready():
            raise RuntimeError("the task is done")
        alive = [e for e in self.client.ids if e in self.engines or e not in self.known_ids]
        if not alive:
            return
        replies = self.client.abort(list(ar.msg_ids), targets=alive, block=False)
        try:
            answers = replies.result(timeout=self.grace)
        except concurrent.futures.TimeoutError:
            log(f"{what}: engines {alive} did not answer the abort request in time")
            return
        for msg in answers:
            content = msg.get("content") or {}
            if content.get("status") != "ok":
                raise RuntimeError(f"abort refused: {content}")

    def withdraw(self, tid):
        """Cancel a task that has not begun; a running one goes on."""
        t = self.task_of(tid)
        if t is None or t.done or t.started is not None:
            return
        if t.batch is not None:
            # Only while its batch waits for an engine; a batch that began
            # counts as begun for each of its tasks.
            if self.batch_began(t.batch) or not self.abort_batch(t.batch):
                return
            t.withdrawn = "withdrawn before it started"
            return
        # What the engines have said so far (the poll in the loop may not
        # have seen it yet).
        md = task_metadata(t) if t.ar is not None else None
        if md is not None and ((md.get("data") or {}).get("caiclust")
                               or md.get("engine_id") is not None):
            return
        if t.ar is not None:
            try:
                self.abort_queued(t.ar, t.id)
            except Exception:  # noqa: BLE001 - it started meanwhile
                return
            # Told when the engine answers "aborted" (one that began
            # meanwhile goes on).
            t.withdrawn = "withdrawn before it started"
            return
        t.attempts = max(0, t.attempts - 1)
        self.finish(t, err={"kind": "cancelled", "reason": "withdrawn before it started"})

    # -- the loop -----------------------------------------------------------

    def serve(self):
        while True:
            try:
                # Batches out: their published results are read promptly.
                op = self.ops.get(timeout=0.005 if self.batches else 0.02)
            except queue.Empty:
                op = None
            while op is not None:
                if op.get("op") == "eof":
                    orphaned()
                    return "eof"
                if op.get("op") == "shutdown":
                    return "shutdown"
                self.handle(op)
                try:
                    op = self.ops.get_nowait()
                except queue.Empty:
                    op = None
            now = time.monotonic()
            if now >= self.next_engine_check:
                self.next_engine_check = now + 0.1
                self.watch_engines()
            self.watch_tasks()
            self.watch_batches()
            self.dispatch()
            flush_results()

    def handle(self, op):
        kind = op.get("op")
        if kind == "run":
            self.enqueue(Task(op))
        elif kind == "submit_many":
            # Run messages, and Python calls' compact rows (queued as they
            # are, in runs).
            msgs = op.get("tasks") or []
            if dict not in set(map(type, msgs)):
                self.enqueue_rows(msgs)
                return
            for is_run, group in itertools.groupby(msgs, key=lambda m: type(m) is dict):
                if is_run:
                    for msg in group:
                        self.enqueue(Task(msg))
                else:
                    self.enqueue_rows(list(group))
        elif kind == "wake":
            pass
        elif kind == "cancel":
            self.cancel(op.get("id"))
        elif kind == "withdraw":
            self.withdraw(op.get("id"))
        else:
            send({"event": "notice", "message": f"unknown op {kind!r}"})

    def shutdown(self):
        for t in self.pending():
            self.finish(t, err={"kind": "cancelled", "reason": "the backend shut down"})
        if self.client is not None:
            try:
                self.client.close()
            except Exception:  # noqa: BLE001
                pass
        if self.owned and self.cluster is not None:
            self.report_launcher_pids()
            try:
                for es in self.cluster.engines.values():
                    # Quick: TERM, then KILL after a second.
                    for el in list(getattr(es, "launchers", {}).values()):
                        el.stop_seconds_until_kill = 1
                if self.cluster.controller is not None:
                    self.cluster.controller.stop_seconds_until_kill = 1
                self.in_cluster_thread(self.cluster.stop_cluster)
            except Exception as exc:  # noqa: BLE001
                log(f"stopping the cluster: {exc}")
            self.cluster.shutdown_atexit = False
        left = []
        if self.owned:
            # Nannies notice their engine's end within a second or so; no
            # need to wait for that.
            deadline = time.monotonic() + 0.3
            while time.monotonic() < deadline:
                left = [p for p in self.pids if pid_alive(p)]
                if not left:
                    break
                time.sleep(0.05)
            if left:
                log(f"still running after the stop: {describe(left)}; killed")
            for p in left:
                kill_tree(p)
            deadline = time.monotonic() + 2.0
            while left and time.monotonic() < deadline:
                time.sleep(0.05)
                left = [p for p in left if pid_alive(p)]
        # The run's folder (profile, logs, connection files) goes too: the
        # caller may be gone (Ctrl-C) and cannot remove it.
        run_dir = self.cfg.get("run_dir")
        if run_dir and os.path.isdir(run_dir):
            import shutil

            shutil.rmtree(run_dir, ignore_errors=True)
        send({"event": "stopped", "left": sorted(left)})


def on_term(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def read_ops(driver, inp):
    for line in inp:
        line = line.strip()
        if not line:
            continue
        try:
            driver.ops.put(json.loads(line))
        except ValueError as exc:
            send({"event": "notice", "message": f"bad message to the driver: {exc}"})
    driver.parent_gone.set()
    driver.ops.put({"op": "eof"})


def main():
    global OUT
    sys.dont_write_bytecode = True
    OUT = private_stdout()
    inp = sys.stdin
    if len(sys.argv) > 1 and sys.argv[1].strip().startswith("{"):
        cfg_text = sys.argv[1]
    else:
        cfg_text = inp.readline()
    try:
        cfg = json.loads(cfg_text)
    except ValueError as exc:
        send({"event": "failed", "message": f"bad driver configuration: {exc}", "engines": []})
        return 2
    # Stop on TERM as on end of input: the cluster goes down with us.
    signal.signal(signal.SIGTERM, on_term)
    try:
        import ipyparallel  # noqa: F401
    except Exception as exc:  # noqa: BLE001
        send({"event": "failed", "engines": [],
              "message": f"cannot import ipyparallel in {sys.executable}: {exc}"})
        return 3
    driver = Driver(cfg)
    reader = threading.Thread(target=read_ops, args=(driver, inp), daemon=True)
    reader.start()
    deadline = time.monotonic() + float(cfg.get("startup_timeout") or 60)
    code = 0
    try:
        if driver.owned:
            driver.start_cluster()
        else:
            driver.attach()
        failure = driver.wait_for_engines(deadline)
        if failure is not None:
            message, engines = failure
            send({"event": "failed", "message": message, "engines": engines})
            code = 1
        else:
            driver.view = driver.client.load_balanced_view()
            driver.view.retries = 0
            ready = {"event": "ready", "engines": sorted(driver.engines),
                     "cluster_id": driver.cluster.cluster_id if driver.cluster else
                     getattr(driver.client, "cluster_id", None),
                     "python": sys.version.split()[0],
                     "ipyparallel": ipyparallel.__version__}
            if driver.cluster is not None:
                ready["connection_file"] = os.path.join(
                    driver.cluster.profile_dir, "security",
                    f"ipcontroller-{driver.cluster.cluster_id}-client.json")
            send(ready)
            # The driver parses and holds tens of thousands of small lists
            # (task rows): with the default threshold the cyclic collector
            # would run every 700 of them and walk ipyparallel's whole
            # client state, which gc.freeze() sets aside (it lives as long
            # as the driver).
            gc.collect()
            gc.freeze()
            gc.set_threshold(100_000, 20, 20)
            driver.serve()
    except KeyboardInterrupt:
        code = 130
    except BaseException as exc:  # noqa: BLE001
        send({"event": "failed", "engines": driver.engine_failures() if driver.owned else [],
              "message": f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"})
        code = 1
    finally:
        try:
            driver.shutdown()
        except BaseException as exc:  # noqa: BLE001
            log(f"shutdown failed: {exc}")
    return code


if __name__ == "__main__":
    code = main()
    sys.stderr.flush()
    os._exit(code)
