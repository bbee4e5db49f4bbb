"""The counters memifx keeps, declared once.

Counters live in C structs of u64s, counted into with plain increments on
the data path: ``counters_t`` (memifx/ring.pxd) per queue, ``xc_counters_t``
(memifx/xconnect.pxd) per xconnect direction, ``rx_counters_t`` and
``tx_counters_t`` (memifx/ip4.pyx) per queue of a router interface.  A
``Block`` here says what each u64 of one such struct is, in memory order:
its key in the dicts that ``counters()``, ``Interface.stats()``, the stats
file reader and ``memifx show --json`` give, and for queue counters also
its Prometheus metric, help text and ``memifx show`` column.  Everything
that names counters takes the names from here.

tests/test_stats.py compares every block with its C struct (sizeof, and the
offset of each named field as the compiler laid it out), so a counter added
to a struct and not here, or here and not to the struct, fails the tests.

A block's u64s in memory order (``names``) are what a stats file slot holds;
``nested`` turns them into the dict shape, ``flat`` back:
``{"packets": n, "bytes": n, ..., "drops": {reason: n}}``.
"""
from typing import Dict, Iterable, List, NamedTuple, Optional, Sequence, Tuple, Union

from memifx import ip4, ring, slots, xconnect

DROPS = "drops"             # the key of a block's drops-by-reason dict
DROP_PREFIX = "drops:"      # a drop reason's u64 in ``names`` and the stats file


class Counter(NamedTuple):
    """One u64: its dict key and, where it is exported, how."""
    key: str
    metric: Optional[str] = None    # Prometheus metric name
    help: Optional[str] = None      # Prometheus HELP text
    column: Optional[str] = None    # ``memifx show`` column


class Drops(NamedTuple):
    """A run of u64s, one per drop reason (the C enum's order)."""
    reasons: Tuple[str, ...]
    metric: Optional[str] = None
    help: Optional[str] = None
    column: Optional[str] = None    # the column shows their sum


Entry = Union[Counter, Drops]
CounterDict = Dict[str, Union[int, Dict[str, int]]]


class Block:
    """The u64s of one C counter struct, in memory order."""

    def __init__(self, struct: str, entries: Sequence[Entry]) -> None:
        self.struct = struct                # the C struct it describes
        self.entries = tuple(entries)
        self.counters = tuple(e for e in self.entries if isinstance(e, Counter))
        drops = [e for e in self.entries if isinstance(e, Drops)]
        if len(drops) > 1:
            raise ValueError("%s: one run of drops per block" % struct)
        self.drops: Optional[Drops] = drops[0] if drops else None
        names: List[str] = []
        for e in self.entries:
            if isinstance(e, Drops):
                names.extend(DROP_PREFIX + r for r in e.reasons)
            else:
                names.append(e.key)
        self.names = tuple(names)
        self.size = 8 * len(names)          # bytes: sizeof the struct

    def fields(self) -> List[Tuple[str, int]]:
        """[(name, byte offset)] of every u64, as the stats file lists them."""
        return [(n, 8 * i) for i, n in enumerate(self.names)]

    def nested(self, values: Iterable[int]) -> CounterDict:
        """The struct's u64s (memory order) as a counter dict."""
        values = list(values)
        if len(values) != len(self.names):
            raise ValueError("%s has %d counters, got %d" % (self.struct, len(self.names),
                                                              len(values)))
        out: CounterDict = {}
        i = 0
        for e in self.entries:
            if isinstance(e, Drops):
                out[DROPS] = dict(zip(e.reasons, values[i:i + len(e.reasons)]))
                i += len(e.reasons)
            else:
                out[e.key] = values[i]
                i += 1
        return out

    def flat(self, counters: Optional[CounterDict]) -> List[int]:
        """A counter dict as u64s in memory order (missing ones are 0)."""
        counters = counters or {}
        out: List[int] = []
        for e in self.entries:
            if isinstance(e, Drops):
                drops = counters.get(DROPS) or {}
                assert isinstance(drops, dict)
                out.extend(drops.get(r, 0) for r in e.reasons)
            else:
                v = counters.get(e.key, 0)
                assert isinstance(v, int)
                out.append(v)
        return out

    def zero(self) -> CounterDict:
        return self.nested([0] * len(self.names))

    def add(self, *counters: Optional[CounterDict]) -> CounterDict:
        """The sum of counter dicts (None counts as zero)."""
        total = [0] * len(self.names)
        for c in counters:
            if c:
                total = [a + b for a, b in zip(total, self.flat(c))]
        return self.nested(total)


