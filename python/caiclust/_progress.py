"""A progress bar with an ETA for long maps: a line on standard error in
a terminal, an updating HTML bar in a Jupyter notebook. Off unless asked
for (``progress=True``). Updates are throttled to a few per second, and
come from the result handler thread."""

import sys
import threading
import time


def _in_notebook():
    shell = sys.modules.get("IPython")
    if shell is None or "ipykernel" not in sys.modules:
        return False
    try:
        ip = shell.get_ipython()
    except Exception:  # noqa: BLE001
        return False
    return ip is not None and "IPKernelApp" in getattr(ip, "config", {})


def _duration(seconds):
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class Progress:
    """``advance(n)`` as items finish; ``close()`` at the end. ``total``
    may be None (an iterable of unknown length: no ETA)."""

    EVERY = 0.2
    WIDTH = 30

    def __init__(self, total, stream=None):
        self.total = total
        self.done = 0
        self.start = time.monotonic()
        self._last = 0.0
        self._lock = threading.Lock()
        self._closed = False
        self._stream = stream if stream is not None else sys.stderr
        self._handle = None
        if stream is None and _in_notebook():
            from IPython.display import HTML, display

            self._html = HTML
            self._handle = display(HTML(self._html_text()), display_id=True)
        self._draw(force=True)

    def advance(self, n=1):
        with self._lock:
            self.done += n
            self._draw()

    def close(self):
        with self._lock:
            if not self._closed:
                self._closed = True
                self._draw(force=True)
                if self._handle is None:
                    self._stream.write("\n")
                    self._stream.flush()

    def text(self):
        elapsed = time.monotonic() - self.start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        if self.total:
            frac = min(1.0, self.done / self.total)
            filled = int(frac * self.WIDTH)
            bar = "#" * filled + "-" * (self.WIDTH - filled)
            left = (self.total - self.done) / rate if rate > 0 else None
            eta = _duration(left) if left is not None else "?"
            return (f"[{bar}] {self.done}/{self.total} {frac:4.0%} "
                    f"elapsed {_duration(elapsed)} ETA {eta} ({rate:.1f}/s)")
        return f"{self.done} done, elapsed {_duration(elapsed)} ({rate:.1f}/s)"

    def _html_text(self):
        import html

        frac = min(1.0, self.done / self.total) if self.total else 0.0
        return (f'<div><progress value="{frac:.4f}" max="1" style="width:40ex"></progress> '
                f"<code>{html.escape(self.text())}</code></div>")

    def _draw(self, force=False):
        now = time.monotonic()
        if not force and now - self._last < self.EVERY:
            return
        self._last = now
        if self._handle is not None:
            self._handle.update(self._html(self._html_text()))
        else:
            self._stream.write("\r" + self.text())
            self._stream.flush()
