"""A hostile-peer fuzzer: hypothesis stateful testing against a live memifx.

One memifx process (tests/fuzz_host.py) serves three interfaces and echoes
whatever they receive:

- master id 0 on socket A: the target of a rogue *slave* (:class:`SlaveFuzzer`);
- master id 1 on socket A: the good peer's interface, same listener;
- slave id 0 connecting to socket B, where a rogue *master* listens
  (:class:`MasterFuzzer`).

The rogues (tests/rogue.py) do random things in random orders: every
handshake message with valid and invalid fields, out of order, repeated,
with every kind of fd (sealed / unsealed / unsealable memfd, regular file,
pipe, eventfd, socket, /dev/zero, none, several); once the link is up,
valid frames mixed with descriptor rewrites, counter moves, chains that
never end, cookie and flag rewrites, kicks.  While nothing hostile has
happened on a link, the model knows what must happen and checks it (the
handshake completes, frames come back echoed, byte for byte).

After every step: the memifx process is alive.  Every ``GOOD_EVERY`` steps
and at the end of every example: its echo thread answers, and a good
memifx slave connects to id 1 and passes traffic both ways.  At the end of
every example the process's fds and memfd mappings are back to the
baseline (master role: per example; slave role: once the rogue master's
listener is gone, at the end of the run).

Truncating an unsealable region after the handshake (issue 10, attack 1)
is a rule only where the memifx under test survives it: a probe at the
start decides (``truncation_survived``) and the run says which it was;
``MEMIFX_FUZZ_TRUNCATE=1`` (or 0) overrides the probe.
Presetting an eventfd's counter and toggling O_NONBLOCK (attack 2) hangs
a memifx without bounded kicks only inside a narrow window, which would
make this test flaky rather than red: it is a rule with
``MEMIFX_FUZZ_KICK_ATTACK=1``.

Under AddressSanitizer: see setup.py (``MEMIFX_ASAN=1``); the fuzz host
inherits LD_PRELOAD and ASAN_OPTIONS.

Steps: CI runs ``MEMIFX_FUZZ_STEPS`` (default 300) steps per role;
``pytest -m soak tests/test_fuzz.py`` runs ``MEMIFX_FUZZ_SOAK_STEPS``
(default 100000) per role.  Each test prints how many steps it ran.
"""
import collections
import contextlib
import dataclasses
import fcntl
import functools
import gc
import json
import os
import select
import signal
import socket
import struct
import tempfile
import threading
import time
import traceback

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, Phase, settings, strategies as st  # noqa: E402
from hypothesis.stateful import (RuleBasedStateMachine, initialize, invariant,  # noqa: E402
                                 precondition, rule, run_state_machine_as_test)

import memifx  # noqa: E402
from memifx import wire  # noqa: E402
from conftest import wait_for  # noqa: E402
from fuzz_host import Host  # noqa: E402
from rogue import (DESC_NEXT, MASK_INT, RogueMaster, RogueSlave, Scribbler,  # noqa: E402
                   eventfd, memfd, raw)

CI_STEPS = int(os.environ.get("MEMIFX_FUZZ_STEPS", "300"))
SOAK_STEPS = int(os.environ.get("MEMIFX_FUZZ_SOAK_STEPS", "100000"))
KICK_ATTACK = os.environ.get("MEMIFX_FUZZ_KICK_ATTACK") == "1"
STEPS_PER_EXAMPLE = 30
EXAMPLES_PER_RUN = 200
GOOD_EVERY = 40                 # steps between good-peer checks
PROGRESS_EVERY = 5000           # steps between progress lines (soak)
REPLY_TIMEOUT = 3.5             # > the handshake timeout: memifx always answers by then

def mostly(usual, others, odds=3):
    """``usual`` about ``odds`` times in ``odds + 1``, else one of ``others``
    (repeating an element in sampled_from does not weight it)."""
    return st.integers(0, odds).flatmap(
        lambda i: st.just(usual) if i else st.sampled_from(others))


FD_KINDS = ("memfd-sealed", "memfd-unsealed", "memfd-unsealable", "file", "pipe",
            "eventfd", "socket", "chardev", "none", "several")
U16 = st.sampled_from([0, 1, 2, 3, 255, 256, 0x7FFF, 0xFFFF]) | st.integers(0, 0xFFFF)
U32 = st.sampled_from([0, 1, 63, 64, 4096, 1 << 20, 0x7FFFFFFF, 0xFFFFFFF0,
                       0xFFFFFFFF]) | st.integers(0, 0xFFFFFFFF)
U64 = st.sampled_from([0, 1, 4096, 1 << 32, (1 << 32) + 4096, 1 << 63,
                       (1 << 64) - 1]) | st.integers(0, (1 << 64) - 1)
NAMES = st.binary(max_size=40) | st.sampled_from([b"", b"\x1b[2J\x1b[31mred", b"a\nb\rc",
                                                  b"\xff\xfe" * 16])
DELTAS = st.sampled_from([0, 1, 2, 63, 64, 65, 128, 1024, 0x7FFF, 0x8000, 0xFFFF]) | \
    st.integers(0, 0xFFFF)


