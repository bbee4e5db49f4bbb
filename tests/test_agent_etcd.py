"""The agent's etcd source against a real etcd server (Debian's etcd-server):
put, change and delete keys; etcd killed and restarted mid-run, the agent
reconnects and resyncs.  The data plane is the fake of test_agent_api.py."""
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.request

import pytest
import yaml

from memifx.agent.main import Agent, wait_for
from test_agent_api import FakeApplier, doc

# Debian's etcd-server, installed by `bash .ci/setup --test`: missing is a failure.
ETCD = shutil.which("etcd")     # Debian's etcd-server: `bash .ci/setup --test` installs it
pytestmark = pytest.mark.timeout(90)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class EtcdServer:
    """One etcd member on free loopback ports, data in ``tmp``; ``kill`` and
    ``start`` again keep the data and the ports."""

    def __init__(self, tmp):
        self.dir = str(tmp / "etcd")
        self.client, self.peer = free_port(), free_port()
        self.url = "http://127.0.0.1:%d" % self.client
        self.proc = None

    def start(self):
        assert ETCD, "etcd-server is not installed (bash .ci/setup --test installs it)"
        peer = "http://127.0.0.1:%d" % self.peer
        self.proc = subprocess.Popen(
            [ETCD, "--name", "t", "--data-dir", self.dir,
             "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
             "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
             "--initial-cluster", "t=" + peer, "--log-level", "error"],
            stdout=subprocess.DEVNULL, stderr=open(self.dir + ".log", "ab"),
            start_new_session=True)
        assert wait_for(self.healthy, 20, 0.1), open(self.dir + ".log").read()[-2000:]

    def healthy(self):
        if self.proc.poll() is not None:
            raise AssertionError("etcd exited: " + open(self.dir + ".log").read()[-2000:])
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=1) as r:
                return b'"true"' in r.read()
        except OSError:
            return False

    def kill(self):
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


@pytest.fixture
def etcd(tmp_path):
    server = EtcdServer(tmp_path)
    server.start()
    yield server
    server.kill()


def client(server):
    import etcd3gw
    return etcd3gw.client(host="127.0.0.1", port=server.client, timeout=5)


def test_put_change_delete_keys(etcd, tmp_path):
    from memifx.agent.store import EtcdSource, put_document
    c = client(etcd)
    prefix = "/memifx/node1/"
    put_document(c, prefix, doc(tmp_path))
    c.put("/memifx/node2/interfaces/zz", "{socket: 1}")       # another node's: not ours
    fake = FakeApplier()
    agent = Agent(fake)
    stop = threading.Event()
    src = EtcdSource(etcd.url, prefix)
    try:
        src.start(agent, stop)
        assert agent.generation == 1 and agent.in_sync(), agent.state_view()
        assert src.status()["connected"]
        # change: a route added (one key)
        r1 = yaml.safe_load(c.get(prefix + "routers/r1")[0])
        r1["routes"].append("10.7.0.0/16 via 192.168.1.7")
        c.put(prefix + "routers/r1", yaml.safe_dump(r1))
        assert wait_for(lambda: agent.generation == 2, 10)
        assert fake.calls[-1] == "set_routes routers/r1" and agent.in_sync()
        # delete: the xconnect, then its interfaces
        c.delete(prefix + "xconnects/x2")
        assert wait_for(lambda: "xconnects/x2" not in agent.applied.pipelines, 10)
        c.delete(prefix + "interfaces/e")
        c.delete(prefix + "interfaces/f")
        assert wait_for(lambda: "f" not in agent.applied.interfaces, 10)
        assert fake.calls[-3:] == ["remove_pipeline xconnects/x2",
                                   "remove_interface interfaces/e",
                                   "remove_interface interfaces/f"]
        # a bad value: rejected with its path, the rest unchanged
        c.put(prefix + "xconnects/x1", "{interfaces: [a, q]}")
        assert wait_for(lambda: agent.document_error, 10)
        assert "xconnects.x1.interfaces[1]: no interface named q" in agent.document_error
        assert agent.applied.pipelines["x1"].interfaces == ("a", "b")
        c.put(prefix + "interfaces/q", "{socket: %s/q.sock, role: master}" % tmp_path)
        assert wait_for(lambda: agent.applied.pipelines["x1"].interfaces == ("a", "q"), 10)
        assert agent.document_error is None and agent.in_sync()
    finally:
        src.close()
    assert not src.thread.is_alive()


