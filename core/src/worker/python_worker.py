# caiclust's Python worker. Started by caiclust-core; speaks length-prefixed
# frames of JSON lines and raw bytes with the parent (protocol.rs has the
# full description), JSON lines with the fork server's own parent.
#
#   python python_worker.py worker
#       A worker on stdin/stdout (the spawn start method).
#   python python_worker.py server SOCKET [MODULE ...]
#   python python_worker.py forkserver SOCKET [MODULE ...]
#       A fork server: imports the MODULEs (the task modules: the fork
#       start method, "server"; none, or the modules a Python parent uses:
#       the forkserver start method, which must stay clean: on Linux, when
#       the imports started GNU OpenMP's pool it starts again without them),
#       then forks one worker per {"fork": N} line read on stdin. Each
#       worker connects to the Unix socket SOCKET and says hello with N.
#       Exits of forked workers are reported as {"exited": PID, ...}.
#   python -S python_worker.py standby [--late-site] [MODULE ...]
#       A standby interpreter (worker/standby.rs), started before a pool
#       needs it: imports the standard-library MODULEs and runs site, then
#       waits for one line, {"become": "server"|"forkserver", "socket":
#       SOCKET, "preload": [...], "env": {...}, "cwd": DIR}: it takes on
#       that environment and folder and serves as that fork server (see
#       standby_main for when it starts afresh instead).
#
# A worker's channel carries frames, both ways:
#
#   u32 LE frame_len | u32 LE text_len | text | blobs
#
# frame_len counts the bytes after itself (4 + text_len + the blobs), at
# most 2 GiB; text is JSON lines; blobs are raw bytes, concatenated in the
# order the lines refer to them.
#
# Frames to a worker: one batch of tasks by column,
# {"ids": [1, 2], "f": "pkg.mod:func", "a": [ARGS1, ARGS2]} ("fs": [NAME1,
# NAME2] instead of "f" when the functions differ; "p": [[INDEX, LEN], ...]
# for the tasks whose pickled (args, kwargs) follow as blobs, LEN null when
# the payload was too large to send), or {"stop": true}.
# Frames from a worker: the hello first; then answers, one line per task:
# {"id": 1, "ok": VALUE}, {"id": 1, "err": {"type": ..., "message": ...,
# "traceback": ...}}, or {"id":1,"blob":LEN} for a pickled result (the
# frame's next LEN blob bytes). Answers to a batch of tiny tasks are
# written together, at most about a millisecond late (the Answers class).
# The fork server's control channel (stdin/stdout) stays one JSON message
# per line.
#
# The protocol has private copies of the standard streams: whatever a task
# prints to stdout goes to stderr and cannot corrupt it.

import importlib
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


def error_of(exc):
    import traceback

    # Drop this worker's own frames (it runs as `python -c`, file "<string>"):
    # the traceback starts at the task's code.
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename in OWN_FILES:
        tb = tb.tb_next
    try:
        message = str(exc)
        text = "".join(traceback.format_exception(type(exc), exc, tb))
    except BaseException:  # noqa: BLE001 - an exception whose str() raises
        message = f"<{type(exc).__name__} that cannot be shown>"
        text = ""
    return {"type": type(exc).__name__, "message": message, "traceback": text}


MAX_FRAME = 1 << 31
# The largest pickled result; the rest of a frame is for its text.
MAX_BLOB = MAX_FRAME - (16 << 20)


def write_frame(out, text, blobs=()):
    n = len(text)
    out.write((4 + n + sum(map(len, blobs))).to_bytes(4, "little") + n.to_bytes(4, "little")
              + text)
    for blob in blobs:
        out.write(blob)
    out.flush()


