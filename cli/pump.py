"""Move frames from one interface's receive queues to another's transmit
queues, a burst at a time, with the batch API (no Python object per frame).
Used by ``memifx echo`` (the same interface on both sides)."""
import select
from array import array

BURST = 256
SLOT = 9216 + 64          # room per frame in the staging buffer (jumbo frames)
RETRY_LIMIT = 1000        # tx attempts on a full ring before the rest is dropped


class Pump:
    def __init__(self, rx, tx, interrupt=False):
        self.rx, self.tx, self.interrupt = rx, tx, interrupt
        self.buf = bytearray(BURST * SLOT)
        self.view = memoryview(self.buf)
        self.lengths = array("I", bytes(4 * BURST))
        self.lview = memoryview(self.lengths)
        self.dropped = 0            # frames dropped because tx stayed full or down

    def run_once(self, timeout=0.1):
        """One pass over every rx queue; sleeps (interrupt mode) or yields
        briefly (link down) when nothing moved.  Returns frames moved."""
        moved = 0
        if self.rx.connected:
            info = self.rx.info()
            ntx = self.tx.info().get("tx_queues") or 1
            for q in range(info.get("rx_queues") or 0):
                n = self.rx.rx_into(self.buf, self.lengths, q)
                if n:
                    moved += n
                    self._send(n, q % ntx)
        if not moved:
            self._idle(timeout)
        return moved

    def _send(self, n, queue):
        sent = off = tries = 0
        while sent < n:
            k = self.tx.tx_from(self.view[off:], self.lview[sent:n], queue)
            if k:
                off += sum(self.lengths[sent:sent + k])
                sent += k
                tries = 0
            else:
                tries += 1
                if tries > RETRY_LIMIT or not self.tx.connected:
                    self.dropped += n - sent
                    return

    def _idle(self, timeout):
        if not self.rx.connected:
            select.select([], [], [], 0.01)
            return
        if not self.interrupt:
            return
        fds = [fd for fd in (self.rx.rx_fd(q) for q in range(self.rx.rx_queues))
               if fd is not None]
        try:
            ready, _, _ = select.select(fds, [], [], timeout)
        except (OSError, ValueError):
            return                  # the link went down and took the fds along
        for q in range(self.rx.rx_queues):
            self.rx.rx_ack(q)
