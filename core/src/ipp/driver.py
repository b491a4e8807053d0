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
    from clusters import (batch_job_failure, engines_not_started, is_batch_system, is_remote,
                          srun_engine_launcher)
    from engine import (_caiclust_batch, _caiclust_call, _caiclust_call_pickled,
                        _caiclust_command, _caiclust_whoami)
    from tasks import (Batch, Task, b64, describe, kill_tree, log, orphaned, pid_alive,
                       private_stdout, proc_tree, safe_output, send, tail, task_metadata,
                       why_text)

HOST = socket.gethostname()

# Batching (see "Batches" in core/src/ipp/mod.rs): a batch holds about
# BATCH_SECONDS of work by the measured mean task time, at most MAX_BATCH
# tasks, a fair share of the queue unless that is under SPLIT_SECONDS of
# work; each engine has at most BATCH_SLOTS batches out (one running, one
# waiting at the scheduler); pickled calls larger than BATCH_PAYLOAD travel
# alone.
BATCH_SECONDS = 0.02
SPLIT_SECONDS = 0.005
MAX_BATCH = 512
BATCH_SLOTS = 2
BATCH_PAYLOAD = 64 * 1024


# ---------------------------------------------------------------------------
# The driver
# ---------------------------------------------------------------------------


class Driver:
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
        self.tasks = {}  # id -> Task
        # Current attempts by msg_id: all, those not seen starting yet (in
        # submission order), those running, those whose result came.
        self.by_msg = {}
        self.waiting = {}
        self.running = {}
        self.finishing = {}
        self.done_q = queue.Queue()  # msg_ids, from the AsyncResults' callbacks
        self.queue = collections.deque()  # tasks not handed to ipyparallel yet
        self.batches = {}  # msg_id -> Batch out on the cluster
        self.means = {}  # function -> its mean time on the engines (seconds)
        self.ops = queue.Queue()
        self.parent_gone = threading.Event()
        self.pids = set()  # every process of the cluster this driver started
        self.controller_pid = None
        self.next_engine_check = 0.0

    # -- startup ------------------------------------------------------------

    def launcher_config(self):
        from traitlets.config import Config

        c = Config()
        for section, values in (self.cfg.get("launcher_config") or {}).items():
            for key, value in values.items():
                c[section][key] = value
        # Engines over ssh run this interpreter's path unless told
        # otherwise: the same environment on a shared file system, as on
        # the lab clusters this is for (ipyparallel's default, `python3`,
        # is whatever the remote PATH finds first).
        if self.cfg.get("engine_launcher") == "ssh":
            configured = (self.cfg.get("launcher_config") or {})
            if not any("remote_python" in (configured.get(k) or {})
                       for k in ("SSHLauncher", "SSHEngineLauncher", "SSHEngineSetLauncher")):
                c.SSHLauncher.remote_python = sys.executable
        # Local engines also inherit this process's environment; engines
        # on other hosts get exactly this.
        c.EngineLauncher.environment = dict(self.cfg.get("engine_env") or {})
        engine_args = list(self.cfg.get("engine_args") or [])
        if self.cfg.get("work_dir"):
            engine_args.append(f"--work-dir={self.cfg['work_dir']}")
        if engine_args:
            c.EngineLauncher.engine_args = engine_args
        return c

    def in_cluster_thread(self, fn, *args):
        # The cluster's own event loop thread: the launchers' callbacks
        # (process exits, output collection) run there.
        runner = getattr(self.cluster, "_in_thread", None)
        if runner is not None:
            return runner(fn, *args)
        import asyncio

        return asyncio.run(fn(*args))

    def start_cluster(self):
        import ipyparallel as ipp

        cfg = self.cfg
        heartbeat = int(cfg.get("heartbeat_ms") or 1000)
        controller_args = [f"--HeartMonitor.period={heartbeat}",
                           "--HeartMonitor.max_heartmonitor_misses=3"]
        controller_args += list(cfg.get("controller_args") or [])
        kwargs = dict(
            n=int(cfg["engines"]),
            profile_dir=cfg["profile_dir"],
            cluster_id=cfg["cluster_id"],
            engines=(srun_engine_launcher() if cfg.get("engine_launcher") == "srun"
                     else cfg.get("engine_launcher") or "local"),
            controller=cfg.get("controller_launcher") or "local",
            controller_args=controller_args,
            config=self.launcher_config(),
            shutdown_atexit=True,
            delay=0,
            load_profile=False,
        )
        if cfg.get("controller_ip"):
            kwargs["controller_ip"] = cfg["controller_ip"]
        if cfg.get("controller_location"):
            kwargs["controller_location"] = cfg["controller_location"]
        self.cluster = ipp.Cluster(**kwargs)
        self.in_cluster_thread(self.cluster.start_controller)
        pid = getattr(self.cluster.controller, "pid", -1)
        if isinstance(pid, int) and pid > 0:
            self.controller_pid = pid
            self.pids.add(pid)
        send({"event": "controller", "pid": self.controller_pid, "host": HOST})
        try:
            if is_batch_system(cfg.get("engine_launcher")):
                # One job per engine: a job lost takes one engine, not all.
                for _ in range(int(cfg["engines"])):
                    self.in_cluster_thread(self.cluster.start_engines, 1)
            else:
                self.in_cluster_thread(self.cluster.start_engines, int(cfg["engines"]))
        except Exception as exc:  # noqa: BLE001 - ssh, sbatch, mpiexec failures
            raise RuntimeError(engines_not_started(cfg, exc)) from exc
        self.report_launcher_pids()
        self.client = self.in_cluster_thread(self.cluster.connect_client)

    def attach(self):
        import ipyparallel as ipp

        a = self.cfg.get("attach") or {}
        if a.get("url_file"):
            self.client = ipp.Client(a["url_file"])
        else:
            kwargs = {}
            if a.get("profile_dir"):
                kwargs["profile_dir"] = a["profile_dir"]
            if a.get("profile"):
                kwargs["profile"] = a["profile"]
            if a.get("cluster_id"):
                kwargs["cluster_id"] = a["cluster_id"]
            self.client = ipp.Client(**kwargs)

    def launcher_pids(self):
        """(identifier, pid) of every local engine process the launchers started."""
        out = []
        if self.cluster is None:
            return out
        for es in list(self.cluster.engines.values()):
            for ident, el in list(getattr(es, "launchers", {}).items()):
                pid = getattr(el, "pid", -1)
                if isinstance(pid, int) and pid > 0:
                    out.append((ident, pid))
            pid = getattr(es, "pid", -1)
            if isinstance(pid, int) and pid > 0:
                out.append(("set", pid))
        return out

    def report_launcher_pids(self):
        new = []
        for _, pid in self.launcher_pids():
            for p in [pid] + [c.pid for c in proc_tree(pid)]:
                if p not in self.pids:
                    self.pids.add(p)
                    new.append(p)
        if self.controller_pid:
            for p in [c.pid for c in proc_tree(self.controller_pid)]:
                if p not in self.pids:
                    self.pids.add(p)
                    new.append(p)
        if new:
            send({"event": "pids", "pids": sorted(new)})

    def engine_failures(self):
        """What became of the engines that did not register, and why."""
        out = []
        if self.cluster is None:
            return out
        for es_id, es in list(self.cluster.engines.items()):
            launchers = getattr(es, "launchers", None)
            if launchers is None:
                out.append(batch_job_failure(es_id, es))
                continue
            stopped = (getattr(es, "stop_data", None) or {}).get("engines", {})
            outputs = getattr(es, "outputs", {}) or {}
            for ident, data in stopped.items():
                out.append({"engine": ident, "state": "exited",
                            "exit_code": data.get("exit_code"), "pid": data.get("pid"),
                            "output": tail(outputs.get(ident, ""))})
            for ident, el in list(launchers.items()):
                alive = el.process is not None and el.process.is_running()
                item = {"engine": ident, "pid": el.pid,
                        "state": "running, not registered" if alive else "exited",
                        "output": tail(safe_output(el))}
                if not alive:
                    try:
                        item["exit_code"] = el.process.wait(0)
                    except Exception:  # noqa: BLE001
                        pass
                out.append(item)
        return out

    def all_engines_gone(self):
        if self.cluster is None:
            return False
        for es in list(self.cluster.engines.values()):
            launchers = getattr(es, "launchers", None)
            if launchers is None:
                if getattr(es, "state", "") != "after":
                    return False
                continue
            for el in list(launchers.values()):
                if is_remote(el):
                    # Its local process is only ssh: the engine's fate shows
                    # in registration and heartbeats, not here.
                    return False
                if el.process is not None and el.process.is_running() \
                        and el.process.status() != "zombie":
                    return False
        return True

    def controller_gone(self):
        if self.controller_pid is None:
            return False
        import psutil

        try:
            return psutil.Process(self.controller_pid).status() == "zombie"
        except psutil.Error:
            return True

    def wait_for_engines(self, deadline):
        want = int(self.cfg.get("engines") or 0)
        if not self.owned:
            want = int(self.cfg.get("min_engines") or 1)
        all_registered = None
        while True:
            if self.parent_gone.is_set():
                orphaned()
                return ("the caller went away during startup", [])
            ids = set(self.client.ids)
            self.identify(ids)
            if len(ids) >= want:
                if all(i in self.engines for i in ids):
                    return None
                # An engine that registered but does not say which process
                # it is still takes tasks (they report their process).
                all_registered = all_registered or time.monotonic()
                if time.monotonic() - all_registered > 10.0:
                    silent = sorted(i for i in ids if i not in self.engines)
                    send({"event": "notice",
                          "message": f"engines {silent} registered but did not say which "
                                     f"process they are"})
                    return None
            if self.owned:
                self.report_launcher_pids()
                if self.controller_gone():
                    out = ""
                    if self.cluster.controller is not None:
                        out = tail(safe_output(self.cluster.controller))
                    return ("the ipyparallel controller exited during startup:\n" + out,
                            self.engine_failures())
                if len(ids) < want and self.all_engines_gone():
                    # Give the launchers' callbacks a moment to collect output.
                    time.sleep(0.3)
                    return (f"every engine exited before registering "
                            f"({len(ids)} of {want} registered)", self.engine_failures())
            if time.monotonic() >= deadline:
                registered = sorted(ids)
                return (f"{len(registered)} of {want} engines registered within the "
                        f"{self.cfg.get('startup_timeout')} s startup deadline "
                        f"(registered: {registered})", self.engine_failures())
            time.sleep(0.05)

    def identify(self, ids):
        """Ask each new engine which process it is (while it is idle). A
        request sent just as an engine registers can be lost (its sockets
        may not be connected yet): unanswered ones are sent again, up to
        three times (a busy engine answers after its task)."""
        now = time.monotonic()
        for eid in ids:
            if eid in self.engines:
                continue
            asked = self.whoami.setdefault(eid, {"ars": [], "last": None})
            answered = next((ar for ar in asked["ars"] if ar.ready()), None)
            if answered is not None:
                del self.whoami[eid]
                try:
                    info = answered.get(0)
                except Exception as exc:  # noqa: BLE001
                    log(f"engine {eid} did not say who it is: {exc}")
                    continue
                self.add_engine(eid, info["pid"], info["host"])
                continue
            if len(asked["ars"]) < 3 and (asked["last"] is None or now - asked["last"] > 3.0):
                try:
                    asked["ars"].append(self.client[eid].apply_async(_caiclust_whoami))
                    asked["last"] = now
                except Exception as exc:  # noqa: BLE001
                    log(f"cannot ask engine {eid} who it is: {exc}")

    def add_engine(self, eid, pid, host):
        pids = [pid]
        if host == HOST:
            pids = [p.pid for p in proc_tree(pid)] or [pid]
        self.engines[eid] = {"pid": pid, "host": host, "pids": pids}
        self.known_ids.add(eid)
        if self.owned and host == HOST:
            self.pids.update(pids)
        send({"event": "engine", "engine": eid, "pid": pid, "host": host, "pids": pids})

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
                ar = self.view.apply_async(_caiclust_call_pickled, t.msg["f"], t.payload,
                                           timeout, backstop)
            elif kind == "python":
                ar = self.view.apply_async(_caiclust_call, t.msg["f"], t.msg.get("a"),
                                           timeout, backstop)
            elif kind == "command":
                ar = self.view.apply_async(_caiclust_command, t.msg["argv"],
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
            self.learn(t, msg["runtime"])
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
        send(msg)

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

    def lost(self, t, reason):
        """The attempt's engine died: retry elsewhere, within the limit."""
        if t.done:
            return
        if t.stopping is not None:
            self.stopped(t)
            return
        t.history.append({"kind": "worker_died", "exit": None, "pid": t.pid or 0,
                          "reason": reason})
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
        tasks += [t.id for b in batches for t in b.unfinished()]
        send({"event": "engine_died", "engine": eid, "pid": pid, "host": host,
              "tasks": tasks, "reason": reason, "expected": expected})
        for t in lost:
            if not t.done:
                self.lost(t, f"engine {eid} (pid {pid} on {host}) {reason}")
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
        t = self.tasks.get(tid)
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
                self.finish(t, err={"kind": "cancelled", "reason": "cancelled"})
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
        t = self.tasks.get(tid)
        if t is None or t.done or t.started is not None:
            return
        if t.batch is not None:
            # Only while its batch waits for an engine; a batch that began
            # counts as begun for each of its tasks.
            if self.batch_began(t.batch) or not self.abort_batch(t.batch):
                return
            t.attempts = max(0, t.attempts - 1)
            self.finish(t, err={"kind": "cancelled", "reason": "withdrawn before it started"})
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
        t.attempts = max(0, t.attempts - 1)
        self.finish(t, err={"kind": "cancelled", "reason": "withdrawn before it started"})

    # -- batches ------------------------------------------------------------

    def learn(self, t, seconds):
        """Follow the mean time of the task's function (an exponential
        average: a change of workload shows within a few tasks)."""
        f = t.msg.get("f") or t.msg.get("kind")
        mean = self.means.get(f)
        self.means[f] = seconds if mean is None else 0.7 * mean + 0.3 * seconds

    def batchable(self, t):
        if t.alone or t.msg.get("kind") != "python" or t.payload_error is not None:
            return False
        return t.payload is None or len(t.payload) <= BATCH_PAYLOAD

    def take_batch(self):
        """The next batch from the front of the queue: about BATCH_SECONDS
        of work by the mean time of each task's function, at most
        MAX_BATCH tasks, and no more than a fair share of the queue per
        engine unless that share is less than SPLIT_SECONDS of work (a
        round trip costs more than that). A task whose function has no
        time yet, or a long one, goes alone."""
        head = self.means.get(self.queue[0].msg.get("f")) if self.queue else None
        least = int(SPLIT_SECONDS / max(head, 20e-6)) if head is not None else 1
        fair = -(-len(self.queue) // max(1, len(self.engines)))
        limit = min(MAX_BATCH, max(fair, least))
        group, work = [], 0.0
        while self.queue and len(group) < limit:
            u = self.queue[0]
            if not u.done and not self.batchable(u):
                break
            mean = self.means.get(u.msg.get("f"))
            cost = BATCH_SECONDS if mean is None else max(mean, 20e-6)
            if group and work + cost > BATCH_SECONDS:
                break
            self.queue.popleft()
            if not u.done:
                group.append(u)
                work += cost
        return group

    def dispatch(self):
        """Hand queued tasks to ipyparallel, in order: commands, large
        payloads and retried tasks alone at once, Python calls in batches
        while an engine has a free slot."""
        slots = BATCH_SLOTS * max(1, len(self.engines))
        out = len(self.batches) + sum(1 for t in self.by_msg.values() if t.slot)
        while self.queue:
            t = self.queue[0]
            if t.done:
                self.queue.popleft()
                continue
            if not self.batchable(t):
                self.queue.popleft()
                self.submit(t)
                continue
            if out >= slots:
                return
            group = self.take_batch()
            out += 1
            if len(group) == 1:
                group[0].slot = True
                self.submit(group[0])
            elif group:
                self.submit_batch(group)

    def submit_batch(self, group):
        b = Batch(group)
        items = []
        for i, t in enumerate(group):
            t.attempts += 1
            t.batch = b
            t.ar = t.msg_id = None
            t.engine = t.pid = t.host = t.started = t.started_wall = None
            t.stopping = None
            backstop = (t.timeout + self.grace + 5.0) if t.timeout else None
            if t.payload is not None:
                items.append((i, "pickled", t.msg["f"], t.payload, t.timeout, backstop))
            else:
                items.append((i, "python", t.msg["f"], t.msg.get("a"), t.timeout, backstop))
        try:
            ar = self.view.apply_async(_caiclust_batch, _caiclust_call,
                                       _caiclust_call_pickled, items)
        except Exception as exc:  # noqa: BLE001
            for t in group:
                t.batch = None
                self.finish(t, err={"kind": "start", "message": f"submission failed: {exc}"})
            return
        b.ar, b.msg_id = ar, ar.msg_ids[0]
        self.batches[b.msg_id] = b
        msg_id = b.msg_id

        def done(_f):
            self.done_q.put(msg_id)
            self.ops.put({"op": "wake"})

        ar.add_done_callback(done)

    def batch_began(self, b):
        if b.began:
            return True
        md = task_metadata(b) or {}
        return md.get("engine_id") is not None or "p" in (md.get("data") or {})

    def abort_batch(self, b):
        """Ask the engines to drop a batch none has begun; False when it
        began meanwhile. Its other tasks queue again once ipyparallel says
        it was aborted (batch_done): an engine that had just begun it
        runs it, and their results count."""
        if b.aborted:
            return True
        try:
            self.abort_queued(b.ar, f"batch of {len(b.tasks)} tasks")
        except Exception:  # noqa: BLE001 - it started meanwhile
            return False
        b.aborted = True
        return True

    def requeue(self, tasks):
        """Tasks of a batch that never began go first in the queue again,
        no attempt counted."""
        for t in tasks:
            t.batch = None
            t.attempts = max(0, t.attempts - 1)
            t.engine = t.pid = t.host = t.started = t.started_wall = None
        self.queue.extendleft(reversed(tasks))

    def drop_batch(self, b):
        self.batches.pop(b.msg_id, None)
        try:
            self.client.results.pop(b.msg_id, None)
        except Exception:  # noqa: BLE001
            pass

    def cancel_batched(self, t):
        b = t.batch
        if not self.batch_began(b) and self.abort_batch(b):
            t.attempts = max(0, t.attempts - 1)
            self.finish(t, err={"kind": "cancelled", "reason": "cancelled"})
            return
        index = b.tasks.index(t)
        self.finish(t, err={"kind": "cancelled", "reason": "cancelled"})
        if b.running == index:
            # Abandoned; its engine is stopped if it is still at it after
            # the grace period (the rest of its batch queues again).
            b.kill_after = (index, time.monotonic())

    def watch_batches(self):
        now = time.monotonic()
        for b in list(self.batches.values()):
            self.batch_progress(b, now)
            if b.result_seen is not None:
                # Published results may arrive just after the batch's end.
                if b.ar.wait_for_output(0) or now - b.result_seen > 1.0:
                    self.batch_progress(b, now)
                    self.batch_done(b)
                continue
            self.batch_overrun(b, now)

    def batch_progress(self, b, now):
        """Results and progress the batch published."""
        md = task_metadata(b) or {}
        if b.engine is None and md.get("engine_id") is not None:
            b.engine, b.began = md["engine_id"], True
        data = md.get("data") or {}
        while f"d{b.seq}" in data:
            for index, res in data[f"d{b.seq}"]:
                self.batch_result(b, index, res)
            b.seq += 1
        p = data.get("p")
        if not p:
            return
        b.began = True
        if b.pid is None:
            b.pid, b.host = p.get("pid"), p.get("host")
            if b.engine is None:
                b.engine = next((e for e, info in self.engines.items()
                                 if info["pid"] == b.pid and info["host"] == b.host), None)
        index = p.get("i")
        if index is None or index == b.running:
            return
        b.running = index
        age = time.time() - (p.get("since") or time.time())
        b.running_since = now - (age if 0.0 <= age < 3600.0 else 0.0)
        t = b.tasks[index]
        if not t.done and t.batch is b and t.started is None:
            t.started, t.started_wall = b.running_since, p.get("since")
            t.engine, t.pid, t.host = b.engine, b.pid, b.host
            send({"event": "started", "id": t.id, "engine": t.engine, "pid": t.pid,
                  "host": t.host, "attempt": t.attempts})

    def batch_result(self, b, index, res):
        t = b.tasks[index]
        if t.done or t.batch is not b:
            return
        t.engine, t.host = b.engine, b.host
        t.pid = res.get("pid") or b.pid
        err = res.get("err")
        if err is not None and err.get("kind") == "interrupted":
            err = {"kind": "exception", "type_name": "KeyboardInterrupt",
                   "message": "interrupted", "traceback": ""}
        if err is not None:
            self.finish(t, err=err, res=res)
        else:
            self.finish(t, ok=res.get("ok", "null"), res=res)

    def batch_done(self, b):
        self.drop_batch(b)
        try:
            out = b.ar.get(0)
        except Exception as exc:  # noqa: BLE001 - EngineError, RemoteError, ...
            ename = getattr(exc, "ename", type(exc).__name__)
            if b.aborted:
                self.requeue(b.unfinished())
                return
            if ename == "EngineError" or type(exc).__name__ == "EngineError":
                self.lost_batch(b, f"engine {b.engine if b.engine is not None else '?'} "
                                   f"died while running it ({getattr(exc, 'evalue', exc)})")
                return
            # The batch itself failed (its tasks report their own
            # failures): what it did not run goes again, alone.
            log(f"a batch of {len(b.tasks)} tasks failed: {exc}")
            left = b.unfinished()
            for t in left:
                t.alone = True
            self.requeue(left)
            return
        if b.engine is None:
            b.engine = (task_metadata(b) or {}).get("engine_id")
        b.pid, b.host = b.pid or out.get("pid"), b.host or out.get("host")
        for index, res in out.get("results") or []:
            self.batch_result(b, index, res)
        self.requeue(b.unfinished())

    def batch_overrun(self, b, now):
        """The task running in a batch past its timeout, or cancelled and
        still running after the grace period: its engine is stopped."""
        if b.running is None or b.running_since is None or b.killed:
            return
        t = b.tasks[b.running]
        if b.kill_after is not None:
            index, since = b.kill_after
            if b.running == index and now - since > self.grace:
                b.kill_after = None
                self.kill_batch_engine(b, t, "cancel")
            return
        if t.done or t.batch is not b or not t.timeout or t.stopping is not None:
            return
        if now - b.running_since > t.timeout:
            t.stopping = ("timeout", now)
            self.kill_batch_engine(b, t, "timeout")

    def kill_batch_engine(self, b, t, why):
        info = self.engines.get(b.engine) or {}
        pid, host = b.pid or info.get("pid"), b.host or info.get("host")
        if not (pid and host == HOST):
            send({"event": "notice", "task": t.id,
                  "message": f"task {t.id}: {why_text(why)}; engine {b.engine} on "
                             f"{host or 'an unknown host'} cannot be stopped from here, "
                             f"its own watchdog will end it"})
            return
        b.killed = True
        killed = kill_tree(pid)
        send({"event": "notice", "task": t.id,
              "message": f"task {t.id}: {why_text(why)}; stopped engine {b.engine} "
                         f"(pid {pid}, processes {killed}); the rest of its batch "
                         f"goes to other engines"})
        reason = f"stopped by caiclust: task {t.id} {why_text(why)}"
        self.forget_engine(b.engine, pid, host, reason, expected=True)
        if b.msg_id in self.batches:
            self.lost_batch(b, reason)
        self.replace_engine()

    def lost_batch(self, b, reason):
        """The batch's engine died. Finished tasks are done (their results
        were published); the one seen running is lost as a task alone is
        (retried within the limit, alone); the others never began and
        queue again. When no task was seen running, the first unfinished
        one may have killed the engine: it goes alone next time."""
        self.batch_progress(b, time.monotonic())
        self.drop_batch(b)
        left = b.unfinished()
        if not left:
            return
        culprit = None
        if b.running is not None and b.tasks[b.running] in left:
            culprit = b.tasks[b.running]
            left.remove(culprit)
        elif not b.killed:
            left[0].alone = True
        self.requeue(left)
        if culprit is not None:
            culprit.batch = None
            culprit.alone = True
            self.lost(culprit, reason)

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

    def handle(self, op):
        kind = op.get("op")
        if kind == "run":
            t = Task(op)
            self.tasks[t.id] = t
            self.queue.append(t)
        elif kind == "wake":
            pass
        elif kind == "cancel":
            self.cancel(op.get("id"))
        elif kind == "withdraw":
            self.withdraw(op.get("id"))
        else:
            send({"event": "notice", "message": f"unknown op {kind!r}"})

    def shutdown(self):
        for t in list(self.tasks.values()):
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