class Answers:
    """Answers waiting to be written. Tiny tasks share one write (and one
    wake-up of the parent); a flusher thread sends whatever waited 1 ms, so
    a long task never holds back the answers before it by more than that
    (plus Python's thread switch interval).

    The serving thread only appends to `pending` and, when nothing was
    waiting, stamps `since` and wakes the flusher; whoever writes clears
    `since` before taking what is pending, so nothing is left unstamped.
    Built on _thread alone: the threading module costs milliseconds of
    imports at every worker start.

    A pickled result goes alone in a frame of its own (send_blob()):
    `blobs` is only touched under `wlock`, so a frame's blobs are those of
    its lines."""

    AFTER = 0.001

    def __init__(self, out):
        import _thread

        self.out = out
        self.pending = []
        self.blobs = []
        self.since = None
        self.closed = False
        self.broken = False
        # Released to wake the flusher; held while it has nothing to do.
        self.wake = _thread.allocate_lock()
        self.wlock = _thread.allocate_lock()
        _thread.start_new_thread(self._flusher, ())

    def _wake(self):
        if self.wake.locked():
            try:
                self.wake.release()
            except RuntimeError:  # woken meanwhile
                pass

    def started(self):
        from time import monotonic

        self.since = monotonic()
        self._wake()

    def flush(self):
        with self.wlock:
            self.since = None
            pending = self.pending
            n = len(pending)
            if n and not self.broken:
                text = "".join(pending[:n]).encode()
                del pending[:n]
                blobs, self.blobs = self.blobs, []
                try:
                    if len(text) > MAX_FRAME - 4:
                        sys.stderr.write("caiclust worker: answers of more than 2 GiB of "
                                         "JSON cannot be sent; stopping\n")
                        raise ValueError("answers too large for a frame")
                    write_frame(self.out, text, blobs)
                except (OSError, ValueError):
                    self.broken = True
            return not self.broken

    def _flusher(self):
        from time import monotonic, sleep

        while not self.closed:
            since = self.since
            if since is None:
                self.wake.acquire()
                continue
            due = since + self.AFTER - monotonic()
            if due > 0:
                sleep(due)
            else:
                self.flush()

    def close(self):
        self.flush()
        self.closed = True
        self._wake()


def json_codec():
    """loads/encode from the C accelerator module alone (json itself
    imports re, enum and more: milliseconds per worker start); the json
    module where _json is missing."""
    try:
        import _json

        class Context:
            strict = True
            object_hook = None
            object_pairs_hook = None
            parse_float = float
            parse_int = int
            parse_constant = {"NaN": float("nan"), "Infinity": float("inf"),
                              "-Infinity": float("-inf")}.__getitem__

        scan = _json.make_scanner(Context())
        ws = " \t\n\r"

        def loads(line):
            s = line.decode("utf-8") if isinstance(line, bytes) else line
            i = len(s) - len(s.lstrip(ws))
            try:
                value, end = scan(s, i)
            except StopIteration as exc:
                raise ValueError(f"invalid JSON at {exc.value}") from None
            if s[end:].strip(ws):
                raise ValueError(f"extra data at {end}")
            return value

        def default(o):
            raise TypeError(f"Object of type {type(o).__name__} is not JSON serializable")

        basestring = _json.encode_basestring_ascii

        def make():
            return _json.make_encoder({}, default, basestring, None, ":", ",", False, False, False)

        make()
    except (ImportError, AttributeError, TypeError):
        import json

        enc = json.JSONEncoder(separators=(",", ":"), allow_nan=False)
        return json.loads, enc.encode
    state = [make()]

    def encode(value, int_repr=int.__repr__, join="".join):
        t = type(value)
        if t is int:
            return int_repr(value)
        if t is str:
            return basestring(value)
        try:
            return join(state[0](value, 0))
        except BaseException:
            state[0] = make()
            raise

    return loads, encode


def read_frame(read, readinto):
    """The next frame from the parent: (body, text length), or None at the
    end of the stream. The body is writable: arrays unpickled from its
    out-of-band buffers are views of it that a task may change."""
    head = read(8)
    if len(head) < 8:
        return None
    v = int.from_bytes(head, "little")
    size = (v & 0xFFFFFFFF) - 4
    text_len = v >> 32
    if size < 0 or text_len > size:
        raise ValueError("bad frame header from the parent: " + repr(head))
    body = bytearray(size)
    view = memoryview(body)
    got = 0
    while got < size:
        n = readinto(view[got:])
        if not n:
            return None
        got += n
    return body, text_len


