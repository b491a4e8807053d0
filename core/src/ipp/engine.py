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
    # The call's own time from here (the announcement is not the task's:
    # the driver sizes batches by it).
    started = time.time()
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
        # Finding the function (a first import, say) is not the call's
        # own time, by which the driver sizes batches.
        setup = time.time() - started
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
        return {"ok": text, "pid": os.getpid(), "started": started, "ended": time.time(),
                "setup": setup}
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
    # The call's own time from here (the announcement is not the task's:
    # the driver sizes batches by it).
    started = time.time()
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
# (driver_batches.py's submit_batch). `call` and `call_pickled` are
# _caiclust_call and _caiclust_call_pickled, passed in (ipyparallel sends
# them by value with the batch). `rows` are the tasks as the driver got
# them, pickled: `[id, function, args, timeout]` (JSON arguments) or `[id,
# function, None, timeout, payload]` (pickled call); a row's index in the
# list is its index in the batch. A task with a timeout gets the backstop
# `timeout + slack`. (Bytes, not a list, travel as one raw frame: a list
# of thousands of rows costs ipyparallel's serialisation milliseconds on
# both ends. The results travel pickled for the same reason.)
#
# A reporter thread publishes what happened (ipyparallel's data
# publication) every few milliseconds while something changed: the
# results finished since its last message under a new key "d<seq>", and
# under "p" the item running now and since when (wall clock). So results
# stream back while the batch runs, the driver knows which task overruns
# its timeout, and when the engine dies, which tasks had finished. The
# batch's return value holds the results not published yet. The loop
# itself only records (no lock per call) and wakes the reporter only after
# a task long enough to be worth a message of its own; standard output and
# error are redirected once per batch, each call's text taken when it
# wrote some. A plain call (a function and JSON arguments; its backstop
# armed around it when it has a timeout) runs inline, its function
# resolved once per batch and its record kept in flat lists, which is
# what makes tiny tasks cheap.


