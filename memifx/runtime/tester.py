"""The ``gen`` and ``sink`` pipelines: the traffic tester on the runtime.

``gen`` sends stamped frames (or a pcap file's, in this process only) on
its interface and, given ``receive``, checks what comes back on a second
one, as a hardware tester does; ``sink`` checks what arrives on its one
interface.  Both are hosted by memifx.nodes.tester.TesterNode: in this
process (one LocalHost, one lane) or on a TesterPool of worker processes.
Either way this class answers the same questions (sent, received, still in
flight, the reports), so a command or the agent need not know where the
frames were moved.

Options, as ``Dataplane.add_pipeline`` takes them (the agent's spelling):
gen: ``size`` (bytes or "imix") or ``sizes`` (a list), ``flows``,
``payload`` ("pattern"|"zeros"|"fixed": no stamps, see
memifx.traffic.Generator), ``src_mac``/``dst_mac`` (text or 6 bytes),
``src_ip``/``dst_ip`` (text or 4 bytes), ``dst_step`` (flow f's frames go to
``dst_ip`` + f * dst_step), ``count``, ``rate`` (frames/s, 0:
unlimited), ``duration`` (seconds from the first frame), ``receive`` (the
checked interface's name; with payload "fixed", counted only), ``replay`` (a pcap
path, or a memifx.pcap.Capture the caller has read already: a file is read
once), ``capture`` (a pcap path for what arrives on the sending interface),
``verify`` ("full"|"stamp"|"seq"|"count": memifx.traffic.Checker's levels),
``zero_copy`` (bool: stamped frames are written straight into the ring's
buffers instead of copied from a staging buffer, and what comes back on
``receive`` is checked in place, as sink's).
sink: ``verify``, ``capture`` and ``zero_copy`` (bool: check frames in place in the ring's buffers
instead of copying them out; a capture keeps the copy).
"""
import ipaddress
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from memifx import pcap
from memifx.interface import Interface
from memifx.nodes.tester import TesterNode, TesterPool
from memifx.runtime.errors import DataplaneError
from memifx.runtime.local import LocalHost
from memifx.runtime.pipeline import Counters, Kind, Pipeline
from memifx.tester import BURST, arrived, make_generator, receive_result, send_result
from memifx.traffic import GeneratorError, VERIFY_LEVELS

IMIX = [64, 570, 64, 1518, 64, 570, 64, 64, 570, 64, 570, 64]     # 7:4:1, interleaved
DEFAULT_SRC_IP = bytes([198, 18, 0, 1])
DEFAULT_DST_IP = bytes([198, 19, 0, 1])

Address = Union[str, bytes, None]
# the command-line option each Generator argument comes from (GeneratorError.argument)
GENERATOR_OPTIONS = {"sizes": "--size", "flows": "--flows", "payload": "--payload",
                     "dst_step": "--dst-step", "src_mac": "--src-mac", "dst_mac": "--dst-mac",
                     "src_ip": "--src-ip", "dst_ip": "--dst-ip"}
OPTIONS = {"gen": frozenset(("size", "sizes", "flows", "payload", "src_mac", "dst_mac", "src_ip",
                             "dst_ip", "dst_step", "count", "rate", "duration", "receive",
                             "replay",
                             "capture", "verify", "zero_copy")),
           "sink": frozenset(("capture", "verify", "zero_copy"))}


def check_options(kind: str, params: Mapping[str, Any]) -> None:
    """DataplaneError naming the options a ``kind`` pipeline does not take."""
    unknown = sorted(set(params) - OPTIONS[kind])
    if unknown:
        raise DataplaneError("%s takes no %s" % (kind, ", ".join(unknown)))


def _mac(value: Address, default: bytes, what: str) -> bytes:
    if value is None:
        return default
    if isinstance(value, bytes):
        raw = value
    else:
        try:
            raw = bytes(int(x, 16) for x in value.split(":"))
        except ValueError:
            raw = b""
    if len(raw) != 6:
        raise DataplaneError("%s %r: expected XX:XX:XX:XX:XX:XX" % (what, value))
    return raw


