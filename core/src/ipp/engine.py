# caiclust's ipyparallel driver, part 1 of 2: what runs on the engines.
# core/src/ipp/mod.rs puts this file before driver.py into one program
# (DRIVER), which the driver's interpreter runs. These functions are
# defined in that program's __main__, so ipyparallel sends them by value
# (their code), and they import what they need themselves: the engine has
# nothing of this program. driver.py calls them by name.

# ---------------------------------------------------------------------------
# What runs on the engines. These functions are defined in __main__, so
# ipyparallel sends them by value (their code), and they import what they
# need themselves: the engine has nothing of this program.
# ---------------------------------------------------------------------------


def _caiclust_whoami():
    import os
    import socket

    return {"pid": os.getpid(), "host": socket.gethostname(), "cwd": os.getcwd()}


# Each engine function is sent alone: it cannot call another function of
# this program, so the shared steps are repeated in each (_caiclust_batch
# gets the two call functions as arguments, sent along with it).
#
# First, each tells the driver which process runs the task, as soon as it
# starts (ipyparallel's data publication).
#
# Python tasks get a last resort for a task past its timeout on an engine
# the driver cannot reach (another host): faulthandler's watchdog is a C
# thread, it fires even while the task holds the GIL, dumps the stacks to
# the engine's log and exits the engine.


def _caiclust_call(name, args, timeout, backstop, announce=True):
    import faulthandler
    import importlib
    import json
    import os
    import socket
    import sys
    import time
    import traceback

    started = time.time()
    try:
        if announce:
            from ipyparallel.datapub import publish_data

            publish_data({"caiclust": {"pid": os.getpid(), "host": socket.gethostname(),
                                       "started": started}})
    except Exception:  # noqa: BLE001 - only an optimisation
        pass
    if backstop:
        try:
            faulthandler.dump_traceback_later(backstop, exit=True, file=sys.__stderr__)
        except Exception:  # noqa: BLE001
            pass
    try:
        module, sep, attr = name.partition(":")
        if not sep or not module or not attr:
            raise ValueError(f"expected package.module:function, got {name!r}")
        obj = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
        if not callable(obj):
            raise TypeError(f"{name} is not callable")
        if isinstance(args, list):
            value = obj(*args)
        elif isinstance(args, dict):
            value = obj(**args)
        elif args is None:
            value = obj()
        else:
            value = obj(args)
        try:
            text = json.dumps(value)
        except (TypeError, ValueError) as exc:
            return {"err": {"kind": "exception", "type_name": "TypeError",
                            "message": f"result is not JSON-serialisable: {exc}",
                            "traceback": ""},
                    "pid": os.getpid(), "started": started, "ended": time.time()}
        return {"ok": text, "pid": os.getpid(), "started": started, "ended": time.time()}
    except KeyboardInterrupt:
        return {"err": {"kind": "interrupted"}, "pid": os.getpid(), "started": started,
                "ended": time.time()}
    except SystemExit as exc:
        return {"err": {"kind": "exception", "type_name": "SystemExit",
                        "message": str(exc.code), "traceback": ""},
                "pid": os.getpid(), "started": started, "ended": time.time()}
    except BaseException as exc:  # noqa: BLE001 - every failure is reported
        return {"err": {"kind": "exception", "type_name": type(exc).__name__,
                        "message": str(exc),
                        "traceback": "".join(traceback.format_exception(
                            type(exc), exc, exc.__traceback__))},
                "pid": os.getpid(), "started": started, "ended": time.time()}
    finally:
        if backstop:
            try:
                faulthandler.cancel_dump_traceback_later()
            except Exception:  # noqa: BLE001
                pass


