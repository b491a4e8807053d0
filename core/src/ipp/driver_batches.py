# The driver's batches (issue #15, point 4): small Python calls travel to
# the engines in batches sized by their measured time; results, timeouts,
# retries and cancel stay per task ("Batches" in core/src/ipp/mod.rs).
# A mixin of the Driver class (driver.py); joined into the driver program
# before it (core/src/ipp/mod.rs).

import json
import pickle
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from driver import HOST
    from engine import _caiclust_batch, _caiclust_call, _caiclust_call_pickled
    from tasks import (Batch, RowRun, Task, kill_tree, log, prepickled, send, send_result,
                       task_metadata, why_text)

# Each engine has at most BATCH_SLOTS batches out (one running, one
# waiting at the scheduler; 1, 3 and 4 measured no better on 10 000 tiny
# tasks). The sizes are driver_queue.py's.
BATCH_SLOTS = 2


class DriverBatches:

    def dispatch(self):
        """Hand queued tasks to ipyparallel, in order: commands, large
        payloads and retried tasks alone at once, Python calls in batches
        while an engine has a free slot."""
        slots = BATCH_SLOTS * max(1, len(self.engines))
        out = len(self.batches) + sum(1 for t in self.by_msg.values() if t.slot)
        # The queue as it is now, shared evenly among the engines (not
        # what is left after each batch: that would halve them).
        self.fair_share = -(-self.queued // max(1, len(self.engines)))
        try:
            self.dispatch_into(slots, out)
        finally:
            self.fair_share = None

    def dispatch_into(self, slots, out):
        queue = self.queue
        while queue:
            e = queue[0]
            if type(e) is RowRun:
                if e.pos >= len(e.rows):
                    queue.popleft()
                    continue
                if out >= slots:
                    return
                if self.means.get(e.f) is None:
                    # No time yet for its function: one goes alone.
                    row = e.rows[e.pos]
                    e.pos += 1
                    if row is None:
                        continue
                    self.queued -= 1
                    t = Task.call(row)
                    self.tasks[t.id] = t
                    t.slot = True
                    out += 1
                    self.submit(t)
                    continue
                b = self.take_rows(e)
                if b is not None:
                    out += 1
                    self.submit_batch(b)
                continue
            if e.done:
                queue.popleft()
                self.queued -= 1
                continue
            if not self.batchable(e):
                queue.popleft()
                self.queued -= 1
                self.submit(e)
                continue
            if out >= slots:
                return
            group = self.take_tasks()
            out += 1
            if len(group) == 1:
                group[0].slot = True
                self.submit(group[0])
            elif group:
                self.submit_batch(self.task_batch(group))

    def task_batch(self, group):
        """A batch of Tasks (not their first attempt, or pickled calls)."""
        rows = []
        for i, t in enumerate(group):
            if t.attempts or t.ar is not None or t.stopping is not None:
                # Not its first attempt: what the last one left goes.
                t.ar = t.msg_id = None
                t.engine = t.pid = t.host = t.started = t.started_wall = None
                t.stopping = None
            t.attempts += 1
            t.index = i
            if t.payload is not None:
                rows.append([t.id, t.msg["f"], None, t.timeout, t.payload])
            else:
                rows.append([t.id, t.msg["f"], t.msg.get("a"), t.timeout])
        b = Batch(rows, group)
        for t in group:
            t.batch = b
        return b

    def submit_batch(self, b):
        try:
            ar = self.view.apply_async(prepickled(_caiclust_batch), prepickled(_caiclust_call),
                                       prepickled(_caiclust_call_pickled),
                                       pickle.dumps(b.rows, protocol=4), self.grace + 5.0)
        except Exception as exc:  # noqa: BLE001
            for t in self.unfinished(b):
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
            self.abort_queued(b.ar, f"batch of {len(b.rows)} tasks")
        except Exception:  # noqa: BLE001 - it started meanwhile
            return False
        b.aborted = True
        return True

    def requeue(self, tasks):
        """Tasks of a batch that never began go first in the queue again,
        no attempt counted; those cancelled or withdrawn meanwhile end
        (cancelled)."""
        gone = [t for t in tasks if t.withdrawn is not None]
        if gone:
            tasks = [t for t in tasks if t.withdrawn is None]
            for t in gone:
                t.attempts = max(0, t.attempts - 1)
                self.finish(t, err={"kind": "cancelled", "reason": t.withdrawn})
        for t in tasks:
            t.batch = None
            t.index = None
            t.attempts = max(0, t.attempts - 1)
            t.engine = t.pid = t.host = t.started = t.started_wall = None
        self.queue.extendleft(reversed(tasks))
        self.queued += len(tasks)

    def drop_batch(self, b):
        self.batches.pop(b.msg_id, None)
        try:
            self.client.results.pop(b.msg_id, None)
        except Exception:  # noqa: BLE001
            pass

    def cancel_batched(self, t):
        b = t.batch
        if not self.batch_began(b) and self.abort_batch(b):
            # Told when the engine answers "aborted" (batch_done); if it
            # had begun the batch meanwhile, the task's own result counts.
            t.withdrawn = "cancelled"
            return
        index = t.index
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
            self.batch_chunk(b, pickle.loads(data[f"d{b.seq}"]))
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
        if b.is_done(index):
            return
        t = b.tasks[index]
        if t is None:
            # A fresh row: its start is told; it gets a Task only if needed.
            send({"event": "started", "id": b.rows[index][0], "engine": b.engine,
                  "pid": b.pid, "host": b.host, "attempt": 1})
        elif t.started is None:
            t.started, t.started_wall = b.running_since, p.get("since")
            t.engine, t.pid, t.host = b.engine, b.pid, b.host
            send({"event": "started", "id": t.id, "engine": t.engine, "pid": t.pid,
                  "host": t.host, "attempt": t.attempts})

    def batch_chunk(self, b, chunk):
        """Results of a batch (engine.py's pack): those with output or an
        error one by one; plain values of fresh rows, as a rule, passed on
        to the parent as the engine wrote them, one message for all."""
        for index, res in chunk.get("s") or ():
            self.batch_result(b, index, res)
        indices = chunk.get("i") or []
        if not indices:
            return
        tasks = b.tasks
        if b.fresh and (not b.made or all(tasks[i] is None for i in indices)):
            done = b.done
            for i in indices:
                done[i] = 1
            if self.homes is not None:
                for i in indices:
                    self.homes.pop(b.rows[i][0], None)
            self.learn_f(b.rows[indices[0]][1], chunk.get("c", 0.0) / len(indices),
                         len(indices))
            where = json.dumps({"engine": b.engine, "pid": chunk.get("pid") or b.pid,
                                "host": chunk.get("host") or b.host, "attempts": 1})
            send_result(f'{{"batch": {where}, "ids": [{chunk["ids"]}], '
                        f'"starts": [{chunk["starts"]}], "ends": [{chunk["ends"]}], '
                        f'"values": [{chunk["values"]}]}}')
            return
        # Tasks were made for some (cancelled, retried, ...): one by one.
        starts = json.loads(f"[{chunk['starts']}]")
        ends = json.loads(f"[{chunk['ends']}]")
        values = json.loads(f"[{chunk['values']}]")
        for index, started, ended, value in zip(indices, starts, ends, values):
            self.batch_result(b, index, {"ok": json.dumps(value), "pid": chunk.get("pid"),
                                         "started": started / 1e9, "ended": ended / 1e9})

    def batch_result(self, b, index, res):
        t = self.task_at(b, index)
        if t is None or t.done or t.batch is not b:
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
        t.batch.done[t.index] = 1
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
                self.requeue(self.unfinished(b))
                return
            if ename == "EngineError" or type(exc).__name__ == "EngineError":
                self.lost_batch(b, f"engine {b.engine if b.engine is not None else '?'} "
                                   f"died while running it ({getattr(exc, 'evalue', exc)})")
                return
            # The batch itself failed (its tasks report their own
            # failures): what it did not run goes again, alone.
            log(f"a batch of {len(b.rows)} tasks failed: {exc}")
            left = self.unfinished(b)
            for t in left:
                t.alone = True
            self.requeue(left)
            return
        if b.engine is None:
            b.engine = (task_metadata(b) or {}).get("engine_id")
        b.pid, b.host = b.pid or out.get("pid"), b.host or out.get("host")
        self.batch_chunk(b, pickle.loads(out["results"]) if out.get("results") else {})
        self.requeue(self.unfinished(b))

    def batch_overrun(self, b, now):
        """The task running in a batch past its timeout, or cancelled and
        still running after the grace period: its engine is stopped."""
        if b.running is None or b.running_since is None or b.killed:
            return
        if b.kill_after is not None:
            index, since = b.kill_after
            if b.running == index and now - since > self.grace:
                b.kill_after = None
                self.kill_batch_engine(b, b.tasks[index], "cancel")
            return
        timeout = b.rows[b.running][3]
        if not timeout or b.is_done(b.running) or now - b.running_since <= timeout:
            return
        t = self.task_at(b, b.running)
        if t is None or t.stopping is not None:
            return
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
        left = self.unfinished(b)
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