def nested_by_name(names: Sequence[str], values: Iterable[int]) -> CounterDict:
    """u64s named as in ``Block.names`` (a stats file lists them) as a
    counter dict: a reader shapes what the file's writer declared."""
    out: CounterDict = {}
    drops: Dict[str, int] = {}
    for name, v in zip(names, values):
        if name.startswith(DROP_PREFIX):
            if DROPS not in out:
                out[DROPS] = drops
            drops[name[len(DROP_PREFIX):]] = v
        else:
            out[name] = v
    out.setdefault(DROPS, drops)
    return out


# counters_t (memifx/ring.pxd): one memif queue, either direction.
QUEUE_DROPS = Drops(ring.DROP_REASONS, "memifx_drops_total",
                    "Frames a queue dropped, by reason.", "DROPS")
QUEUE = Block("counters_t", (
    Counter("packets", "memifx_packets_total", "Frames through a memif queue.", "PACKETS"),
    Counter("bytes", "memifx_bytes_total", "Bytes through a memif queue.", "BYTES"),
    QUEUE_DROPS,
    Counter("ring_full", "memifx_ring_full_total", "Bursts that stopped on a full ring.",
            "RING-FULL"),
    Counter("irq_sent", "memifx_interrupts_sent_total", "Interrupts signalled to the peer.",
            "IRQ-SENT"),
    Counter("irq_received", "memifx_interrupts_received_total",
            "Interrupts received from the peer.", "IRQ-RECV"),
    Counter("mode_switches", "memifx_rx_mode_switches_total",
            "Adaptive rx mode switches between polling and interrupt.", "MODE-SW"),
    Counter("chain_waits", "memifx_rx_chain_waits_total",
            "Receive bursts that stopped at a chained frame whose end was not published yet."),
))

# xc_counters_t (memifx/xconnect.pxd): one direction of an l2-xconnect.
XCONNECT = Block("xc_counters_t", (
    Counter("packets"),                 # forwarded
    Counter("bytes"),
    Drops(xconnect.DROP_REASONS),
))

# An ip4 router interface's counter block (memifx/ip4.pyx) is one u64,
# then IP4_RX per receive queue, then IP4_TX per transmit queue.
IP4_LINK_DOWN = "tx link down"          # the u64 before the queues (if_counters_t)
IP4_RX = Block("rx_counters_t", (
    Counter("packets"),
    Counter("bytes"),
    Counter("forwarded"),
    Counter("echo replies"),
    Counter("arp replies"),
    Counter("arp to control plane"),
    Counter("local"),
    Counter("arp requests sent"),
    Counter("icmp errors sent"),
    Drops(ip4.DROP_REASONS),
))
IP4_TX = Block("tx_counters_t", (
    Counter("packets"),
    Counter("bytes"),
    Drops(tuple(r for r in ip4.TX_DROPS if r != IP4_LINK_DOWN)),    # ring_full, too_long, fault
))


def _check_sizes() -> None:
    """Each block is as long as its compiled struct (tests/test_stats.py also
    checks every field's offset): a mismatch would misplace stats file slots."""
    sizes = ((QUEUE, slots.COUNTER_SIZE), (XCONNECT, xconnect.COUNTER_SIZE),
             (IP4_RX, ip4.counter_block_size(1, 0) - ip4.counter_block_size(0, 0)),
             (IP4_TX, ip4.counter_block_size(0, 1) - ip4.counter_block_size(0, 0)))
    for block, size in sizes:
        if block.size != size:
            raise ImportError("memifx.stats.schema: %s is %d bytes, its Block names %d"
                              % (block.struct, size, block.size))


_check_sizes()