def serve(inp, out):
    loads, encode = CODEC
    functions = _functions
    answers = Answers(out)
    pending = answers.pending
    read, readinto = inp.read, inp.readinto
    try:
        while True:
            got = read_frame(read, readinto)
            if got is None:
                return
            body, text_len = got
            msg = loads(bytes(body[:text_len]) if text_len < len(body) else bytes(body))
            ids = msg.get("ids")
            if ids is None:
                # {"stop": true}, or anything else that is not work.
                return
            args = msg.get("a") or ()
            same = msg.get("f")
            names = msg.get("fs") or ()
            if msg.get("p") is not None:
                # Some tasks carry pickled arguments: the general loop.
                serve_pickled(answers, msg, memoryview(body)[text_len:])
                if not answers.flush():
                    return
                continue
            for i, tid in enumerate(ids):
                try:
                    name = same if same is not None else names[i]
                    f = functions.get(name) or resolve(name)
                    a = args[i]
                    t = type(a)
                    if t is list:
                        value = f(*a)
                    elif t is dict:
                        value = f(**a)
                    elif a is None:
                        value = f()
                    else:
                        value = f(a)
                    try:
                        answer = '{"id":%d,"ok":%s}\n' % (tid, encode(value))
                    except (TypeError, ValueError, RecursionError) as exc:
                        answer = not_json(tid, exc)
                except SystemExit as exc:
                    answer = exited(tid, exc)
                except BaseException as exc:  # noqa: BLE001 - every failure is reported
                    answer = '{"id":%d,"err":%s}\n' % (tid, encode(error_of(exc)))
                pending.append(answer)
                if answers.since is None:
                    answers.started()
            # The batch is done: nothing would come to share the write.
            if not answers.flush():
                return
    finally:
        answers.close()


def not_json(tid, exc):
    return '{"id":%d,"err":%s}\n' % (tid, CODEC[1]({
        "type": "TypeError",
        "message": f"result is not JSON-serialisable: {exc}",
        "traceback": ""}))


def exited(tid, exc):
    return '{"id":%d,"err":%s}\n' % (tid, CODEC[1]({
        "type": "SystemExit", "message": str(exc.code), "traceback": ""}))


# The pickled-payload path, compiled on its first use: compiled with the
# rest, it would cost every worker start about a millisecond. Its code runs
# as the worker's own (file "<string>", left out of tracebacks).
PICKLED = r"""
try:
    # The C module alone: pickle.py imports re and more (milliseconds).
    import _pickle as pickle
except ImportError:
    import pickle


class UnpicklableResult(TypeError):
    # The task returned, but its value could not be pickled.
    pass


def loads_oob(data):
    # A pickle, or "CCB5" | u32 n | u64 pickle_len | n x u64 buffer_len |
    # pickle | buffers: protocol 5 with its out-of-band buffers after it
    # (views of the frame, writable: no copy).
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
    # Protocol 5; large buffers (numpy arrays) out of band, after the pickle.
    buffers = []
    main = pickle.dumps(value, protocol=5, buffer_callback=buffers.append)
    if not buffers:
        return main
    raws = [b.raw() for b in buffers]
    head = [b"CCB5", len(raws).to_bytes(4, "little"), len(main).to_bytes(8, "little")]
    head += [r.nbytes.to_bytes(8, "little") for r in raws]
    return b"".join(head + [main] + raws)


def call_pickled(f, data):
    if data is None:
        raise ValueError("the task's payload is larger than a frame can carry (2 GiB)")
    call = loads_oob(data)
    if type(call) is not tuple or len(call) != 2:
        raise TypeError(f"expected a pickled (args, kwargs) pair, got {type(call).__name__}")
    value = f(*call[0], **call[1])
    try:
        blob = dumps_oob(value)
    except Exception as exc:
        import reprlib

        raise UnpicklableResult(f"the result could not be pickled: {exc!r} "
                                f"(the value: {reprlib.repr(value)})") from None
    if len(blob) > MAX_BLOB:
        raise ValueError(f"the pickled result is {len(blob)} bytes, more than a frame "
                         f"can carry ({MAX_BLOB})")
    return blob


def send_blob(answers, line, data):
    # After the answers before it, in a frame of its own.
    answers.flush()
    with answers.wlock:
        answers.pending.append(line)
        answers.blobs.append(data)
    return answers.flush()


def call_json(tid, f, a):
    # As serve() does inline, for a task without payload in this batch.
    t = type(a)
    value = f(*a) if t is list else f(**a) if t is dict else f() if a is None else f(a)
    try:
        return '{"id":%d,"ok":%s}\n' % (tid, CODEC[1](value))
    except (TypeError, ValueError, RecursionError) as exc:
        return not_json(tid, exc)


def serve_mixed(answers, msg, blobs):
    # Each payload by its task's position: a view of the frame, or None
    # when the parent could not send it.
    data, off = {}, 0
    for i, n in msg["p"]:
        data[i] = None if n is None else blobs[off:off + n]
        off += n or 0
    ids, args = msg["ids"], msg.get("a") or ()
    same, names = msg.get("f"), msg.get("fs") or ()
    for i, tid in enumerate(ids):
        blob = None
        try:
            name = same if same is not None else names[i]
            f = _functions.get(name) or resolve(name)
            if i in data:
                blob = call_pickled(f, data[i])
                answer = '{"id":%d,"blob":%d}\n' % (tid, len(blob))
            else:
                answer = call_json(tid, f, args[i] if i < len(args) else None)
        except SystemExit as exc:
            blob, answer = None, exited(tid, exc)
        except BaseException as exc:
            blob, answer = None, '{"id":%d,"err":%s}\n' % (tid, CODEC[1](error_of(exc)))
        if blob is not None:
            if not send_blob(answers, answer, blob):
                return
            continue
        answers.pending.append(answer)
        if answers.since is None:
            answers.started()
"""