PICK = st.integers(0, 7)         # a ring: taken modulo the number of rings
DESCS = st.lists(st.tuples(st.integers(0, 1 << 14), mostly(0, [DESC_NEXT, 0xFFFF], 1),
                           mostly(0, [1, 0xFFFF]), U32, U32, U32), min_size=1, max_size=8)


class Counter:
    """Steps taken, and how memifx ended the links (printed per run); the
    last rules run, and the first fatal finding (a replay of a live run
    differs, so hypothesis's own report of it would say "flaky")."""
    steps = 0
    ups = 0
    endings = {}
    history = collections.deque(maxlen=40)
    fatal = None

    @classmethod
    def ended(cls, how):
        cls.endings[how] = cls.endings.get(how, 0) + 1


def first_failure(what):
    """Keep the first failure of a run, with the steps before it and the
    state of the memifx process (its threads' stacks if it stopped
    answering)."""
    if Counter.fatal is None:
        Counter.fatal = "%s failed after these steps:\n  %s\n%s\nmemifx: %s" % (
            what, "\n  ".join(Counter.history), traceback.format_exc(),
            host_state(Fuzzer.host))


def host_state(host):
    if host is None or not host.alive():
        return "dead"
    try:
        info = host.info(timeout=3)
        return "answers: %s" % json.dumps([(i["name"], i["state"], i["last_disconnect"])
                                            for i in info["interfaces"]])
    except AssertionError:
        os.kill(host.pid, signal.SIGABRT)       # faulthandler prints every thread
        host.proc.wait(5)
        return "does not answer; its stacks:\n%s" % host.output()[-4000:]


def logged(cls):
    """Record each rule call (name and arguments) in Counter.history, and
    the first failure of a rule, invariant or teardown in Counter.fatal.
    (hypothesis calls the function its marker holds: that is what is
    wrapped.)"""
    def wrap(fn):
        def wrapper(self, *a, **kw):
            if kw:
                Counter.history.append("%s(%s)" % (fn.__name__, ", ".join(
                    "%s=%s" % (k, repr(v)[:60]) for k, v in kw.items())))
            try:
                return fn(self, *a, **kw)
            except Exception:
                first_failure(fn.__name__)
                raise
        return functools.wraps(fn)(wrapper)
    markers = ("hypothesis_stateful_rule", "hypothesis_stateful_initialize_rule",
               "hypothesis_stateful_invariant")
    for name in dir(cls):
        attr = getattr(cls, name)
        for m in markers:
            marker = getattr(attr, m, None)
            if marker is not None:
                wrapped = wrap(marker.function)
                setattr(wrapped, m, dataclasses.replace(marker, function=wrapped))
                setattr(cls, name, wrapped)
    cls.teardown = wrap(cls.teardown)
    return cls


def make_fds(kind, size=4096):
    """fds of one kind, ours to close (the sender's copy)."""
    if kind == "memfd-sealed":
        return [memfd(size)]
    if kind == "memfd-unsealed":
        return [memfd(size, seal=False)]
    if kind == "memfd-unsealable":
        return [memfd(size, sealable=False)]
    if kind == "file":
        fd, path = tempfile.mkstemp(prefix="mx-fuzz-")
        os.unlink(path)
        os.ftruncate(fd, size)
        return [fd]
    if kind == "pipe":
        r, w = os.pipe()
        os.close(w)
        return [r]
    if kind == "eventfd":
        return [eventfd()]
    if kind == "socket":
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        b.close()
        return [a.detach()]
    if kind == "chardev":
        return [os.open("/dev/zero", os.O_RDWR)]
    if kind == "several":
        return [memfd(size), eventfd()]
    return []


def send_with(peer, data, kind, size=4096):
    fds = make_fds(kind, size)
    try:
        peer.send_raw(data, fds)
    finally:
        for fd in fds:
            os.close(fd)


def close_quietly(peer):
    if peer is not None:
        try:
            peer.close()
        except OSError:
            pass


