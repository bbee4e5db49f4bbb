"""When a receive loop may sleep: polling, interrupt and adaptive queues.

A run loop makes passes over its receive queues and, after each pass, calls
``Idler.after(moved)``.  What happens next depends on the rx mode of every
interface the loop serves:

- any ``polling`` interface: never sleep (MASK_INT stays set; the peer never
  signals);
- ``interrupt``: MASK_INT clear from link up on; when a pass moved nothing,
  sleep on the queues' eventfds (memifx.fdwait), then drain them;
- ``adaptive``: poll while traffic flows; after ``quiet`` seconds of empty
  passes clear MASK_INT (counted in mode_switches) and sleep like interrupt
  mode; the first wakeup sets MASK_INT again (counted too).

Before sleeping, a loop that has just cleared MASK_INT fences (set_interrupt
does) and looks at the rings once more: a producer that checked the flag
just before it was cleared did not signal.  Every sleep has a timeout
(``backstop``), so a lost signal costs latency, never a stall.  A link that
goes down while we sleep may take its fds along: the wait then ends at once
and the next pass just sees fewer queues.  Any other failure of the wait is
raised, never taken for an empty wakeup (that would spin).
"""
from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Protocol

from memifx.fdwait import wait_readable

if TYPE_CHECKING:
    from memifx.ring import Queue

DEFAULT_QUIET = 100e-6      # seconds of empty passes before adaptive queues sleep
BACKSTOP = 0.05             # longest sleep without a signal
LINK_DOWN_NAP = 0.01        # how long to wait when a served link is down


def sleep_on(queues: Sequence[Queue], timeout: float, wake_fds: Iterable[int] = ()) -> bool:
    """Sleep until a receive queue's eventfd (or one of ``wake_fds``)
    signals, ``timeout`` seconds at most, then clear the queues' wakeups.
    True if something signalled."""
    ready = wait_readable([q.fd for q in queues] + list(wake_fds), timeout)
    for q in queues:
        q.drain()
    return bool(ready)


class Served(Protocol):
    """What an Idler reads of an interface it serves: a memifx.Interface, or
    a worker's view of one link."""

    rx_modes: list[str]

    @property
    def connected(self) -> bool: ...

    def active_queues(self, kind: str) -> list[Queue]: ...


class Idler:
    def __init__(self, interfaces: Iterable[Served], quiet: float = DEFAULT_QUIET,
                 backstop: float = BACKSTOP, wake_fds: Iterable[int] = ()) -> None:
        self.interfaces = list(interfaces)
        self.wake_fds = list(wake_fds)    # also end a sleep (e.g. a control socket)
        self.quiet = quiet
        self.backstop = backstop
        self.last_traffic = time.monotonic()
        self.armed: list[Queue] = []    # adaptive queues whose MASK_INT we cleared

    def _modes(self, intf: Served) -> list[str]:
        return intf.rx_modes

    def after(self, moved: int) -> None:
        """Call after each pass with the number of frames it moved."""
        if moved:
            self.last_traffic = time.monotonic()
            if self.armed:
                self._disarm()
            return
        if not any(i.connected for i in self.interfaces):
            self._nap(LINK_DOWN_NAP)
            return
        modes: set[str] = set()
        for intf in self.interfaces:
            modes.update(self._modes(intf)[:len(intf.active_queues("rx"))])
        if "polling" in modes:
            if not all(i.connected for i in self.interfaces):
                self._nap(LINK_DOWN_NAP / 10)       # nothing to forward to: no spin
            return
        if "adaptive" in modes:
            if time.monotonic() - self.last_traffic < self.quiet:
                return                              # still within the quiet interval
            if not self.armed and self._arm():
                return                              # something arrived meanwhile
        self._sleep()

    def _nap(self, seconds: float) -> None:
        if self.wake_fds:
            wait_readable(self.wake_fds, seconds)
        else:
            time.sleep(seconds)

    def _adaptive_queues(self) -> Iterator[Queue]:
        for intf in self.interfaces:
            modes = self._modes(intf)
            for q in intf.active_queues("rx"):
                if modes[q.index] == "adaptive":
                    yield q

    def _arm(self) -> bool:
        """Adaptive queues to interrupt mode; True if one has frames already."""
        self.armed = list(self._adaptive_queues())
        for q in self.armed:
            q.set_interrupt(True, switch=True)      # fences
        return any(q.pending() for q in self.armed)

    def _disarm(self) -> None:
        for q in self.armed:
            if not q.closed:
                q.set_interrupt(False, switch=True)
        self.armed = []

    def _sleep(self) -> None:
        queues = [q for i in self.interfaces for q in i.active_queues("rx")]
        if not queues and not self.wake_fds:
            self._nap(LINK_DOWN_NAP)
            return
        if sleep_on(queues, self.backstop, self.wake_fds):
            self.last_traffic = time.monotonic()
            if self.armed:
                self._disarm()                      # first wakeup: poll again