def load_pickled():
    """Compile the pickled-payload path (and import pickle) once."""
    if "serve_mixed" not in globals():
        exec(compile(PICKLED, "<string>", "exec"), globals())


def serve_pickled(answers, msg, blobs):
    """A batch where some tasks carry pickled (args, kwargs): results are
    pickled and go back as blobs."""
    load_pickled()
    serve_mixed(answers, msg, blobs)  # noqa: F821 - defined by PICKLED


def hello(out, worker, framed=True):
    """The first message: a frame from a worker, a line from a server."""
    text = CODEC[1]({"hello": {"pid": os.getpid(), "worker": worker,
                               "python": sys.version.split()[0]}}).encode() + b"\n"
    if framed:
        write_frame(out, text)
    else:
        out.write(text)
        out.flush()


def prctl_of_libc(found=[]):  # noqa: B006 - the one lookup, kept
    """Linux: libc's prctl, looked up once in the server (importing ctypes
    takes milliseconds; each forked worker then only calls it). It opens
    no library: CDLL(None) is the program itself."""
    if found:
        return found[0]
    prctl = None
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            prctl = ctypes.CDLL(None, use_errno=True).prctl
        except (OSError, AttributeError, ImportError):
            prctl = None
    found.append(prctl)
    return prctl


def die_with_parent(prctl):
    """Linux: be killed when the fork server dies (PR_SET_PDEATHSIG)."""
    if prctl is not None:
        try:
            prctl(1, 9)  # PR_SET_PDEATHSIG, SIGKILL
        except (OSError, AttributeError, TypeError):
            pass


def worker_main():
    inp, out = private_channel(0, 1)
    hello(out, None)
    serve(inp, out)


def libgomp_code():
    """Linux: the address ranges of GNU OpenMP's code in this process."""
    ranges = []
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 6 and "x" in parts[1] and "libgomp" in parts[5]:
                lo, hi = parts[0].split("-")
                ranges.append((int(lo, 16), int(hi, 16)))
    return ranges


def thread_states(ranges):
    """Each other thread's state: "gomp" (blocked in a system call made
    from libgomp's code: a pool thread waiting for work), "running", or
    "other" (blocked elsewhere), from /proc/self/task/TID/syscall."""
    states = []
    for tid in os.listdir("/proc/self/task"):
        if int(tid) == os.getpid():
            continue
        try:
            with open(f"/proc/self/task/{tid}/syscall") as f:
                fields = f.read().split()
        except OSError:
            continue
        if not fields or fields[0] == "running":
            states.append("running")
        elif fields[0] == "-1":
            # Not in a system call: spinning in user space.
            states.append("running")
        else:
            pc = int(fields[-1], 16)
            states.append("gomp" if any(lo <= pc < hi for lo, hi in ranges) else "other")
    return states


