"""The agent's etcd source when etcd goes silent without closing anything
(frozen host, partition, a middlebox dropping packets): a TCP proxy between
the agent and a real etcd stops forwarding while keeping every connection
open.  /state must say disconnected within watch_idle + timeout, and after
the silence ends the agent resyncs what changed meanwhile.  An idle but
healthy etcd must not look lost.  The data plane is the fake of
test_agent_api.py."""
import logging
import select
import socket
import threading
import time

import psutil
import pytest
import yaml

from memifx.agent.main import Agent, wait_for
from test_agent_api import FakeApplier, doc
from test_agent_e2e import AgentProc
from test_agent_etcd import client, etcd, free_port  # noqa: F401 (etcd: a fixture)

pytestmark = pytest.mark.timeout(60)

# TIMEOUT leaves a healthy etcd on a loaded 2-CPU machine time to answer (a slower
# answer is rightly a lost etcd, and would make these tests flap before the silence)
IDLE, TIMEOUT = 0.5, 1.0
# the source notices after about IDLE + TIMEOUT; twice that leaves room for the load
BOUND = 2 * (IDLE + TIMEOUT)


class BlackholeProxy:
    """TCP proxy from a loopback port to ``target_port``.  ``blackhole()``
    stops forwarding in both directions while keeping every connection
    (and accepting new ones): what a partition looks like from either end.
    ``resume()`` forwards again, including what was held back."""

    def __init__(self, target_port):
        self.target = ("127.0.0.1", target_port)
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.listener.settimeout(0.1)
        self.port = self.listener.getsockname()[1]
        self.url = "http://127.0.0.1:%d" % self.port
        self.forwarding = threading.Event()
        self.forwarding.set()
        self.closing = threading.Event()
        self.sockets, self.threads = [], []
        self.accepted = 0
        self._spawn(self._accept)

    def _spawn(self, target, *args):
        t = threading.Thread(target=target, args=args, daemon=True)
        self.threads.append(t)
        t.start()

    def _accept(self):
        while not self.closing.is_set():
            try:
                conn, _ = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self.accepted += 1
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                conn.close()
                continue
            self.sockets += [conn, upstream]
            self._spawn(self._pump, conn, upstream)
            self._spawn(self._pump, upstream, conn)

    def _held(self):
        """Wait while blackholed; False when the proxy closes meanwhile."""
        while not self.forwarding.wait(0.05):
            if self.closing.is_set():
                return False
        return not self.closing.is_set()

    def _pump(self, src, dst):
        try:
            while self._held():
                if not select.select([src], [], [], 0.05)[0]:
                    continue
                data = src.recv(65536)
                if not data or not self._held():
                    break
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def blackhole(self):
        self.forwarding.clear()

    def resume(self):
        self.forwarding.set()

    def close(self):
        self.closing.set()
        self.forwarding.set()
        for t in self.threads:
            t.join(5)
        self.listener.close()
        for s in self.sockets:
            s.close()


def connections_to(port):
    """This process's TCP connections to ``port`` on loopback."""
    return [c for c in psutil.Process().net_connections("tcp")
            if c.raddr and c.raddr.port == port]


@pytest.fixture
def proxy(etcd):  # noqa: F811 (the fixture imported above)
    p = BlackholeProxy(etcd.client)
    yield p
    p.close()


def test_silent_etcd_seen_within_bound_then_resynced(etcd, proxy, tmp_path):  # noqa: F811
    from memifx.agent.store import EtcdSource, put_document
    prefix = "/memifx/node1/"
    c = client(etcd)                   # straight to etcd: the test's own path is never cut
    put_document(c, prefix, doc(tmp_path))
    fake = FakeApplier()
    agent = Agent(fake)
    stop = threading.Event()
    src = EtcdSource(proxy.url, prefix, timeout=TIMEOUT, watch_idle=IDLE)
    try:
        src.start(agent, stop)
        assert agent.in_sync() and src.status()["connected"]
        c.delete(prefix + "xconnects/x1")            # the watch works through the proxy
        assert wait_for(lambda: "x1" not in agent.applied.pipelines, 10)
        applied = len(fake.calls)
        assert src.status()["connected"] and src.status()["error"] is None

        proxy.blackhole()
        t0 = time.monotonic()
        assert wait_for(lambda: not src.status()["connected"], BOUND + 1), src.status()
        took = time.monotonic() - t0
        assert took < BOUND, "silence noticed after %.2f s (bound %.2f s)" % (took, BOUND)
        assert "EtcdSilent: watch silent for 0.5 s" in src.status()["error"]
        assert agent.state_view()["store"]["connected"] is False

        c.delete(prefix + "xconnects/x2")            # changed while the agent cannot hear
        time.sleep(2 * (IDLE + TIMEOUT))
        st = src.status()
        assert not st["connected"] and st["error"], st
        assert "x2" in agent.applied.pipelines and len(fake.calls) == applied  # nothing torn down

        proxy.resume()
        assert wait_for(lambda: "x2" not in agent.applied.pipelines, 15), src.status()
        st = src.status()
        assert st["connected"] and st["error"] is None and st["resyncs"] >= 1, st
        assert fake.calls[applied:] == ["remove_pipeline xconnects/x2"]
        # and the watch follows again after the resync
        c.delete(prefix + "interfaces/f")
        assert wait_for(lambda: "f" not in agent.applied.interfaces, 10)
        assert agent.in_sync()
        # the watches and checks that timed out left no connection behind
        assert len(connections_to(proxy.port)) <= 2, connections_to(proxy.port)
    finally:
        src.close()
    assert not src.thread.is_alive()