class Fuzzer(RuleBasedStateMachine):
    """What both roles share: the host, the liveness invariants, the checks."""

    host = None                 # set by the test before running
    baseline = None             # (fds, memfd maps) or None: not checked per example

    def __init__(self):
        super().__init__()
        self.peer = None
        self.up = False
        self.pristine = False   # nothing hostile since the link came up
        self.steps = 0

    # ----------------------------------------------------------- liveness

    def assert_alive(self):
        assert self.host.alive(), "memifx died (exit %s); its output:\n%s" % (
            self.host.proc.returncode, self.host.output())

    @invariant()
    def memifx_alive(self):
        self.steps += 1
        Counter.steps += 1
        self.assert_alive()
        if Counter.steps % GOOD_EVERY == 0:
            good_peer_passes(self.host)
        if Counter.steps % PROGRESS_EVERY == 0:
            print("  %s: %d steps, links up %d, host alive, good peer served" % (
                type(self).__name__, Counter.steps, Counter.ups), flush=True)

    def teardown(self):
        close_quietly(self.peer)
        self.peer = None
        self.assert_alive()
        good_peer_passes(self.host)
        if self.baseline is not None:
            back_to_baseline(self.host, self.baseline)

    # ------------------------------------------------------------- replies

    def pump(self, timeout=0.0):
        """Read what memifx sent (up to ``timeout`` for the first message);
        returns the messages.  The link is over on DISCONNECT or EOF."""
        got = []
        while self.peer is not None:
            try:
                msg = self.peer.recv(timeout if not got else 0.0)
            except (socket.timeout, BlockingIOError):
                break
            except memifx.MemifError as e:
                raise AssertionError("memifx sent a malformed message: %s" % e.reason)
            finally:
                for fd in getattr(self.peer, "last_fds", []) if self.peer else []:
                    os.close(fd)
                if self.peer is not None:
                    self.peer.last_fds = []
            got.append(msg)
            if msg is None or isinstance(msg, wire.Disconnect):
                if isinstance(msg, wire.Disconnect):
                    assert msg.reason, "DISCONNECT without a reason"
                    Counter.ended(msg.reason if not msg.reason[-1].isdigit()
                                  else msg.reason.rstrip("0123456789()<> "))
                else:
                    Counter.ended("EOF")
                self.link_over()
                break
        if self.peer is not None and self.peer.sock is not None:
            self.peer.sock.settimeout(REPLY_TIMEOUT)   # recv(0.0) left it non-blocking
        return got

    def reply(self):
        """The one answer memifx owes to a control message: it must come."""
        got = self.pump(REPLY_TIMEOUT)
        assert got, "memifx did not answer within %.1f s" % REPLY_TIMEOUT
        return got[0]

    def send(self, data, kind="none", size=4096):
        """Send one record with fds of ``kind``; False (and the link over)
        if memifx has already closed the connection."""
        try:
            send_with(self.peer, data, kind, size)
            return True
        except (BrokenPipeError, ConnectionResetError, ConnectionRefusedError):
            self.pump(0.0)
            self.link_over()
            return False

    def link_over(self):
        close_quietly(self.peer)
        self.peer = None
        self.up = False
        self.pristine = False

    def hostile(self):
        self.pristine = False

    # Rules never depend on live state through preconditions or draws: the
    # same choices must mean the same rules whatever memifx did (hypothesis
    # checks that).  A rule that needs a link brings one up first.

    def need_up(self):
        if not self.up:
            self.recover()

    def need_pristine(self):
        if not (self.up and self.pristine):
            self.recover()

    # rules both roles share (hypothesis collects them from the base class)

    @rule(pick=PICK, cookie=st.sampled_from([None, 0, 0x3E31F21, 0xFFFFFFFF]),
          flags=st.sampled_from([0, MASK_INT, 0xFFFF]))
    def rewrite_header(self, pick, cookie, flags):
        self.need_up()
        self.peer_rewrites_header(pick, cookie, flags)

    @rule(n=st.integers(1, 5))
    def kicks(self, n):
        self.need_up()
        for _ in range(n):
            for efd in self.peer.efds:
                self.kick(efd)
        self.pump()

    def peer_rewrites_header(self, pick, cookie, flags):
        p = self.peer
        rings = p.s2m + p.m2s
        ring = rings[pick % len(rings)]
        if cookie is not None:
            ring.cookie = cookie
        ring.flags = flags
        self.hostile()
        self.pump()

    def kick(self, efd):
        """Signal an eventfd without ever blocking the fuzzer itself: after
        eventfd_preset the shared file description may be blocking with
        the counter at its maximum."""
        try:
            if select.select([], [efd], [], 0)[1]:
                os.write(efd, struct.pack("<Q", 1))
        except (OSError, ValueError):
            pass


@contextlib.contextmanager
def preset_and_toggling(efds):
    """Issue 10 attack 2: each counter at its maximum (a writer would
    block), and O_NONBLOCK cleared and set again on the shared file
    descriptions by a thread, until the block ends (cleared then)."""
    flags = []
    for efd in efds:
        fl = fcntl.fcntl(efd, fcntl.F_GETFL) | os.O_NONBLOCK
        flags.append(fl)
        fcntl.fcntl(efd, fcntl.F_SETFL, fl)
        try:
            os.read(efd, 8)
            os.write(efd, struct.pack("<Q", (1 << 64) - 2))
        except OSError:
            pass
    halt = threading.Event()

    def toggle():
        k = 0
        while not halt.is_set():
            for efd, fl in zip(efds, flags):
                fcntl.fcntl(efd, fcntl.F_SETFL, fl & ~os.O_NONBLOCK if k % 2 == 0 else fl)
            k += 1
    t = threading.Thread(target=toggle, daemon=True)
    t.start()
    try:
        yield
    finally:
        halt.set()
        t.join(5)
        for efd, fl in zip(efds, flags):
            fcntl.fcntl(efd, fcntl.F_SETFL, fl & ~os.O_NONBLOCK)


@contextlib.contextmanager
def scribbling(rings, region_size, seed):
    s = Scribbler(rings, region_size, seed)
    s.start()
    try:
        yield s
    finally:
        s.stop()