def openmp_pool_started():
    """Linux: has GNU OpenMP started its pool in this process? A pool
    thread spins a moment after its work, then waits inside libgomp; a
    thread still running after 200 ms with libgomp loaded counts as one
    (OMP_WAIT_POLICY=active spins for ever)."""
    from time import sleep

    try:
        ranges = libgomp_code()
        if not ranges:
            return False
        for _ in range(20):
            states = thread_states(ranges)
            if "gomp" in states:
                return True
            if "running" not in states:
                return False
            sleep(0.01)
        return True
    except (OSError, ValueError):
        return False


def preload_started_openmp(preload, clean):
    """Import the preloaded modules; for a server that must stay clean (the
    forkserver start method), True when that started a GNU OpenMP pool,
    whose threads forked workers would wait for forever. (The fork start
    method's template is judged by the hazard policy before it starts, and
    may be forced.)"""
    for module in preload:
        # A module that fails to import is left to the tasks that need it
        # (they get its error); the server still serves the others.
        try:
            importlib.import_module(module)
        except BaseException as exc:  # noqa: BLE001 - import-time SystemExit too
            sys.stderr.write(f"caiclust fork server: preloading {module} failed: "
                             f"{type(exc).__name__}: {exc}\n")
    if clean and preload and sys.platform.startswith("linux") and openmp_pool_started():
        sys.stderr.write("caiclust fork server: importing " + ", ".join(preload) + " started "
                         "GNU OpenMP's threads, which forked workers would wait for forever "
                         "(CC001); starting again without preloads\n")
        return True
    return False


# Fork requests a server had read when it restarted (what is still in the
# pipe the new image reads itself).
PENDING_VAR = "CAICLUST_SERVER_PENDING"


def reexec(flags, args, inp, out, pending=b""):
    """Run this program again in this process (its pipes, its pid), a new
    image: `python FLAGS THIS_FILE ARGS`. Possible when this file is on
    disk (caiclust's cache); False otherwise. Fork requests already read
    (`pending`) go to the new image."""
    sys.stderr.flush()
    path = globals().get("__file__")
    if not (path and os.path.exists(path)):
        return False
    # The protocol's pipes back on 0 and 1 (private_channel moved them to
    # descriptors that exec closes).
    os.dup2(inp.fileno(), 0)
    os.dup2(out.fileno(), 1)
    if pending:
        os.environ[PENDING_VAR] = pending.decode("utf-8", "replace")
    if EXTRA_PATH:
        os.environ["CAICLUST_SYS_PATH"] = EXTRA_PATH
    os.execv(sys.executable, [sys.executable, *flags, path, *args])
    return False


def restart_without_preloads(sock_path, inp, out, pending=b""):
    """Become a clean server without the threads; when this file is not
    on disk the server stops, and the pool reports that it cannot start
    workers."""
    reexec([], ["forkserver", sock_path], inp, out, pending)
    os._exit(3)


def server_main(sock_path, preload, clean=False, channel=None, buf=b""):
    # The C modules: signal and socket import enum and selectors (about
    # 9 ms before the first worker can fork).
    import _signal
    import _socket
    import select

    inp, out = channel or private_channel(0, 1)
    buf = os.environ.pop(PENDING_VAR, "").encode() + buf
    prctl = prctl_of_libc()
    if preload_started_openmp(preload, clean):
        restart_without_preloads(sock_path, inp, out, buf)
    if preload:
        # A Python parent's template: its workers take pickled calls, whose
        # code every fork then has ready.
        load_pickled()
    hello(out, None, framed=False)

    def report(msg):
        out.write(CODEC[1](msg).encode() + b"\n")
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

    while True:
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            msg = CODEC[0](line)
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
                    die_with_parent(prctl)
                    os.setpgid(0, 0)
                    _signal.signal(_signal.SIGCHLD, _signal.SIG_DFL)
                    inp.close()
                    out.close()
                    s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
                    s.connect(sock_path)
                    fd = s.detach()
                    w_in = os.fdopen(os.dup(fd), "rb")
                    w_out = os.fdopen(fd, "wb")
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
        ready, _, _ = select.select([inp], [], [], 0.05)
        reap()
        if not ready:
            continue
        chunk = os.read(inp.fileno(), 65536)
        if not chunk:
            break
        buf += chunk
    # The parent went away: stop the workers this server forked.
    reap()


