# The driver's queue (issue #15, point 4): what waits to be handed to the
# engines, and how much of it makes a batch ("Batches" in
# core/src/ipp/mod.rs). Fresh Python calls with JSON arguments wait as the
# rows the parent sent, in runs of one function (tasks.py's RowRun), with
# no Task each until one is needed; everything else waits as a Task. A
# mixin of the Driver class (driver.py); joined into the driver program
# before driver_batches.py (core/src/ipp/mod.rs).

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tasks import Batch, RowRun, Task

# Batching (see "Batches" in core/src/ipp/mod.rs): a batch holds about
# BATCH_SECONDS of work by the measured mean task time (at least MIN_COST
# each), at most MAX_BATCH tasks, a fair share of the queue unless that is
# under SPLIT_SECONDS of work (driver_batches.py: how many are out at
# once); pickled calls larger than BATCH_PAYLOAD travel alone. (50 ms
# rather than 20: a round trip through ipyparallel costs 10-25 ms, and
# the first batches are sized by a cold first sample.)
BATCH_SECONDS = 0.05
SPLIT_SECONDS = 0.005
MAX_BATCH = 8192
MIN_COST = 5e-6
BATCH_PAYLOAD = 64 * 1024


class DriverQueue:

    def learn(self, t, seconds, count=1):
        """Follow the mean time of the task's function (an exponential
        average: a change of workload shows within a few tasks); `count`
        tasks of that function took `seconds` each on average."""
        self.learn_f(t.msg.get("f") or t.msg.get("kind"), seconds, count)

    def learn_f(self, f, seconds, count=1):
        mean = self.means.get(f)
        keep = 0.7 ** min(count, 64)
        self.means[f] = seconds if mean is None else keep * mean + (1.0 - keep) * seconds

    def enqueue_rows(self, rows):
        """Fresh compact rows `[id, function, args, timeout]`, in order: one
        RowRun per stretch of one function, joined to the queue's last run
        of the same function."""
        import itertools
        import operator

        for f, group in itertools.groupby(rows, key=operator.itemgetter(1)):
            group = list(group)
            last = self.queue[-1] if self.queue else None
            if type(last) is RowRun and last.f == f:
                first = len(last.rows)
                last.rows.extend(group)
                run = last
            else:
                first, run = 0, RowRun(group)
                self.queue.append(run)
            self.queued += len(group)
            if self.homes is not None:
                self.homes.update((r[0], (run, first + i)) for i, r in enumerate(group))

    def enqueue(self, t):
        self.tasks[t.id] = t
        self.queue.append(t)
        self.queued += 1

    def task_of(self, tid):
        """The task with this id that has no result yet, or None. A row
        without a Task gets one: one still queued is taken out of its run
        (for a cancel or withdraw, which end it at once), one in a batch
        becomes that batch's Task. The index of rows by id is built at the
        first call."""
        t = self.tasks.get(tid)
        if t is not None:
            return t
        if self.homes is None:
            self.homes = {}
            for b in self.batches.values():
                if b.fresh:
                    self.homes.update((r[0], (b, i)) for i, r in enumerate(b.rows))
            for e in self.queue:
                if type(e) is RowRun:
                    self.homes.update((e.rows[i][0], (e, i)) for i in range(e.pos, len(e.rows))
                                      if e.rows[i] is not None)
        home = self.homes.pop(tid, None)
        if home is None:
            return None
        where, i = home
        if type(where) is RowRun:
            if i >= where.pos:
                row = where.rows[i]
                if row is None:
                    return None
                where.rows[i] = None
                where.holes += 1
                self.queued -= 1
                t = Task.call(row)
                self.tasks[t.id] = t
                return t
            where, i = where.batch_of(i)
            if where is None or where.msg_id not in self.batches:
                return None
        return self.task_at(where, i)

    def task_at(self, b, i):
        """The Task of row i of batch b (made now for a fresh row), or None
        when its result went out."""
        if b.is_done(i):
            return None
        t = b.tasks[i]
        if t is None:
            t = Task.call(b.rows[i])
            t.attempts, t.batch, t.index = 1, b, i
            t.engine, t.pid, t.host = b.engine, b.pid, b.host
            b.tasks[i] = t
            b.made += 1
            self.tasks[t.id] = t
        return t

    def unfinished(self, b):
        """The Tasks of b without a result (made now for fresh rows)."""
        if not b.done.count(0):
            return []
        return [self.task_at(b, i) for i in range(len(b.rows)) if not b.is_done(i)]

    def pending(self):
        """Every task without a result, each as a Task (shutdown)."""
        for e in list(self.queue):
            if type(e) is RowRun:
                for i in range(e.pos, len(e.rows)):
                    row = e.rows[i]
                    if row is not None:
                        e.rows[i] = None
                        t = Task.call(row)
                        self.tasks[t.id] = t
                e.pos = len(e.rows)
        for b in list(self.batches.values()):
            self.unfinished(b)
        return list(self.tasks.values())

    def batchable(self, t):
        if t.alone or t.msg.get("kind") != "python" or t.payload_error is not None:
            return False
        return t.payload is None or len(t.payload) <= BATCH_PAYLOAD

    def batch_size(self, mean):
        """How many tasks of mean time `mean` make a batch: about
        BATCH_SECONDS of work, at most MAX_BATCH, and no more than a fair
        share of the queue per engine unless that share is less than
        SPLIT_SECONDS of work (a round trip costs more than that)."""
        cost = max(mean, MIN_COST)
        least = int(SPLIT_SECONDS / cost)
        fair = self.fair_share or -(-self.queued // max(1, len(self.engines)))
        return max(1, min(MAX_BATCH, max(fair, least), int(BATCH_SECONDS / cost)))

    def take_rows(self, run):
        """The next batch from the front of a run, or None when the run
        has no row left. Rows taken out on their own (None) end a batch."""
        rows = run.rows
        start = run.pos
        while start < len(rows) and rows[start] is None:
            start += 1
        if start >= len(rows):
            run.pos = len(rows)
            return None
        end = min(len(rows), start + self.batch_size(self.means[run.f]))
        if run.holes:
            for j in range(start, end):
                if rows[j] is None:
                    end = j
                    break
        b = Batch(rows[start:end])
        run.pos = end
        run.taken.append((start, b))
        self.queued -= end - start
        return b

    def take_tasks(self):
        """The next batch of queued Tasks (retried or requeued ones, and
        pickled calls): about BATCH_SECONDS of work by the mean time of
        each task's function, within batch_size. A task whose function
        has no time yet, or a long one, goes alone."""
        head = self.means.get(self.queue[0].msg.get("f"))
        limit = self.batch_size(head) if head is not None else 1
        group, work, queue, means = [], 0.0, self.queue, self.means
        f, cost = None, BATCH_SECONDS  # the last function seen, its cost
        while queue and len(group) < limit:
            u = queue[0]
            if type(u) is RowRun or (not u.done and not self.batchable(u)):
                break
            if u.msg.get("f") != f:
                f = u.msg.get("f")
                mean = means.get(f)
                cost = BATCH_SECONDS if mean is None else max(mean, MIN_COST)
            if group and work + cost > BATCH_SECONDS:
                break
            queue.popleft()
            self.queued -= 1
            if not u.done:
                group.append(u)
                work += cost
        return group