def good_peer_passes(host, socket_a=None):
    """A good memifx slave connects to master id 1 of the host and traffic
    crosses both ways (the host echoes); the host's echo thread answers."""
    host.info()
    path = socket_a or Fuzzer.socket_a
    slave = memifx.Interface(socket=path, id=1, role="slave", name="good", ring_size=64)
    slave.connect()
    try:
        assert slave.wait_connected(5), ("good peer could not connect", slave.info())
        sent = [struct.pack("<I", i) + bytes([i]) * 60 for i in range(8)]
        assert slave.tx_burst(sent) == len(sent)
        got = []
        wait_for(lambda: got.extend(slave.rx_burst()) or len(got) >= len(sent), 5, 0.002)
        assert got == sent, "good peer's frames did not come back (%d of %d)" % (
            len(got), len(sent))
    finally:
        slave.close()


def back_to_baseline(host, baseline, timeout=5.0):
    def now():
        gc.collect()
        return host.fds(), host.maps()[0]
    assert wait_for(lambda: now()[0] <= baseline[0] and now()[1] <= baseline[1],
                    timeout, 0.05), ("fds/memfd maps not back to baseline", now(), baseline)


# ================================================ rogue slave vs memifx master

@logged
class SlaveFuzzer(Fuzzer):
    """A rogue slave against memifx master id 0 (2 queues each way)."""

    truncation = False          # the truncate rule runs (see the module docstring)

    def connect(self):
        self.pump(0.0)                   # what memifx said last, for the tally
        close_quietly(self.peer)
        self.up = self.pristine = False
        self.peer = RogueSlave.connect(self.socket_a, hello=False)
        hello = self.reply()
        assert isinstance(hello, wire.Hello), hello
        self.phase = "hello"
        self.regions = 0

    @initialize()
    def start(self):
        self.connect()

    def need_peer(self):
        if self.peer is None:
            self.connect()

    def recover(self):
        self.good_handshake(2, 6, "memfd-sealed")

    @rule(rings=st.integers(1, 2), log2=st.integers(1, 8),
          region=st.sampled_from(["memfd-sealed", "memfd-unsealed", "memfd-unsealable"]))
    def good_handshake(self, rings, log2, region):
        """A complete correct handshake: it must succeed."""
        for attempt in range(40):
            self.connect()
            try:
                self.peer.handshake(n_s2m=rings, n_m2s=rings, log2=log2,
                                    sealable=region != "memfd-unsealable",
                                    seal=region == "memfd-sealed")
                break
            except AssertionError as e:
                # the previous rogue's link may still be going down in memifx
                assert "already connected" in str(self.peer.seen[-1:]), e
                time.sleep(0.05)
        else:
            raise AssertionError("good handshake never accepted")
        self.phase = "up"
        self.region_kind = region
        self.up = self.pristine = True
        Counter.ups += 1
        self.echoed = 0
        self.sent = 0

    @rule()
    def reconnect(self):
        self.connect()

    @rule(id=mostly(0, [2, 0xFFFFFFFF]), mode=mostly(0, [1, 2, 9]),
          version=mostly(wire.VERSION, [0x0100, 0x0201, 0xFFFF, 0]),
          secret=mostly(b"", [b"x", b"y" * 23]), name=NAMES,
          fd=mostly("none", FD_KINDS))
    def init(self, id, mode, version, secret, name, fd):
        self.need_peer()
        msg = wire.encode(wire.Init(version=version, id=id, mode=mode, secret=secret,
                                    name=b""))
        msg = msg[:2 + 2 + 4 + 1 + 24] + name[:32].ljust(32, b"\0") + msg[2 + 2 + 4 + 1 + 24 + 32:]
        valid = id == 0 and mode == 0 and version >> 8 == 2 and not secret and \
            fd == "none" and self.phase == "hello"
        if not self.send(msg, fd):
            return
        answer = self.reply()
        if isinstance(answer, wire.Ack):
            self.phase = "init"
        elif valid and not (isinstance(answer, wire.Disconnect) and
                            answer.reason in ("already connected", "handshake timeout")):
            raise AssertionError("valid INIT refused: %r" % (answer,))
        if not valid:
            self.hostile()

    @rule(index=mostly(None, [1, 255, 256, 0xFFFF]),
          size=mostly(4096, [0, 1, 8192, 1 << 32, (1 << 32) + 1]) | U64,
          fd=st.sampled_from(FD_KINDS[:3]) | st.sampled_from(FD_KINDS),
          fd_size=mostly(4096, [0, 8192]))
    def add_region(self, index, size, fd, fd_size):
        self.need_peer()
        index = self.regions if index is None else index
        if self.send(wire.encode(wire.AddRegion(index=index, size=size)), fd, fd_size) \
                and isinstance(self.reply(), wire.Ack):
            self.regions += 1
        self.hostile()

    @rule(flags=st.sampled_from([0, 1, 0xFFFF]), index=st.sampled_from([0, 1, 2, 0xFFFF]),
          region=mostly(0, [1, 0xFFFF], 2),
          offset=st.sampled_from([0, 64, 63, 4096 - 64, 4096, 0xFFFFFFC0]) | U32,
          log2=st.sampled_from([0, 1, 6, 10, 14, 15, 255]),
          private=mostly(0, [1, 0xFFFF]), fd=mostly("eventfd", FD_KINDS))
    def add_ring(self, flags, index, region, offset, log2, private, fd):
        self.need_peer()
        msg = wire.encode(wire.AddRing(flags=flags, index=index, region=region,
                                       offset=offset, log2_ring_size=log2,
                                       private_hdr_size=private))
        self.send(msg, fd) and self.reply()
        self.hostile()

    @rule(name=NAMES)
    def connect_msg(self, name):
        self.need_peer()
        self.send(raw(wire.CONNECT, name[:32])) and self.reply()
        self.hostile()

    @rule(kind=st.integers(0, 12), body=st.binary(max_size=140),
          size=mostly(128, [0, 1, 2, 127, 129, 4096], 1), fd=mostly("none", FD_KINDS))
    def garbage(self, kind, body, size, fd):
        self.need_peer()
        self.send(raw(kind, body, size), fd) and self.reply()
        self.hostile()

    @rule(reason=NAMES)
    def disconnect(self, reason):
        self.need_peer()
        self.send(raw(wire.DISCONNECT, b"\0\0\0\0" + reason[:96])) and \
            self.reply()                # EOF: memifx closes its side

    @rule()
    def hang_up(self):
        self.need_peer()
        self.link_over()

    # ------------------------------------------------------ data path (up)

    @rule(n=st.integers(1, 8), size=st.sampled_from([14, 60, 1500, 2048]))
    def roundtrip(self, n, size):
        """Nothing hostile yet: frames sent on S2M ring 0 come back on M2S
        ring 0, byte for byte."""
        self.need_pristine()
        p = self.peer
        ring = p.m2s[0]
        n = min(n, ring.size)
        p.post(n, ring)
        sent = [struct.pack("<II", self.sent + i, size) + bytes([i]) * (size - 8)
                for i in range(n)]
        for f in sent:
            p.send_frame(f)
        self.kick(p.efds[0])
        self.sent += n
        ok = wait_for(lambda: (self.pump(), not self.up or
                               (ring.tail - self.echoed) & 0xFFFF >= n)[1], 5, 0.002)
        assert self.up, "link went down with no hostile act: %r" % (p.seen[-1:],)
        assert ok, "echo did not come back (tail %d)" % ring.tail
        got = []
        for s in range(self.echoed, self.echoed + n):
            fl, reg, length, off, _ = ring.desc(s)
            assert not fl & DESC_NEXT and reg == 0
            got.append(bytes(p.mem[off:off + length]))
        self.echoed = (self.echoed + n) & 0xFFFF
        assert got == sent

    @rule(pick=PICK, descs=DESCS, advance=st.integers(0, 1 << 14))
    def rewrite_descriptors(self, pick, descs, advance):
        self.need_up()
        p = self.peer
        rings = p.s2m + p.m2s
        ring = rings[pick % len(rings)]
        for slot, flags, region, length, offset, metadata in descs:
            ring.put(slot, flags=flags, region=region, length=length, offset=offset,
                     metadata=metadata)
        if advance:
            ring.head = ring.head + advance % ring.size + 1
            self.kick(p.efds[pick % len(rings)])
        self.hostile()
        self.pump()

    @rule(pick=PICK, delta=DELTAS, which=mostly("head", ["tail"], 2))
    def move_counter(self, pick, delta, which):
        self.need_up()
        p = self.peer
        rings = p.s2m + p.m2s
        ring = rings[pick % len(rings)]
        setattr(ring, which, getattr(ring, which) + delta)
        self.kick(p.efds[pick % len(rings)])
        self.hostile()
        self.pump()

    @rule(pick=PICK, n=st.integers(1, 70))
    def endless_chain(self, pick, n):
        """Descriptors with NEXT on every one: a frame that never ends."""
        self.need_up()
        p = self.peer
        ring = p.s2m[pick % len(p.s2m)]
        h = ring.head
        for k in range(min(n, ring.size)):
            ring.put(h + k, flags=DESC_NEXT, length=64, offset=p.buf(ring, h + k))
        ring.head = h + min(n, ring.size)
        self.kick(p.efds[ring.index])
        self.hostile()
        self.pump()

    @rule(seed=st.integers(0, 1 << 16), frames=st.integers(1, 64))
    def scribble_during_traffic(self, seed, frames):
        """A thread rewrites descriptors while frames flow both ways."""
        self.need_up()
        p = self.peer
        self.hostile()
        with scribbling(p.s2m + p.m2s, p.region_size, seed):
            for i in range(frames):
                ring = p.s2m[i % len(p.s2m)]
                if (ring.head - ring.tail) & 0xFFFF < ring.size:
                    p.send_frame(b"f" * 60, ring)
                m2s = p.m2s[i % len(p.m2s)]
                if (m2s.head - m2s.tail) & 0xFFFF < m2s.size:
                    p.post(1, m2s)
                self.kick(p.efds[i % len(p.s2m)])
                time.sleep(0.001)
        self.pump()

    @precondition(lambda self: SlaveFuzzer.truncation)
    @rule(size=st.sampled_from([0, 4096, 12288]))
    def truncate_region(self, size):
        """On a link with an unsealable region: publish a frame, shrink
        region 0 under memifx, kick.  Our own mapping faults from then on
        too: the link is abandoned."""
        if not (self.up and self.region_kind == "memfd-unsealable"):
            self.good_handshake(1, 6, "memfd-unsealable")
        p = self.peer
        ring = p.s2m[0]
        h = ring.head
        self.hostile()
        ring.put(h, length=64, offset=p.buf(ring, h))
        ring.head = h + 1
        try:
            os.ftruncate(p.fds[0], size)
        except OSError:
            return                       # sealed: the kernel refuses, as it should
        self.hostile()
        p.mem.close()
        p.maps.remove(p.mem)
        ring.mem = None
        self.kick(p.efds[0])
        time.sleep(0.05)
        self.pump()
        self.link_over()

    @precondition(lambda self: KICK_ATTACK)
    @rule(toggles=st.integers(1, 50))
    def eventfd_preset(self, toggles):
        """Counters at their maximum, O_NONBLOCK toggling while frames
        flow: memifx's kicks must not block."""
        self.need_up()
        p = self.peer
        self.hostile()
        with preset_and_toggling(p.efds):
            for i in range(toggles):
                ring, m2s = p.s2m[0], p.m2s[0]
                if (m2s.head - m2s.tail) & 0xFFFF < m2s.size:
                    p.post(1, m2s)
                if (ring.head - ring.tail) & 0xFFFF < ring.size:
                    p.send_frame(b"k" * 60, ring)
                time.sleep(0.001)
        self.pump()

    @rule(kind=st.integers(0, 9))
    def message_while_up(self, kind):
        self.need_up()
        self.send(raw(kind)) and self.reply()
        self.hostile()