def test_etcd_killed_and_restarted_agent_resyncs(etcd, tmp_path):
    from memifx.agent.store import EtcdSource, put_document
    prefix = "/memifx/node1/"
    put_document(client(etcd), prefix, doc(tmp_path))
    fake = FakeApplier()
    agent = Agent(fake)
    stop = threading.Event()
    src = EtcdSource(etcd.url, prefix, timeout=1)
    src.MIN_PAUSE = src.MAX_PAUSE = 2.0       # so a change can land before it reconnects
    try:
        src.start(agent, stop)
        assert agent.in_sync()
        applied = len(fake.calls)
        etcd.kill()
        assert wait_for(lambda: not src.status()["connected"], 10)
        assert src.status()["error"]
        time.sleep(3)
        assert len(fake.calls) == applied and agent.in_sync()   # nothing torn down
        etcd.start()
        c = client(etcd)
        c.delete(prefix + "xconnects/x2")     # written while the agent is (likely) away
        assert wait_for(lambda: src.status()["connected"], 15)
        assert wait_for(lambda: "x2" not in agent.applied.pipelines, 10)
        assert src.status()["resyncs"] >= 1
        # and the watch works again after the resync
        c.delete(prefix + "xconnects/x1")
        assert wait_for(lambda: "x1" not in agent.applied.pipelines, 10)
        assert fake.calls[applied:] == ["remove_pipeline xconnects/x2",
                                        "remove_pipeline xconnects/x1"]
        assert agent.state_view()["store"]["connected"]
    finally:
        src.close()


def test_etcd_down_at_start_then_up(tmp_path):
    server = EtcdServer(tmp_path)
    fake = FakeApplier()
    agent = Agent(fake)
    stop = threading.Event()
    from memifx.agent.store import EtcdSource, put_document
    src = EtcdSource(server.url, "/n/", timeout=1)
    try:
        src.start(agent, stop)
        assert not src.status()["connected"] and agent.desired is None
        server.start()
        put_document(client(server), "/n/", doc(tmp_path))
        assert wait_for(lambda: agent.in_sync(), 20)
    finally:
        src.close()
        server.kill()


def test_cli_put_writes_one_key_per_item(etcd, tmp_path):
    from click.testing import CliRunner
    from memifx.cli.main import main
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(doc(tmp_path)))
    r = CliRunner().invoke(main, ["agent", "put", str(path), "--etcd", etcd.url,
                                  "--prefix", "/memifx/n1"])
    assert r.exit_code == 0, r.output
    keys = r.output.split()
    assert "/memifx/n1/agent" in keys and "/memifx/n1/routers/r1" in keys and len(keys) == 10
    c = client(etcd)
    assert yaml.safe_load(c.get("/memifx/n1/xconnects/x1")[0]) == {"interfaces": ["a", "b"]}
    d = doc(tmp_path, x2=False)
    path.write_text(yaml.safe_dump(d))
    r = CliRunner().invoke(main, ["agent", "put", str(path), "--etcd", etcd.url,
                                  "--prefix", "/memifx/n1/"])
    assert r.exit_code == 0 and c.get("/memifx/n1/xconnects/x2") == []
    d["xconnects"]["x1"]["interfaces"] = ["a", "zz"]
    path.write_text(yaml.safe_dump(d))
    r = CliRunner().invoke(main, ["agent", "put", str(path), "--etcd", etcd.url,
                                  "--prefix", "/memifx/n1/"])
    assert r.exit_code == 1 and "xconnects.x1.interfaces[1]: no interface named zz" in r.output
    assert yaml.safe_load(c.get("/memifx/n1/xconnects/x1")[0]) == {"interfaces": ["a", "b"]}