def _caiclust_batch(call, call_pickled, rows, slack):
    import base64
    import faulthandler
    import importlib
    import io
    import json
    import os
    import pickle
    import socket
    import sys
    import threading
    import time
    import traceback

    import gc

    # Thousands of small lists per batch: the cyclic collector's default
    # (a collection every 700 allocations) costs more than the calls.
    # Raised for the batch, restored after.
    gc_threshold = gc.get_threshold()
    gc.set_threshold(max(gc_threshold[0], 100_000), *gc_threshold[1:])
    rows = pickle.loads(rows)
    # How often the reporter looks for news (s), and the run time from
    # which a finished task's result is published at once (ns).
    report_every, publish_at_once = 0.003, 500_000
    try:
        from ipyparallel.datapub import publish_data
    except Exception:  # noqa: BLE001 - no streaming, results at the end
        publish_data = None
    pid, host = os.getpid(), socket.gethostname()
    clock = time.time_ns
    backstop, disarm = faulthandler.dump_traceback_later, faulthandler.cancel_dump_traceback_later
    # Plain results: batch index, task id, start and end (ns since the
    # epoch), value as JSON text; appended in that order, `texts` last,
    # so len(texts) is how many are complete. Others: (index, result).
    indices, ids, starts, ends, texts = [], [], [], [], []
    full = []
    # (index running, since (ns)), replaced as a whole (atomic).
    now = (None, clock())
    wake, end = threading.Event(), [False]
    state = {"plain": 0, "full": 0, "chunks": 0}

    def report():
        seq, last = 0, None
        while True:
            wake.wait(report_every)
            wake.clear()
            if end[0]:
                # What is left goes back with the batch's own reply (the
                # quicker way).
                return
            running = now
            a, b = state["plain"], len(texts)
            fa, fb = state["full"], len(full)
            if b > a or fb > fa or running is not last:
                last = running
                data = {"p": {"i": running[0], "since": running[1] / 1e9, "pid": pid,
                              "host": host}}
                if b > a or fb > fa:
                    data[f"d{seq}"] = pickle.dumps(pack(a, b, fa, fb), protocol=4)
                try:
                    publish_data(data)
                except Exception:  # noqa: BLE001 - the end result carries them
                    return
                if b > a or fb > fa:
                    seq += 1
                    state["plain"], state["full"], state["chunks"] = b, fb, seq

    # Resolved task functions: a plain call of one (no backstop) runs here
    # without the per-call set-up of `call`, with the same results and
    # errors; anything else (and a name that does not resolve) goes
    # through `call`.
    functions = {}
    # (allow_nan=False: the driver and its parent read strict JSON.)
    encode = json.JSONEncoder(allow_nan=False).encode
    encode_str = json.encoder.encode_basestring_ascii
    constants = {None: "null", True: "true", False: "false"}

    def to_json(value):
        # json.dumps(value), with the common scalars written directly.
        kind = type(value)
        if kind is int:
            return int.__repr__(value)
        if kind is str:
            return encode_str(value)
        if kind is bool or value is None:
            return constants[value]
        return encode(value)

    def resolve(name):
        module, sep, attr = name.partition(":")
        if not sep or not module or not attr:
            return None
        try:
            obj = importlib.import_module(module)
            for part in attr.split("."):
                obj = getattr(obj, part)
        except Exception:  # noqa: BLE001 - `call` reports it
            return None
        return obj if callable(obj) else None

    def failed(exc, started):
        if isinstance(exc, KeyboardInterrupt):
            err = {"kind": "interrupted"}
        elif isinstance(exc, SystemExit):
            err = {"kind": "exception", "type_name": "SystemExit",
                   "message": str(exc.code), "traceback": ""}
        else:
            err = {"kind": "exception", "type_name": type(exc).__name__,
                   "message": str(exc),
                   "traceback": "".join(traceback.format_exception(
                       type(exc), exc, exc.__traceback__))}
        return {"err": err, "pid": pid, "started": started, "ended": time.time()}

    def not_json(exc, started):
        if isinstance(exc, (TypeError, ValueError)):
            if "Out of range float" in str(exc):
                err = {"kind": "error",
                       "message": "the result holds NaN or infinity, which JSON cannot carry"}
            else:
                err = {"kind": "exception", "type_name": "TypeError",
                       "message": f"result is not JSON-serialisable: {exc}", "traceback": ""}
            return {"err": err, "pid": pid, "started": started, "ended": time.time()}
        return failed(exc, started)  # RecursionError, ...

    def pack(a, b, fa, fb):
        # Results for the driver: plain values from a to b as the four
        # texts it passes on unread ("ids", "starts", "ends": ns since the
        # epoch, "values": JSON texts; each joined by commas), their batch
        # indices ("i") and total run time ("c", s); the others, with
        # output or an error, as (index, result) pairs under "s".
        return {"s": full[fa:fb], "i": indices[a:b],
                "ids": ",".join(map(str, ids[a:b])),
                "starts": ",".join(map(str, starts[a:b])),
                "ends": ",".join(map(str, ends[a:b])),
                "values": ",".join(texts[a:b]),
                "c": (sum(ends[a:b]) - sum(starts[a:b])) / 1e9, "pid": pid, "host": host}

    reporter = None
    if publish_data is not None:
        reporter = threading.Thread(target=report, daemon=True)
        reporter.start()
    t0 = time.time()
    saved = sys.stdout, sys.stderr
    out, err = sys.stdout, sys.stderr = io.StringIO(), io.StringIO()
    list_, dict_ = list, dict
    try:
        for index, row in enumerate(rows):
            tid, name, data, timeout = row[0], row[1], row[2], row[3]
            fn = None
            if len(row) == 4:
                fn = functions.get(name)
                if fn is None:
                    # (Its first import is not the call's own time.)
                    fn = functions[name] = resolve(name)
            started = clock()
            now = (index, started)
            res = None
            if fn is not None:
                kind = type(data)
                if timeout:
                    # The backstop (see _caiclust_call), armed for this call.
                    try:
                        backstop(timeout + slack, exit=True, file=sys.__stderr__)
                    except Exception:  # noqa: BLE001
                        pass
                try:
                    if kind is list_:
                        value = fn(*data)
                    elif kind is dict_:
                        value = fn(**data)
                    elif data is None:
                        value = fn()
                    else:
                        value = fn(data)
                except BaseException as exc:  # noqa: BLE001 - every failure is reported
                    res = failed(exc, started / 1e9)
                else:
                    try:
                        text = to_json(value)
                    except BaseException as exc:  # noqa: BLE001
                        res = not_json(exc, started / 1e9)
                if timeout:
                    disarm()
                if res is None and not out.tell() and not err.tell():
                    # The common case, a JSON value and nothing else.
                    ended = clock()
                    indices.append(index)
                    ids.append(tid)
                    starts.append(started)
                    ends.append(ended)
                    texts.append(text)
                    if ended - started >= publish_at_once:
                        wake.set()
                    continue
                if res is None:
                    res = {"ok": text, "pid": pid, "started": started / 1e9,
                           "ended": time.time()}
            else:
                backstop = timeout + slack if timeout else None
                if len(row) > 4:
                    res = call_pickled(name, row[4], timeout, backstop, False)
                else:
                    res = call(name, data, timeout, backstop, False)
            if out.tell():
                res["stdout"] = base64.b64encode(
                    out.getvalue().encode("utf-8", "replace")).decode("ascii")
                out = sys.stdout = io.StringIO()
            if err.tell():
                res["stderr"] = base64.b64encode(
                    err.getvalue().encode("utf-8", "replace")).decode("ascii")
                err = sys.stderr = io.StringIO()
            full.append((index, res))
            if res["ended"] - res["started"] >= publish_at_once / 1e9:
                # Worth a message of its own: out before the next task
                # runs (an engine that dies then loses no finished task).
                wake.set()
    finally:
        sys.stdout, sys.stderr = saved
        gc.set_threshold(*gc_threshold)
    end[0] = True
    wake.set()
    if reporter is not None:
        reporter.join()
    return {"results": pickle.dumps(pack(state["plain"], len(texts), state["full"], len(full)),
                                    protocol=4),
            "chunks": state["chunks"], "cost": time.time() - t0, "pid": pid, "host": host}