def _caiclust_call_pickled(name, payload, timeout, backstop, announce=True):
    # As _caiclust_call, with pickled arguments and result, exactly as
    # python_worker.py's call_pickled: `args, kwargs = pickle.loads(payload)`
    # ("CCB5" for protocol 5 with out-of-band buffers), the result pickled
    # (protocol 5, its large buffers out of band, "CCB5" again) and sent
    # back as bytes, which ipyparallel carries as frames of their own.
    import faulthandler
    import importlib
    import os
    import pickle
    import socket
    import sys
    import time
    import traceback

    # The largest pickled result, as for a local worker's frame.
    max_blob = (1 << 31) - (16 << 20)

    class UnpicklableResult(TypeError):
        """The task returned, but its value could not be pickled."""

    def loads_oob(data):
        # A pickle, or "CCB5" | u32 n | u64 pickle_len | n x u64 buffer_len |
        # pickle | buffers: protocol 5 with its out-of-band buffers after it.
        if data[:4] != b"CCB5":
            return pickle.loads(data)
        n = int.from_bytes(data[4:8], "little")
        lens = [int.from_bytes(data[8 + 8 * i:16 + 8 * i], "little") for i in range(n + 1)]
        off = 8 + 8 * (n + 1)
        main = data[off:off + lens[0]]
        off += lens[0]
        buffers = []
        for size in lens[1:]:
            buffers.append(data[off:off + size])
            off += size
        return pickle.loads(main, buffers=buffers)

    def dumps_oob(value):
        buffers = []
        main = pickle.dumps(value, protocol=5, buffer_callback=buffers.append)
        if not buffers:
            return main
        raws = [b.raw() for b in buffers]
        head = [b"CCB5", len(raws).to_bytes(4, "little"), len(main).to_bytes(8, "little")]
        head += [r.nbytes.to_bytes(8, "little") for r in raws]
        return b"".join(head + [main] + raws)

    started = time.time()
    try:
        if announce:
            from ipyparallel.datapub import publish_data

            publish_data({"caiclust": {"pid": os.getpid(), "host": socket.gethostname(),
                                       "started": started}})
    except Exception:  # noqa: BLE001 - only an optimisation
        pass
    if backstop:
        try:
            faulthandler.dump_traceback_later(backstop, exit=True, file=sys.__stderr__)
        except Exception:  # noqa: BLE001
            pass
    # Folders the parent wants on sys.path (CAICLUST_SYS_PATH, as a local
    # worker takes it): where its task modules are found.
    extra = os.environ.get("CAICLUST_SYS_PATH")
    if extra:
        known = set(sys.path)
        sys.path[:0] = [p for p in extra.split(os.pathsep) if p and p not in known]
    try:
        module, sep, attr = name.partition(":")
        if not sep or not module or not attr:
            raise ValueError(f"expected package.module:function, got {name!r}")
        obj = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
        if not callable(obj):
            raise TypeError(f"{name} is not callable")
        # A writable copy: arrays unpickled from its out-of-band buffers are
        # views of it that the task may change, as on a local worker.
        data = memoryview(bytearray(payload))
        call = loads_oob(data)
        if type(call) is not tuple or len(call) != 2:
            raise TypeError(f"expected a pickled (args, kwargs) pair, got "
                            f"{type(call).__name__}")
        value = obj(*call[0], **call[1])
        try:
            blob = dumps_oob(value)
        except Exception as exc:  # noqa: BLE001
            import reprlib

            raise UnpicklableResult(f"the result could not be pickled: {exc!r} "
                                    f"(the value: {reprlib.repr(value)})") from None
        if len(blob) > max_blob:
            raise ValueError(f"the pickled result is {len(blob)} bytes, more than a task "
                             f"result can carry ({max_blob})")
        return {"ok": "null", "payload": blob, "pid": os.getpid(), "started": started,
                "ended": time.time()}
    except KeyboardInterrupt:
        return {"err": {"kind": "interrupted"}, "pid": os.getpid(), "started": started,
                "ended": time.time()}
    except SystemExit as exc:
        return {"err": {"kind": "exception", "type_name": "SystemExit",
                        "message": str(exc.code), "traceback": ""},
                "pid": os.getpid(), "started": started, "ended": time.time()}
    except BaseException as exc:  # noqa: BLE001 - every failure is reported
        return {"err": {"kind": "exception", "type_name": type(exc).__name__,
                        "message": str(exc),
                        "traceback": "".join(traceback.format_exception(
                            type(exc), exc, exc.__traceback__))},
                "pid": os.getpid(), "started": started, "ended": time.time()}
    finally:
        if backstop:
            try:
                faulthandler.cancel_dump_traceback_later()
            except Exception:  # noqa: BLE001
                pass