# ================================================ rogue master vs memifx slave

@logged
class MasterFuzzer(Fuzzer):
    """A rogue master on socket B, against the memifx slave (id 0)."""

    listener = None             # the RogueMaster listening on socket B (the test's)

    def accept(self, hello):
        """The next connection of the memifx slave (the host caps its backoff
        at 0.1 s); False if it was already gone (it waited in the backlog
        past its handshake timeout)."""
        self.pump(0.0)
        self.link_over()
        m = self.listener
        m.sock = None
        m.fds, m.maps, m.seen = [], [], []
        m.accept(hello=False, timeout=REPLY_TIMEOUT)
        self.peer = m
        if hello is True:
            hello = m.hello_msg()
        return self.send(hello if isinstance(hello, bytes) else wire.encode(hello))

    def link_over(self):
        if self.peer is not None:
            for mm in self.peer.maps:
                try:
                    mm.close()
                except BufferError:
                    pass
            for fd in self.peer.fds:
                os.close(fd)
            self.peer.fds, self.peer.maps = [], []
            if self.peer.sock is not None:
                self.peer.sock.close()
                self.peer.sock = None
        self.peer = None
        self.up = self.pristine = False

    def teardown(self):
        self.link_over()
        super().teardown()

    @initialize()
    def start(self):
        self.good_handshake()

    def recover(self):
        self.good_handshake()

    @rule()
    def good_handshake(self):
        for attempt in range(5):
            if self.accept(True):
                try:
                    self.peer.handshake()
                    break
                except (AssertionError, OSError):
                    # a connection that outwaited its handshake timeout
                    # in our backlog: memifx closed it, the next is fresh
                    if self.peer.seen[-1:] not in ([], [None]) and not \
                            isinstance(self.peer.seen[-1], wire.Disconnect):
                        raise
        else:
            raise AssertionError("good handshake never completed")
        Counter.ups += 1
        assert len(self.peer.s2m) >= 1 and len(self.peer.m2s) >= 1
        self.up = self.pristine = True
        self.echoed = 0
        self.sent = 0
        self.posted_seen = 0

    @rule(name=NAMES, minv=mostly(wire.VERSION, [0, 0x0201, 0xFFFF], 5),
          maxv=mostly(wire.VERSION, [0, 0x0100, 0xFFFF], 5),
          region=U16, m2s=U16, s2m=U16, log2=st.sampled_from([0, 1, 6, 14, 15, 255]),
          steps=st.integers(0, 12), bad=st.sampled_from(["ack-fd", "connected", "garbage",
                                                         "hello", "disconnect", "close",
                                                         "nothing"]),
          fd=st.sampled_from(FD_KINDS))
    def hostile_handshake(self, name, minv, maxv, region, m2s, s2m, log2, steps, bad, fd):
        """A HELLO with any fields, ``steps`` correct answers, then one bad one."""
        hello = raw(wire.HELLO, name[:32].ljust(32, b"\0") +
                    struct.pack("<HHHHHB", minv, maxv, region, m2s, s2m, log2 & 0xFF))
        if not self.accept(hello):
            return
        self.hostile()
        p = self.peer
        for _ in range(steps):
            got = self.pump(REPLY_TIMEOUT)
            if self.peer is None or not got:
                return
            if isinstance(got[-1], wire.Connect):
                self.send(wire.encode(wire.Connected(if_name="rogue")))
                time.sleep(0.01)
                self.link_over()
                return
            if not self.send(wire.encode(wire.Ack())):
                return
        if bad == "ack-fd":
            self.send(wire.encode(wire.Ack()), fd)
        elif bad == "connected":
            self.send(wire.encode(wire.Connected(if_name="early")), fd)
        elif bad == "garbage":
            self.send(raw(wire.ADD_RING, b"\xff" * 20, 77), fd)
        elif bad == "hello":
            self.send(wire.encode(p.hello_msg()))
        elif bad == "disconnect":
            self.send(wire.encode(wire.Disconnect(code=1, reason="go away")))
        elif bad == "close":
            self.link_over()
            return
        self.pump(0.05)
        self.link_over()

    @rule(n=st.integers(1, 8), size=st.sampled_from([14, 60, 1500, 2048]))
    def roundtrip(self, n, size):
        """Nothing hostile yet: frames given on M2S ring 0 come back on S2M,
        byte for byte."""
        self.need_pristine()
        p = self.peer
        ring = p.m2s[0]
        if not wait_for(lambda: (ring.head - ring.tail) & 0xFFFF >= n, 1, 0.002):
            return                       # fewer buffers posted than frames
        sent = [struct.pack("<II", self.sent + i, size) + bytes([i]) * (size - 8)
                for i in range(n)]
        for f in sent:
            p.give(f, ring)
        self.sent += n
        self.kick(p.efds[len(p.s2m)])
        got = []
        ok = wait_for(lambda: (self.pump(), not self.up or
                               (got.extend(p.take(p.s2m[0])), len(got) >= n)[1])[1],
                      5, 0.002)
        assert self.up, "link went down with no hostile act: %r" % (p.seen[-1:],)
        assert ok, "echo did not come back (%d of %d)" % (len(got), n)
        assert got == sent

    @rule(pick=PICK, descs=DESCS, publish=st.booleans())
    def rewrite_descriptors(self, pick, descs, publish):
        self.need_up()
        p = self.peer
        ring = p.m2s[pick % len(p.m2s)]
        t = ring.tail
        for k, (_, flags, region, length, offset, metadata) in enumerate(descs):
            ring.put(t + k, flags=flags, region=region, length=length, offset=offset,
                     metadata=metadata)
        if publish:
            ring.tail = t + len(descs)
            self.kick(p.efds[len(p.s2m) + pick % len(p.m2s)])
        self.hostile()
        self.pump()

    @rule(pick=PICK, delta=DELTAS, which=mostly("tail", ["head"], 2))
    def move_counter(self, pick, delta, which):
        self.need_up()
        p = self.peer
        rings = p.s2m + p.m2s
        i = pick % len(rings)
        setattr(rings[i], which, getattr(rings[i], which) + delta)
        self.kick(p.efds[i])
        self.hostile()
        self.pump()

    @rule(n=st.integers(1, 70))
    def endless_chain(self, n):
        self.need_up()
        p = self.peer
        ring = p.m2s[0]
        t = ring.tail
        for k in range(n):
            fl, reg, blen, off, _ = ring.desc(t + k)
            ring.put(t + k, flags=DESC_NEXT, region=reg, offset=off, length=min(blen, 64))
        ring.tail = t + n
        self.kick(p.efds[len(p.s2m)])
        self.hostile()
        self.pump()

    @rule(seed=st.integers(0, 1 << 16), frames=st.integers(1, 64))
    def scribble_during_traffic(self, seed, frames):
        """A thread rewrites descriptors while frames flow both ways."""
        self.need_up()
        p = self.peer
        self.hostile()
        with scribbling(p.m2s + p.s2m, len(p.regions[0]), seed):
            for i in range(frames):
                ring = p.m2s[0]
                if (ring.head - ring.tail) & 0xFFFF:
                    fl, reg, blen, off, _ = ring.desc(ring.tail)
                    ring.put(ring.tail, region=0, offset=off, length=min(blen, 60))
                    ring.tail = ring.tail + 1
                p.s2m[0].tail = p.s2m[0].head           # hand back whatever came
                self.kick(p.efds[len(p.s2m)])
                time.sleep(0.001)
        self.pump()

    @rule(kind=st.integers(0, 9), fd=mostly("none", FD_KINDS))
    def message_while_up(self, kind, fd):
        self.need_up()
        self.send(raw(kind), fd) and self.reply()
        self.hostile()

    @precondition(lambda self: KICK_ATTACK)
    @rule(toggles=st.integers(1, 50))
    def eventfd_preset(self, toggles):
        """Counters at their maximum, O_NONBLOCK toggling while frames
        flow: memifx's kicks must not block."""
        self.need_up()
        p = self.peer
        self.hostile()
        with preset_and_toggling(p.efds):
            for i in range(toggles):
                if (p.m2s[0].head - p.m2s[0].tail) & 0xFFFF:
                    try:
                        p.give(b"k" * 60, p.m2s[0])
                    except (IndexError, ValueError):
                        pass             # a descriptor we scribbled on earlier
                p.s2m[0].tail = p.s2m[0].head
                time.sleep(0.001)
        self.pump()

    @rule()
    def hang_up(self):
        self.need_up()
        self.link_over()