def test_idle_healthy_etcd_does_not_flap_and_misses_nothing(etcd, tmp_path, caplog):  # noqa: F811
    from memifx.agent.store import EtcdSource, put_document
    prefix = "/memifx/node1/"
    c = client(etcd)
    put_document(c, prefix, doc(tmp_path))
    fake = FakeApplier()
    agent = Agent(fake)
    stop = threading.Event()
    idle = 0.2
    src = EtcdSource(etcd.url, prefix, timeout=TIMEOUT, watch_idle=idle)
    caplog.set_level(logging.INFO, logger="memifx.agent")
    try:
        src.start(agent, stop)
        assert agent.in_sync()
        applied = len(fake.calls)
        end = time.monotonic() + 10 * idle           # idle for ten intervals
        while time.monotonic() < end:
            assert src.status()["connected"], src.status()
            time.sleep(0.02)
        st = src.status()
        assert st["resyncs"] == 0 and st["error"] is None, st
        assert st["watch_reopens"] >= 5, st           # the watch was checked and reopened
        assert len(fake.calls) == applied
        # each reopen closed the watch it replaced
        assert len(connections_to(etcd.client)) <= 2, connections_to(etcd.client)

        # changes landing around the reopens: none lost, none needing a resync
        r1 = yaml.safe_load(c.get(prefix + "routers/r1")[0])
        for i in range(12):
            r1["routes"].append("10.%d.0.0/16 via 192.168.2.2" % (100 + i))
            c.put(prefix + "routers/r1", yaml.safe_dump(r1))
            time.sleep(idle * (i % 4) / 3)
        want = sorted(r1["routes"])
        assert wait_for(lambda: sorted(agent.applied.pipelines["r1"].routes) == want, 10)
        st = src.status()
        assert st["connected"] and st["resyncs"] == 0 and st["error"] is None, st
        assert st["watch_reopens"] >= 6, st
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    finally:
        src.close()
    assert not src.thread.is_alive()


def test_agent_cli_etcd_options_bound_a_silent_etcd(procs, etcd, proxy, tmp_path):  # noqa: F811
    """``memifx agent --etcd-timeout --etcd-watch-idle``: the process's /state
    follows a silent etcd within the bound those options give."""
    from memifx.agent.store import put_document
    prefix = "/memifx/node1/"
    port = free_port()
    c = client(etcd)
    put_document(c, prefix, {"agent": {"http-port": port}})
    agent = AgentProc(procs, ["--etcd", proxy.url, "--prefix", prefix,
                              "--etcd-timeout", str(TIMEOUT),
                              "--etcd-watch-idle", str(IDLE)], port)
    store = lambda: agent.get("/state")[1]["store"]          # noqa: E731
    assert wait_for(lambda: store()["connected"], 10)
    assert store()["watch_idle"] == IDLE
    assert wait_for(lambda: store()["watch_reopens"] >= 2, 10)
    assert store()["connected"] and store()["error"] is None, store()
    proxy.blackhole()
    t0 = time.monotonic()
    assert wait_for(lambda: not store()["connected"], BOUND + 1), store()
    took = time.monotonic() - t0
    assert took < BOUND, "silence noticed after %.2f s (bound %.2f s)" % (took, BOUND)
    assert "watch silent" in store()["error"]
    proxy.resume()
    assert wait_for(lambda: store()["connected"], 15), store()
    assert store()["resyncs"] >= 1


@pytest.mark.timeout(10)
def test_etcd_source_refuses_non_positive_intervals():
    from memifx.agent.store import EtcdSource
    for kw in ({"timeout": 0}, {"watch_idle": 0}, {"watch_idle": -1}):
        with pytest.raises(ValueError, match="must be positive seconds"):
            EtcdSource("http://127.0.0.1:1", "/n/", **kw)
    src = EtcdSource("http://127.0.0.1:1", "/n/")
    assert (src.timeout, src.watch_idle) == (EtcdSource.TIMEOUT, EtcdSource.WATCH_IDLE)