def _ip(value: Address, default: bytes, what: str) -> bytes:
    if value is None:
        return default
    if isinstance(value, bytes):
        if len(value) == 4:
            return value
    else:
        try:
            return ipaddress.IPv4Address(value).packed
        except ValueError:
            pass
    raise DataplaneError("%s %r: expected an IPv4 address A.B.C.D" % (what, value))


def sizes_of(size: Union[int, str, None], sizes: Optional[Sequence[int]]) -> List[int]:
    """The frame sizes from ``sizes``, or from ``size`` (bytes or "imix"); 64 by default."""
    if sizes is not None:
        return list(sizes)
    if size is None:
        return [64]
    if str(size).lower() == "imix":
        return list(IMIX)
    return [int(size)]


def generator_args(spec: Any, ip_mode: bool, sizes: Sequence[int], flows: int,
                   payload: str, src_mac: Address, dst_mac: Address, src_ip: Address,
                   dst_ip: Address, zero_copy: bool = False,
                   dst_step: int = 0) -> Dict[str, Any]:
    """The Generator's arguments (memifx.tester.make_generator) plus
    ``queues`` and ``burst``; DataplaneError, naming the option, if the
    Generator refuses them.  Defaults: the interface's MAC and IP, broadcast,
    198.19.0.1.  ``zero_copy``: memifx.tester.Synth's."""
    own_ip = spec.ip.ip.packed if spec.ip is not None else DEFAULT_SRC_IP
    args: Dict[str, Any] = {
        "sizes": list(sizes), "ip_mode": ip_mode, "flows": flows,
        "src_mac": _mac(src_mac, spec.mac_bytes(), "src_mac").hex(),
        "dst_mac": _mac(dst_mac, b"\xff" * 6, "dst_mac").hex(),
        "src_ip": _ip(src_ip, own_ip, "src_ip").hex(),
        "dst_ip": _ip(dst_ip, DEFAULT_DST_IP, "dst_ip").hex(), "payload": payload,
        "zero_copy": bool(zero_copy), "dst_step": int(dst_step)}
    if not 0 <= args["dst_step"] <= 0xFFFFFFFF:
        raise DataplaneError("dst_step %d: 0 to 4294967295" % args["dst_step"], "--dst-step")
    try:
        gen = make_generator(args)
    except GeneratorError as e:
        raise DataplaneError(str(e), GENERATOR_OPTIONS.get(e.argument))
    burst = max(16, min(BURST, (4 << 20) // gen.max_size))
    args.update(queues=spec.tx_queues, burst=burst)
    return args


def read_replay(replay: Union[str, pcap.Capture]) -> pcap.Capture:
    """The capture to replay: ``replay`` itself, or the file it names, read
    (DataplaneError, option --pcap, if it cannot be)."""
    if isinstance(replay, pcap.Capture):
        return replay
    try:
        return pcap.read(replay)
    except (OSError, pcap.PcapError) as e:
        raise DataplaneError(str(e), "--pcap")


class TesterPipeline(Pipeline):
    """``gen`` or ``sink`` (see the module docstring)."""

    def __init__(self, name: str, kind: Kind, interfaces: Mapping[str, Interface],
                 workers: int = 0, cpus: Optional[Sequence[int]] = None,
                 quiet: float = 100e-6, stats: Any = None, *, specs: Sequence[Any],
                 size: Union[int, str, None] = None, sizes: Optional[Sequence[int]] = None,
                 flows: int = 1, payload: str = "pattern", src_mac: Address = None,
                 dst_mac: Address = None, src_ip: Address = None, dst_ip: Address = None,
                 dst_step: int = 0, count: int = 0, rate: float = 0.0, duration: float = 0.0,
                 receive: Optional[str] = None,
                 replay: Union[str, pcap.Capture, None] = None,
                 capture: Optional[str] = None, verify: str = "full",
                 zero_copy: bool = False) -> None:
        super().__init__(name, kind, interfaces, workers, cpus, quiet, stats)
        if verify not in VERIFY_LEVELS:
            raise DataplaneError("verify %r: %s" % (verify, ", ".join(VERIFY_LEVELS)),
                                 "--verify")
        if kind.name == "gen" and payload == "fixed" and receive is not None \
                and verify != "count":
            raise DataplaneError("payload fixed sends no stamps: what comes back on the "
                                 "receive interface can only be counted (verify count)",
                                 "--payload")
        self.verify = verify
        if not isinstance(zero_copy, bool):
            raise DataplaneError("zero_copy %r: true or false" % (zero_copy,), "--zero-copy")
        if workers and (replay is not None or capture):
            raise DataplaneError("replaying and capturing run in the main process only",
                                 "--workers")
        names = list(self.interfaces)
        self.send_intf: Optional[Interface] = None
        self.receive_intf: Optional[Interface] = None
        self.replay = replay is not None
        self.sizes: List[int] = []
        gen: Optional[Dict[str, Any]] = None
        if kind.name == "gen":
            self.send_intf = self.interfaces[names[0]]
            if receive is not None:
                self.receive_intf = self.interfaces[receive]
            if replay is None:
                self.sizes = sizes_of(size, sizes)
                gen = generator_args(specs[0], self.send_intf.mode == "ip", self.sizes,
                                     flows, payload, src_mac, dst_mac, src_ip, dst_ip,
                                     zero_copy, dst_step)
        else:
            self.receive_intf = self.interfaces[names[0]]
        self.node: Optional[TesterNode] = None
        if workers:
            self.pool = TesterPool(workers, self.cpus, quiet, stats, send=self.send_intf,
                                   receive=self.receive_intf, gen=gen, count=count,
                                   rate=rate, duration=duration, verify=verify,
                                   zero_copy=zero_copy)
            self.hook_restarts()
        else:
            send, recv = self.send_intf, self.receive_intf
            tester: Dict[str, Any] = {
                "send": send and send.name, "receive": recv and recv.name,
                "receive_ip": recv is not None and recv.mode == "ip", "verify": verify,
                "zero_copy": zero_copy,     # the receiver (sink's, gen --receive's)
                "gen": gen, "count": count, "duration": duration,
                "shares": [[count, rate]], "finished": False,
                "tx_queues": send.tx_queues if send is not None else 0}
            if replay is not None:
                tester["replay"] = {"capture": read_replay(replay),
                                    "repeat": bool(count or duration)}
            if capture:
                port = send if send is not None else recv
                assert port is not None
                tester["capture"] = {"path": capture, "ip": port.mode == "ip"}
            self.host = LocalHost(TesterNode, {"workers": 1, "tester": tester}, (),
                                  self.interfaces)
            self.node = self.host.node

    # ------------------------------------------------------------- sending

    def sending_done(self) -> bool:
        """Every frame it was to send has gone out (or it was told to stop)."""
        if self.pool is not None:
            return bool(self.pool.sending_done())
        assert self.node is not None
        return bool(self.node.done)

    def finish(self) -> None:
        """Stop admitting frames (SIGINT, or the agent removing it)."""
        if self.pool is not None:
            self.pool.finish()
        elif self.node is not None:
            self.node.finish()

    def sent(self) -> int:
        if self.pool is not None:
            return int(self.pool.sent())
        s = self.node.sender if self.node is not None else None
        return s.sent if s is not None else 0

    def sent_bytes(self) -> int:
        if self.pool is not None:
            return int(self.pool.sent_bytes())
        s = self.node.sender if self.node is not None else None
        return s.bytes if s is not None else 0

    def ring_full(self) -> int:
        if self.pool is not None:
            return int(self.pool.ring_full())
        s = self.node.sender if self.node is not None else None
        return s.ring_full if s is not None else 0

    def in_flight(self) -> int:
        """Frames in our transmit rings the peer has not taken yet."""
        if self.pool is not None:
            return int(self.pool.in_flight())
        if self.send_intf is None:
            return 0
        return sum(q.in_flight() for q in self.send_intf.active_queues("tx"))

    def send_result(self) -> Dict[str, Any]:
        """gen's report of what went out."""
        if self.pool is not None:
            r: Dict[str, Any] = self.pool.send_result()
            r["workers"] = {"count": self.pool.nworkers, "restarts": self.pool.restarts}
            return r
        s = self.node.sender if self.node is not None else None
        if s is None:
            return send_result(0, 0, 0, 0, None, None)
        out: Dict[str, Any] = s.result()
        return out

    # ----------------------------------------------------------- receiving

    def refresh(self, timeout: float) -> None:
        """Have the workers report now (up to ``timeout`` s); nothing in-process."""
        if self.pool is not None:
            self.pool.refresh(timeout)

    def receive_counters(self) -> List[Tuple[str, Counters]]:
        """(interface name, Checker counters) of each receive side."""
        if self.pool is not None:
            if self.receive_intf is None:
                return []
            return [(self.receive_intf.name, self.pool.receive_counters())]
        return [(n, r.checker.counters()) for n, r in self._receivers()]

    def _receivers(self) -> List[Tuple[str, Any]]:
        """In-process: (interface name, Receiver) of each receive side."""
        assert self.node is not None
        return [(intf.name, r) for r, intf in ((self.node.receiver, self.receive_intf),
                                               (self.node.capturer, self.send_intf))
                if r is not None and intf is not None]

    def received(self) -> int:
        """Frames the receive sides looked at."""
        return sum(c["packets"] for _, c in self.receive_counters())

    def _arrived(self, r: Any) -> int:
        """Frames of ours r has seen: stamped ones, unless we replay."""
        assert self.node is not None
        mine = self.node.receiver
        if self.replay or mine is None or r is not mine:
            return int(r.packets)
        return mine.arrived

    def missing(self) -> bool:
        """Whether a receive side has seen fewer of our frames than went out."""
        if self.pool is not None:
            return (self.receive_intf is not None and
                    arrived(self.pool.receive_counters(), self.verify) < self.sent())
        return any(self._arrived(r) < self.sent() for _, r in self._receivers()) \
            if self.send_intf is not None else False

    def receive_result(self) -> Optional[Tuple[Dict[str, Any], int]]:
        """(sink's report of the checked interface, frames of ours that
        arrived), or None when nothing is checked."""
        if self.receive_intf is None:
            return None
        if self.pool is not None:
            checker, first, last = self.pool.merged_checker()
            return receive_result(checker, first, last), arrived(checker.counters(),
                                                                 checker.verify)
        assert self.node is not None and self.node.receiver is not None
        r = self.node.receiver
        return r.result(), self._arrived(r)

    def captured(self) -> Optional[int]:
        """Frames written to the capture file, or None without one."""
        if self.node is None:
            return None
        for r in (self.node.capturer, self.node.receiver):
            if r is not None and r.writer is not None:
                return int(r.writer.frames)
        return None

    # --------------------------------------------------------- the pipeline

    def stop(self, hand_back: bool = False) -> None:
        super().stop(hand_back)
        if self.node is not None:
            self.node.close()

    def counters(self) -> Counters:
        """{"sent": {packets, bytes, ring_full} (gen), "receive": {interface:
        Checker counters}}."""
        if self.final is not None:
            return self.final
        out: Counters = {}
        if self.send_intf is not None:
            out["sent"] = {"packets": self.sent(), "bytes": self.sent_bytes(),
                           "ring_full": self.ring_full()}
        out["receive"] = dict(self.receive_counters())
        return out

    def node_entries(self) -> List[Counters]:
        out: List[Counters] = []
        if self.send_intf is not None:
            out.append({"node": "gen", "interface": self.send_intf.name, "direction": "tx",
                        "packets": self.sent(), "bytes": self.sent_bytes(),
                        "ring_full": self.ring_full()})
        what = "gen-receive" if self.send_intf is not None else "sink"
        out.extend(dict(c, node=what, interface=n, direction="rx")
                   for n, c in self.receive_counters())
        return out
