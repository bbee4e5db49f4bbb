"""The control loop: one selector, timers, and calls from other threads.

Every control-plane action of memifx (accepting, handshakes, reconnects,
disconnects) runs inside a :class:`ControlLoop`.  Either memifx runs it in a
background thread (``start()``, what :func:`default_loop` does), or the
application drives it from its own event loop: poll ``fileno()`` for
readability and call ``run_once(0)``, at the latest after ``next_timeout()``
seconds.  Data-path calls never go through the loop.
"""
from __future__ import annotations

import heapq
import itertools
import logging
import os
import selectors
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from memifx import guard

if TYPE_CHECKING:
    from memifx.control import Listener

T = TypeVar("T")

log = logging.getLogger("memifx")


class Timer:
    """A call scheduled with ControlLoop.call_later; ``cancel()`` it to drop it."""

    __slots__ = ("when", "fn", "args", "cancelled")

    def __init__(self, when: float, fn: Callable[..., object], args: tuple[Any, ...]) -> None:
        self.when = when
        self.fn: Callable[..., object] | None = fn
        self.args = args
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True
        self.fn, self.args = None, ()           # drop references now, not when due


class WakePipe:
    """A self-pipe: wake() from any thread makes fileno() readable until
    drain() -- how a poller asleep on other fds is told there is work."""

    def __init__(self) -> None:
        self._r, self._w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def fileno(self) -> int:
        return self._r

    def wake(self) -> None:
        try:
            os.write(self._w, b"x")
        except OSError:
            pass                    # full: already awake; closed: nobody to wake

    def drain(self) -> None:
        try:
            while os.read(self._r, 4096):
                pass
        except OSError:
            pass                    # empty (EAGAIN), or closed

    def close(self) -> None:
        os.close(self._r)
        os.close(self._w)


class ControlLoop:
    """Runs memifx's control plane: a selector, timers and calls from other threads."""

    def __init__(self) -> None:
        self._sel = selectors.DefaultSelector()
        self._waker = WakePipe()
        self._sel.register(self._waker.fileno(), selectors.EVENT_READ, self._waker.drain)
        # A peer truncated memory we map (any thread hit it): end its link.
        self._sel.register(guard.fileno(), selectors.EVENT_READ, guard.dispatch)
        self._calls: list[tuple[Callable[..., object], tuple[Any, ...]]] = []
        self._calls_lock = threading.Lock()
        self._timers: list[tuple[float, int, Timer]] = []
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None
        self._stop = False
        self.listeners: dict[str, Listener] = {}    # socket path -> Listener (control.py)

    # ------------------------------------------------------------ driving

    def fileno(self) -> int:
        """A pollable fd: readable when run_once() has work."""
        return self._sel.fileno()

    def next_timeout(self) -> float | None:
        """Seconds until the next timer is due (None: no timer)."""
        with self._calls_lock:
            if self._calls:
                return 0.0
        while self._timers and self._timers[0][2].cancelled:
            heapq.heappop(self._timers)
        if not self._timers:
            return None
        return max(0.0, self._timers[0][0] - time.monotonic())

    def run_once(self, timeout: float | None = None) -> None:
        """Wait up to ``timeout`` seconds for events and handle what is due."""
        due = self.next_timeout()
        if due is not None and (timeout is None or due < timeout):
            timeout = due
        for key, _ in self._sel.select(timeout):
            self._guard(key.data)
        now = time.monotonic()
        while self._timers and self._timers[0][0] <= now:
            _, _, t = heapq.heappop(self._timers)
            if not t.cancelled and t.fn is not None:
                self._guard(t.fn, *t.args)
        with self._calls_lock:
            calls, self._calls = self._calls, []
        for fn, args in calls:
            self._guard(fn, *args)

    def _guard(self, fn: Callable[..., object], *args: Any) -> None:
        try:
            fn(*args)
        except Exception:                       # one bad handler must not stop the loop
            log.exception("memifx control loop: unhandled error in %r", fn)

    def start(self) -> None:
        """Run the loop in a daemon thread (idempotent)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="memifx-control",
                                            daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop:
            self.run_once(1.0)

    def stop(self) -> None:
        """Stop the loop (and join its thread, unless called from it)."""
        self._stop = True
        self._waker.wake()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5)

    @property
    def threaded(self) -> bool:
        """Whether the loop runs in its own thread (start() was called)."""
        return self._thread is not None

    # -------------------------------------------------------- scheduling

    def call_soon(self, fn: Callable[..., object], *args: Any) -> None:
        """Thread-safe: run fn(*args) in the loop."""
        with self._calls_lock:
            self._calls.append((fn, args))
        self._waker.wake()

    def call_later(self, delay: float, fn: Callable[..., object], *args: Any) -> Timer:
        """Loop thread only."""
        t = Timer(time.monotonic() + delay, fn, args)
        heapq.heappush(self._timers, (t.when, next(self._seq), t))
        return t

    def run_sync(self, fn: Callable[..., T], *args: Any) -> T:
        """Run fn in the loop and return its result (or raise its exception).
        Runs inline when called from the loop's own thread, or when the
        application drives the loop itself."""
        if self._thread is None or threading.current_thread() is self._thread:
            return fn(*args)
        done = threading.Event()
        box: dict[str, Any] = {}

        def call() -> None:
            try:
                box["result"] = fn(*args)
            except BaseException as e:          # handed to the caller
                box["error"] = e
            finally:
                done.set()

        self.call_soon(call)
        if not done.wait(10):
            raise TimeoutError("memifx control loop did not answer")
        if "error" in box:
            raise box["error"]
        result: T = box["result"]
        return result

    def add_reader(self, fd: int, callback: Callable[[], object]) -> None:
        """Call ``callback()`` in the loop whenever ``fd`` is readable."""
        self._sel.register(fd, selectors.EVENT_READ, callback)

    def remove_reader(self, fd: int) -> None:
        """Stop watching ``fd`` (no error if it is not watched)."""
        try:
            self._sel.unregister(fd)
        except (KeyError, ValueError):
            pass


_default: ControlLoop | None = None
_default_lock = threading.Lock()


def default_loop() -> ControlLoop:
    """The process-wide loop, run in a background thread."""
    global _default
    with _default_lock:
        if _default is None:
            _default = ControlLoop()
            _default.start()
        return _default
