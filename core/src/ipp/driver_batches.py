# The driver's batches (issue #15, point 4): small Python calls travel to
# the engines in batches sized by their measured time; results, timeouts,
# retries and cancel stay per task ("Batches" in core/src/ipp/mod.rs).
# A mixin of the Driver class (driver.py); joined into the driver program
# before it (core/src/ipp/mod.rs).

import json
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from driver import HOST
    from engine import _caiclust_batch, _caiclust_call, _caiclust_call_pickled
    from tasks import Batch, kill_tree, log, send, send_result, task_metadata, why_text

# Batching (see "Batches" in core/src/ipp/mod.rs): a batch holds about
# BATCH_SECONDS of work by the measured mean task time (at least MIN_COST
# each), at most MAX_BATCH tasks, a fair share of the queue unless that is
# under SPLIT_SECONDS of work; each engine has at most BATCH_SLOTS batches
# out (one running, one waiting at the scheduler); pickled calls larger
# than BATCH_PAYLOAD travel alone. (50 ms rather than 20: a round trip
# through ipyparallel costs 10-25 ms, and the first batches are sized by a
# cold first sample.)
BATCH_SECONDS = 0.05
SPLIT_SECONDS = 0.005
MAX_BATCH = 8192
MIN_COST = 5e-6
BATCH_SLOTS = 2
BATCH_PAYLOAD = 64 * 1024


class DriverBatches:

    def learn(self, t, seconds, count=1):
        """Follow the mean time of the task's function (an exponential
        average: a change of workload shows within a few tasks); `count`
        tasks of that function took `seconds` each on average."""
        f = t.msg.get("f") or t.msg.get("kind")
        mean = self.means.get(f)
        keep = 0.7 ** min(count, 64)
        self.means[f] = seconds if mean is None else keep * mean + (1.0 - keep) * seconds

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
        least = int(SPLIT_SECONDS / max(head, MIN_COST)) if head is not None else 1
        fair = -(-len(self.queue) // max(1, len(self.engines)))
        limit = min(MAX_BATCH, max(fair, least))
        group, work, queue, means = [], 0.0, self.queue, self.means
        f, cost = None, BATCH_SECONDS  # the last function seen, its cost
        while queue and len(group) < limit:
            u = queue[0]
            if not u.done and not self.batchable(u):
                break
            if u.msg.get("f") != f:
                f = u.msg.get("f")
                mean = means.get(f)
                cost = BATCH_SECONDS if mean is None else max(mean, MIN_COST)
            if group and work + cost > BATCH_SECONDS:
                break
            queue.popleft()
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
        slack = self.grace + 5.0
        for i, t in enumerate(group):
            if t.attempts or t.ar is not None or t.stopping is not None:
                # Not its first attempt: what the last one left goes.
                t.ar = t.msg_id = None
                t.engine = t.pid = t.host = t.started = t.started_wall = None
                t.stopping = None
            t.attempts += 1
            t.batch = b
            backstop = (t.timeout + slack) if t.timeout else None
            if t.payload is not None:
                items.append((i, "pickled", t.msg["f"], t.payload, t.timeout, backstop, t.id))
            else:
                items.append((i, "python", t.msg["f"], t.msg.get("a"), t.timeout, backstop,
                              t.id))
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
                # Published results may arrive just after the batch's end:
                # its reply says how many there were.
                if (self.all_published_seen(b) or b.ar.wait_for_output(0)
                        or now - b.result_seen > 1.0):
                    self.batch_progress(b, now)
                    self.batch_done(b)
                continue
            self.batch_overrun(b, now)

    def all_published_seen(self, b):
        """Every result message the batch published has been read (the
        count is in its reply)."""
        try:
            out = b.ar.get(0)
        except Exception:  # noqa: BLE001 - failed: wait for its output
            return False
        self.batch_progress(b, time.monotonic())
        return isinstance(out, dict) and out.get("chunks") == b.seq

    def batch_progress(self, b, now):
        """Results and progress the batch published."""
        md = task_metadata(b) or {}
        if b.engine is None and md.get("engine_id") is not None:
            b.engine, b.began = md["engine_id"], True
        data = md.get("data") or {}
        while f"d{b.seq}" in data:
            self.batch_chunk(b, data[f"d{b.seq}"])
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

    def batch_chunk(self, b, chunk):
        """Results of a batch (engine.py's pack): those with output or an
        error one by one; plain values, as a rule, passed on to the parent
        as the engine wrote them, one message for all."""
        for index, res in chunk.get("s") or ():
            self.batch_result(b, index, res)
        indices, text = chunk.get("i") or [], chunk.get("t") or ""
        if not indices:
            return
        tasks = [b.tasks[i] for i in indices]
        attempts, f = tasks[0].attempts, tasks[0].msg.get("f")
        if all(not t.done and t.batch is b and t.attempts == attempts and not t.history
               and t.msg.get("f") == f for t in tasks):
            for t in tasks:
                t.done = True
                self.tasks.pop(t.id, None)
            self.learn(tasks[0], chunk.get("c", 0.0) / len(tasks), len(tasks))
            where = json.dumps({"engine": b.engine, "pid": chunk.get("pid") or b.pid,
                                "host": chunk.get("host") or b.host, "attempts": attempts})
            send_result(f'{{"batch": {where}, "items": [{text}]}}')
            return
        # Some were cancelled or retried meanwhile: one by one.
        for index, (_tid, started, runtime, value) in zip(indices, json.loads(f"[{text}]")):
            self.batch_result(b, index, {"ok": json.dumps(value), "pid": chunk.get("pid"),
                                         "started": started, "ended": started + runtime})

    def batch_result(self, b, index, res):
        t = b.tasks[index]
        if t.done or t.batch is not b:
            return
        t.engine, t.host = b.engine, b.host
        t.pid = res.get("pid") or b.pid
        err = res.get("err")
        if err is None and self.quick_result(t, res):
            return
        if err is not None and err.get("kind") == "interrupted":
            err = {"kind": "exception", "type_name": "KeyboardInterrupt",
                   "message": "interrupted", "traceback": ""}
        if err is not None:
            self.finish(t, err=err, res=res)
        else:
            self.finish(t, ok=res.get("ok", "null"), res=res)

    def quick_result(self, t, res):
        """finish() for the common result of a batch, a JSON value and
        nothing else: its text goes out as the engine wrote it, not parsed
        and written again. False when the result needs finish()."""
        ok, started, ended = res.get("ok"), res.get("started"), res.get("ended")
        if (len(res) != 4 or not isinstance(ok, str) or type(started) is not float
                or type(ended) is not float or type(t.id) is not int
                or "NaN" in ok or "Infinity" in ok):
            return False
        t.done = True
        self.tasks.pop(t.id, None)
        runtime = max(0.0, ended - started)
        self.learn(t, runtime)
        where = (t.engine, t.pid, t.host)
        if t.batch.where != where:
            # The same for the whole batch, as a rule: written once.
            t.batch.where = where
            t.batch.where_text = json.dumps(dict(zip(("engine", "pid", "host"), where)))[1:-1]
        history = json.dumps(t.history) if t.history else "[]"
        send_result(f'{{"id": {t.id:d}, "attempts": {t.attempts:d}, "history": {history}, '
                    f'{t.batch.where_text}, "started": {started!r}, "runtime": {runtime!r}, '
                    f'"ok": {ok}}}')
        return True

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
        self.batch_chunk(b, out.get("results") or {})
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