# ================================================================= running

def interfaces(socket_a, socket_b):
    return (dict(socket=socket_a, id=0, role="master", name="fuzz-master",
                 rx_queues=2, tx_queues=2),
            dict(socket=socket_a, id=1, role="master", name="good-master"),
            dict(socket=socket_b, id=0, role="slave", name="fuzz-slave", ring_size=64))


@pytest.fixture
def fuzz_host(procs, unique):
    socket_a, socket_b = "@%s-a" % unique, "@%s-b" % unique
    host = Host(procs, *interfaces(socket_a, socket_b),
                env={"FUZZ_HOST_RECONNECT_MAX": "0.1"})
    Fuzzer.socket_a = socket_a
    Fuzzer.host = host
    good_peer_passes(host, socket_a)
    host.socket_b = socket_b
    time.sleep(0.3)                     # the good peer's link finishes going down
    host.baseline = (host.fds(), host.maps()[0])
    return host


def truncation_survived(procs, unique):
    """Does this memifx survive a region truncated after the handshake?  A
    rogue slave shrinks its unsealable region to 0 and publishes a frame to
    a throwaway memifx process."""
    path = "@%s-probe" % unique
    host = Host(procs, dict(socket=path, id=0, role="master", name="probe"))
    with RogueSlave.connect(path) as r:
        try:
            r.handshake(sealable=False)
        except AssertionError:
            return True                  # unsealable regions refused: nothing to truncate
        r.send_frame(b"t" * 60)
        os.ftruncate(r.fds[0], 0)       # from here on, our own mapping faults too
        os.write(r.efds[0], struct.pack("<Q", 1))
        time.sleep(0.5)
    return host.alive()