CODEC = json_codec()


# CAICLUST_SYS_PATH as this process found it.
EXTRA_PATH = None


def extend_path():
    """Folders the parent wants on sys.path (CAICLUST_SYS_PATH, joined by
    os.pathsep), ahead of the rest: where its task modules are found.
    They stand for the first entry that starting this program put there
    (the working folder of `python -c`, or this file's folder), which the
    parent's program may not have: a package in the working folder must
    not shadow the parent's. Taken out of the environment so that the
    tasks' own children do not inherit it."""
    global EXTRA_PATH
    extra = EXTRA_PATH = os.environ.pop("CAICLUST_SYS_PATH", None)
    if extra:
        own_start = ("", os.path.dirname(globals().get("__file__") or ""))
        if sys.path and sys.path[0] in own_start:
            del sys.path[0]
        known = set(sys.path)
        sys.path[:0] = [p for p in extra.split(os.pathsep) if p and p not in known]


# Variables that threading runtimes read when they load, and nothing reads
# at a start: a standby whose site ran before it took them on is what a
# server started with them would be.
LATE_PREFIXES = ("OMP_", "KMP_", "GOMP_", "MKL_", "OPENBLAS_", "GOTO_", "BLIS_", "VECLIB_",
                 "NUMEXPR_", "TBB_", "NUMBA_", "CAICLUST_")


def applies_late(name):
    return name.startswith(LATE_PREFIXES) or name.endswith("_NUM_THREADS")


def native_objects():
    """The shared objects this process has loaded: /proc/self/maps on
    Linux; elsewhere its extension modules (and ctypes, through which any
    library can be loaded)."""
    if sys.platform.startswith("linux"):
        try:
            with open("/proc/self/maps") as f:
                return {line.split(None, 5)[-1].strip() for line in f if ".so" in line}
        except OSError:
            pass
    from importlib.machinery import EXTENSION_SUFFIXES

    suffixes = tuple(EXTENSION_SUFFIXES)
    return ({name for name, m in list(sys.modules.items())
             if (getattr(m, "__file__", None) or "").endswith(suffixes)}
            | ({"_ctypes"} & set(sys.modules)))


def early_site(imports, inp, out):
    """Run site now, under the standby's own environment; the environment
    then. When its .pth files loaded native code (whose runtimes have then
    read this environment), start again as a standby that runs site late."""
    import site

    before = native_objects()
    env = dict(os.environ)
    site.main()
    if native_objects() != before:
        reexec(["-S"], ["standby", "--late-site", *imports], inp, out)
        return None
    return env


def head_start(module):
    """Import a module ahead of the pool; False when it is not found (or
    fails: the server imports what it needs, and reports it there)."""
    try:
        importlib.import_module(module)
        return True
    except BaseException:  # noqa: BLE001 - only a head start
        return False


def drop_shadowed(modules):
    """Forget the packages of `modules` imported ahead of the pool, unless
    an import now (the pool's sys.path and working folder) would find the
    same file: another of that name earlier on the path, or one that was
    found in the standby's own folder, is imported afresh by the server."""
    for top in {m.partition(".")[0] for m in modules}:
        loaded = sys.modules.get(top)
        if loaded is None:
            continue
        spec = None
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            spec = find(top, None) if find else None
            if spec is not None:
                break
        if spec is None or spec.origin != getattr(loaded, "__file__", None):
            for name in [n for n in sys.modules if n == top or n.startswith(top + ".")]:
                del sys.modules[name]


def read_become(inp):
    """The line that says what to become, and what came after it; exits
    when the input closes or the parent is gone."""
    import select

    parent = os.getppid()
    buf = b""
    while b"\n" not in buf:
        ready, _, _ = select.select([inp], [], [], 1.0)
        if not ready:
            if os.getppid() != parent:
                os._exit(0)
            continue
        chunk = os.read(inp.fileno(), 65536)
        if not chunk:
            os._exit(0)
        buf += chunk
    line, buf = buf.split(b"\n", 1)
    return CODEC[0](line), buf