def _caiclust_command(argv, env, cwd, stdin_b64, timeout, grace):
    # One external command, in a session of its own, its output captured;
    # past its timeout the whole group gets TERM, then KILL after the grace.
    import base64
    import os
    import signal
    import socket
    import subprocess
    import time

    started = time.time()
    try:
        from ipyparallel.datapub import publish_data

        publish_data({"caiclust": {"pid": os.getpid(), "host": socket.gethostname(),
                                   "started": started}})
    except Exception:  # noqa: BLE001 - only an optimisation
        pass
    full_env = dict(os.environ)
    full_env.update(env or {})
    data = base64.b64decode(stdin_b64) if stdin_b64 else b""

    def enc(b):
        return base64.b64encode(b).decode("ascii") if b else None

    def stop_group(proc, sig):
        try:
            if hasattr(os, "killpg"):
                os.killpg(proc.pid, sig)
            else:
                proc.kill()
        except OSError:
            pass

    try:
        proc = subprocess.Popen(argv, env=full_env, cwd=cwd or None, stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                start_new_session=True)
    except Exception as exc:  # noqa: BLE001 - not found, bad cwd, ...
        if cwd and not os.path.isdir(cwd):
            cause = "other"
        elif isinstance(exc, FileNotFoundError):
            cause = "not_found"
        elif isinstance(exc, PermissionError) or getattr(exc, "errno", None) == 8:
            cause = "not_executable"  # no permission, or ENOEXEC
        else:
            cause = "other"
        return {"err": {"kind": "start", "message": f"{argv[0] if argv else ''}: {exc}",
                        "cause": cause},
                "pid": os.getpid(), "started": started, "ended": time.time()}
    timed_out = False
    interrupted = False
    try:
        out, err = proc.communicate(data, timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
    except KeyboardInterrupt:
        interrupted = True
    if timed_out or interrupted:
        stop_group(proc, signal.SIGTERM)
        try:
            out, err = proc.communicate(timeout=grace)
        except subprocess.TimeoutExpired:
            stop_group(proc, getattr(signal, "SIGKILL", signal.SIGTERM))
            out, err = proc.communicate()
    # Whatever the command left in its group goes too.
    stop_group(proc, getattr(signal, "SIGKILL", signal.SIGTERM))
    code = proc.returncode
    exit_info = {"signal": -code} if code < 0 else {"code": code}
    result = {"exit": exit_info, "stdout": enc(out), "stderr": enc(err), "cmd_pid": proc.pid,
              "pid": os.getpid(), "started": started, "ended": time.time()}
    if timed_out:
        result["err"] = {"kind": "timed_out", "after_ms": int(timeout * 1000)}
    elif interrupted:
        result["err"] = {"kind": "interrupted"}
    elif code == 0:
        result["ok"] = "null"
    else:
        result["err"] = {"kind": "exit", "exit": exit_info}
    return result


# A batch of small Python calls, run one after the other on one engine
# (driver.py's Driver.submit_batch). `call` and `call_pickled` are
# _caiclust_call and _caiclust_call_pickled, passed in (ipyparallel sends
# them by value with the batch). `items` are (index, kind, function,
# args_or_payload, timeout, backstop) with kind "python" or "pickled".
#
# A reporter thread publishes what happened (ipyparallel's data
# publication) as soon as it gets the GIL: the results finished since its
# last message under a new key "d<seq>" (`[[index, result], ...]`), and
# under "p" the item running now and since when (wall clock). So results
# stream back while the batch runs, the driver knows which task overruns
# its timeout, and when the engine dies, which tasks had finished. The
# batch's return value holds the results not published yet.


def _caiclust_batch(call, call_pickled, items):
    import base64
    import contextlib
    import io
    import os
    import socket
    import threading
    import time

    try:
        from ipyparallel.datapub import publish_data
    except Exception:  # noqa: BLE001 - no streaming, results at the end
        publish_data = None
    pid, host = os.getpid(), socket.gethostname()
    results = []
    state = {"running": None, "since": time.time(), "sent": 0, "seq": 0, "dirty": False,
             "end": False}
    cond = threading.Condition()

    def report():
        # Runs in the reporter thread; the lock is held only for the snapshot.
        while True:
            with cond:
                cond.wait_for(lambda: state["dirty"] or state["end"])
                if state["end"]:
                    return
                state["dirty"] = False
                upto = len(results)
                new = results[state["sent"]:upto]
                progress = {"i": state["running"], "since": state["since"], "pid": pid,
                            "host": host}
                seq = state["seq"]
            data = {"p": progress}
            if new:
                data[f"d{seq}"] = new
            try:
                publish_data(data)
            except Exception:  # noqa: BLE001 - the end result carries them
                return
            with cond:
                state["sent"] = upto
                if new:
                    state["seq"] = seq + 1

    reporter = None
    if publish_data is not None:
        reporter = threading.Thread(target=report, daemon=True)
        reporter.start()
    t0 = time.time()
    for index, kind, name, data, timeout, backstop in items:
        with cond:
            state["running"], state["since"], state["dirty"] = index, time.time(), True
            cond.notify()
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            fn = call_pickled if kind == "pickled" else call
            res = fn(name, data, timeout, backstop, False)
        for key, buf in (("stdout", out), ("stderr", err)):
            text = buf.getvalue()
            if text:
                res[key] = base64.b64encode(text.encode("utf-8", "replace")).decode("ascii")
        with cond:
            results.append((index, res))
            state["dirty"] = True
            cond.notify()
    with cond:
        state["end"] = True
        cond.notify()
    if reporter is not None:
        reporter.join()
    return {"results": results[state["sent"]:], "cost": time.time() - t0, "pid": pid,
            "host": host}