def run(machine, total, settings_kw):
    """Run ``machine`` until at least ``total`` steps were taken."""
    Counter.steps = Counter.ups = 0
    Counter.endings = {}
    Counter.fatal = None
    Counter.history.clear()
    start = time.monotonic()
    while Counter.steps < total:
        left = total - Counter.steps
        try:
            run_state_machine_as_test(machine, settings=settings(
                # fresh runs of at most EXAMPLES_PER_RUN: hypothesis's record
                # of what it has tried grows with each example, and so does
                # the time it takes to find a new one
                max_examples=min(EXAMPLES_PER_RUN, left // STEPS_PER_EXAMPLE + 1),
                stateful_step_count=STEPS_PER_EXAMPLE, deadline=None, database=None,
                # a live process does not replay exactly: report the first
                # failure as found, do not shrink it
                phases=(Phase.explicit, Phase.generate),
                suppress_health_check=list(HealthCheck), **settings_kw))
        except BaseException:
            if Counter.fatal is not None:
                raise AssertionError(Counter.fatal) from None
            raise
    took = time.monotonic() - start
    print("\n%s: %d steps in %.1f s (%.0f steps/s)" % (machine.__name__, Counter.steps,
                                                       took, Counter.steps / took))
    print("links up %d; memifx ended links with: %s" % (
        Counter.ups, ", ".join("%s x%d" % kv for kv in sorted(Counter.endings.items(),
                                                              key=lambda kv: -kv[1]))))
    return Counter.steps


def fuzz_slave_role(host, total, truncation, **settings_kw):
    """Rogue slaves against the memifx master."""
    forced = os.environ.get("MEMIFX_FUZZ_TRUNCATE")
    SlaveFuzzer.truncation = truncation if forced is None else forced == "1"
    truncation = SlaveFuzzer.truncation
    print("\ntruncation rule: %s" % ("on" if truncation else
                                     "off (memifx dies of a truncated region)"))
    SlaveFuzzer.baseline = host.baseline
    steps = run(SlaveFuzzer, total, settings_kw)
    assert steps >= total
    good_peer_passes(host)
    back_to_baseline(host, host.baseline)
    print("fds %d, memfd maps %d: back to baseline" % host.baseline)


def fuzz_master_role(host, total, **settings_kw):
    """A rogue master against the memifx slave."""
    MasterFuzzer.listener = RogueMaster.listen(host.socket_b)
    try:
        steps = run(MasterFuzzer, total, settings_kw)
    finally:
        MasterFuzzer.listener.close()
    assert steps >= total
    good_peer_passes(host)
    back_to_baseline(host, host.baseline)
    print("fds %d, memfd maps %d: back to baseline" % host.baseline)


@pytest.mark.timeout(240)
def test_fuzz_rogue_slave(fuzz_host, procs, unique):
    fuzz_slave_role(fuzz_host, CI_STEPS, truncation_survived(procs, unique),
                    derandomize=True)


@pytest.mark.timeout(240)
def test_fuzz_rogue_master(fuzz_host):
    fuzz_master_role(fuzz_host, CI_STEPS, derandomize=True)


@pytest.mark.soak
@pytest.mark.timeout(6 * 3600)
def test_fuzz_rogue_slave_soak(fuzz_host, procs, unique):
    fuzz_slave_role(fuzz_host, SOAK_STEPS, truncation_survived(procs, unique))


@pytest.mark.soak
@pytest.mark.timeout(6 * 3600)
def test_fuzz_rogue_master_soak(fuzz_host):
    fuzz_master_role(fuzz_host, SOAK_STEPS)