def standby_main(args):
    """A standby interpreter (the core's worker/standby.rs): started with
    -S before any pool needs it, it imports the modules it is given (the
    standard library's first, those from site-packages once site ran: pure
    Python, loading no runtime) and runs site, then waits for the one line that says what
    to become: {"become": "server"|"forkserver", "socket": PATH,
    "preload": [...], "env": {...}, "cwd": PATH}. It takes on that
    environment and working folder and serves as that fork server. Site
    ran before the environment was known: when a variable other than the
    runtimes' own (applies_late) changed meanwhile, the .pth files might
    have seen another value, and the server starts afresh instead (a new
    image, as a pool without a standby would have). With --late-site
    (site's .pth files load native code), site runs after the environment
    is taken on. A module imported ahead that the pool's sys.path would
    find elsewhere is imported again (drop_shadowed). Input closed or
    parent gone: it exits."""
    # What the server needs, loaded ahead: the C modules, libc's prctl,
    # the pickled-payload path, and site.
    import _signal  # noqa: F401
    import _socket  # noqa: F401
    import select  # noqa: F401
    import site

    late_site = "--late-site" in args
    imports = [a for a in args if a != "--late-site"]
    # The entry starting this program put first (the working folder of
    # `python -c`, which site would make absolute): out of the way of the
    # imports ahead, and back at the become unless the pool gives its path.
    launch_entry = sys.path.pop(0) if sys.path else None
    inp, out = private_channel(0, 1)
    prctl_of_libc()
    load_pickled()
    # The standard library's now; what lives in site-packages once site ran.
    after_site = [m for m in imports if not head_start(m)]
    path = globals().get("__file__")
    on_disk = bool(path) and os.path.exists(path)
    site_env = early_site(imports, inp, out) if on_disk and not late_site else None
    if site_env is not None:
        for module in after_site:
            head_start(module)
    msg, buf = read_become(inp)
    os.environ.clear()
    os.environ.update(msg["env"])
    os.environ[WORKER_MARK] = "1"
    os.chdir(msg["cwd"])
    mode, sock_path, preload = msg["become"], msg["socket"], [m for m in msg["preload"] if m]
    if site_env is None:
        site.main()
    else:
        changed = {k for k in set(site_env) | set(os.environ)
                   if site_env.get(k) != os.environ.get(k)}
        if not all(applies_late(k) for k in changed) and not reexec(
                [], [mode, sock_path, *preload], inp, out, buf):
            os._exit(3)  # this file went away meanwhile: the pool reports it
    if launch_entry is not None and "CAICLUST_SYS_PATH" not in os.environ:
        sys.path.insert(0, launch_entry)
    extend_path()
    drop_shadowed(imports)
    sys.argv[1:] = [mode, sock_path, *preload]
    server_main(sock_path, preload, mode == "forkserver", (inp, out), buf)


# Set in every worker, fork server and standby (and so inherited by what
# their tasks start): caiclust's Python package starts no standby there.
WORKER_MARK = "CAICLUST_PYTHON_WORKER"


def main():
    sys.dont_write_bytecode = True
    os.environ[WORKER_MARK] = "1"
    mode = sys.argv[1] if len(sys.argv) > 1 else "worker"
    if mode == "standby":
        standby_main(sys.argv[2:])
        return
    extend_path()
    if mode == "worker":
        worker_main()
    elif mode in ("server", "forkserver"):
        server_main(sys.argv[2], [m for m in sys.argv[3:] if m], mode == "forkserver")
    else:
        sys.stderr.write(f"caiclust python worker: unknown mode {mode!r}\n")
        sys.exit(2)


# This worker's own code: "<string>" as `python -c SOURCE` and the boot line
# run it, and this file's path when it is imported from caiclust's cache
# (worker/boot.rs), compiled once and then loaded from its .pyc.
OWN_FILES = ("<string>", globals().get("__file__", "<string>"))

if __name__ == "__main__":
    main()
