# The driver's startup (issue #6, #15): the cluster started with the
# launchers configured (or attached to), its engines waited for within the
# startup deadline, and what became of each engine that did not register.
# A mixin of the Driver class (driver.py); joined into the driver program
# before it (core/src/ipp/mod.rs).

import os
import sys
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from clusters import (batch_job_failure, engines_not_started, is_batch_system, is_remote,
                          srun_engine_launcher)
    from driver import HOST
    from engine import _caiclust_whoami
    from tasks import log, orphaned, proc_tree, safe_output, send, tail


class DriverStartup:

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
        # Batch scripts go to the run's profile folder, never the caller's
        # working folder (ipyparallel writes them to its work_dir).
        if is_batch_system(self.cfg.get("engine_launcher")):
            configured = (self.cfg.get("launcher_config") or {})
            if not any("batch_file_name" in (v or {}) for v in configured.values()):
                c.BatchSystemLauncher.batch_file_name = os.path.join(
                    self.cfg["profile_dir"], "engine-batch-script")
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
