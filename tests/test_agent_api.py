"""The agent over a fake data plane: apply by difference and its book-keeping,
the HTTP API (/config, /state, /healthz, /readyz, /metrics), the file
source (change and SIGHUP).  Traffic through a real Dataplane is in
tests/test_agent_e2e.py."""
import json
import os
import signal
import threading
import urllib.error
import urllib.request

import pytest
import yaml

from memifx.agent.apply import ApplyError
from memifx.agent.http import ApiServer
from memifx.agent.main import Agent, wait_for
from memifx.agent.store import FileSource

pytestmark = pytest.mark.timeout(30)


class FakeApplier:
    """Records operations; refuses those named in ``refuse``; link state
    and problems set by the test."""

    def __init__(self):
        self.calls = []
        self.refuse = {}
        self.up = {}
        self.dead = []
        self.interfaces = set()

    def execute(self, op):
        if str(op) in self.refuse:
            raise ApplyError(self.refuse[str(op)])
        self.calls.append(str(op))
        if op.action == "add_interface":
            self.interfaces.add(op.name)
            self.up.setdefault(op.name, True)
        elif op.action == "remove_interface":
            self.interfaces.discard(op.name)

    def interfaces_up(self):
        return {n: self.up.get(n, False) for n in self.interfaces}

    def problems(self):
        return list(self.dead)

    def metrics(self):
        return "# TYPE memifx_rx_packets counter\nmemifx_rx_packets 7\n"


def doc(tmp_path, routes=("10.0.0.0/8 via 192.168.2.2",), x2=True):
    s = str(tmp_path)
    d = {"agent": {"http-port": 0},
         "interfaces": {"a": {"socket": s + "/a.sock", "role": "master"},
                        "b": {"socket": s + "/b.sock", "role": "master"},
                        "c": {"socket": s + "/c.sock", "role": "master", "ip": "192.168.1.1/24"},
                        "d": {"socket": s + "/d.sock", "role": "master", "ip": "192.168.2.1/24"}},
         "xconnects": {"x1": {"interfaces": ["a", "b"]}},
         "routers": {"r1": {"interfaces": ["c", "d"], "routes": list(routes)}}}
    if x2:
        d["interfaces"]["e"] = {"socket": s + "/e.sock", "role": "master"}
        d["interfaces"]["f"] = {"socket": s + "/f.sock", "role": "master"}
        d["xconnects"]["x2"] = {"interfaces": ["e", "f"]}
    return d


@pytest.fixture
def api():
    servers = []

    def start(agent):
        srv = ApiServer(agent, 0)
        servers.append(srv)
        return lambda path: get(srv.port, path)
    yield start
    for s in servers:
        s.close()


def get(port, path):
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=5) as r:
            body, code = r.read(), r.status
    except urllib.error.HTTPError as e:
        body, code = e.read(), e.code
    return code, (body.decode() if path == "/metrics" else json.loads(body))


def test_apply_by_difference_and_state(tmp_path, api):
    fake = FakeApplier()
    agent = Agent(fake)
    http = api(agent)
    assert http("/readyz") == (503, {"ok": False, "reasons": ["no configuration yet"]})
    assert agent.submit(doc(tmp_path), "test")
    assert fake.calls[-3:] == ["add_pipeline xconnects/x1", "add_pipeline xconnects/x2",
                               "add_pipeline routers/r1"]
    code, state = http("/state")
    assert code == 200 and state["in_sync"] and state["document_error"] is None
    assert state["items"]["routers/r1"]["applied"]["routes"] == ["10.0.0.0/8 via 192.168.2.2"]
    assert state["items"]["interfaces/a"]["up"] is True
    assert http("/readyz")[0] == 200 and http("/healthz")[0] == 200
    assert http("/config")[1]["document"]["xconnects"]["x1"] == {"interfaces": ["a", "b"]}
    fake.calls.clear()

    new = doc(tmp_path, routes=("10.0.0.0/8 via 192.168.2.2", "10.5.0.0/16 via 192.168.1.5"),
              x2=False)
    new["interfaces"]["a"]["rx-mode"] = "interrupt"
    assert agent.submit(yaml.safe_dump(new), "test2")
    assert fake.calls == ["remove_pipeline xconnects/x2", "remove_interface interfaces/e",
                          "remove_interface interfaces/f", "set_rx_mode interfaces/a",
                          "set_routes routers/r1"]
    state = http("/state")[1]
    assert state["in_sync"] and "xconnects/x2" not in state["items"]
    assert state["items"]["interfaces/a"]["applied"]["rx-mode"] == "interrupt"
    assert state["generation"] == 2


def test_broken_document_rejected_old_state_kept(tmp_path, api):
    fake = FakeApplier()
    agent = Agent(fake)
    http = api(agent)
    agent.submit(doc(tmp_path), "good")
    calls = list(fake.calls)
    bad = doc(tmp_path, routes=("10.0.0.0/8 via 192.168.2.2", "10.1.0.0/16 via 192.168.2.2",
                                "10.2.0.0/16 via 192.168.2.2", {"prefix": "10.3.0.0/16",
                                                                "via": "192.168.2.300"}))
    del bad["xconnects"]["x2"]                 # would be removed, if the document were good
    assert not agent.submit(bad, "bad")
    assert fake.calls == calls
    state = http("/state")[1]
    assert state["document_error"] == "bad: routers.r1.routes[3].via: not an IPv4 address"
    assert state["in_sync"] and "xconnects/x2" in state["items"] and state["source"] == "good"
    assert http("/readyz")[0] == 200
    assert http("/config")[1]["source"] == "good"
    assert agent.submit(doc(tmp_path), "good again")
    assert http("/state")[1]["document_error"] is None


def test_failed_item_reported_dependent_waits_then_retried(tmp_path, api):
    fake = FakeApplier()
    fake.refuse["add_interface interfaces/e"] = "socket in use"
    agent = Agent(fake)
    http = api(agent)
    d = doc(tmp_path)
    d["agent"]["retry-seconds"] = 0.1
    agent.submit(d, "test")
    state = http("/state")[1]
    assert state["items"]["interfaces/e"]["error"] == "socket in use"
    assert state["items"]["interfaces/e"]["applied"] is None
    assert state["items"]["xconnects/x2"]["error"] == "waiting for interface e"
    assert state["items"]["xconnects/x1"]["error"] is None and not state["in_sync"]
    code, ready = http("/readyz")
    assert code == 503 and "interfaces/e: socket in use" in ready["reasons"]
    # the others were applied all the same
    assert "add_pipeline xconnects/x1" in fake.calls and "add_pipeline routers/r1" in fake.calls
    del fake.refuse["add_interface interfaces/e"]
    stop = threading.Event()
    t = threading.Thread(target=agent.retry_loop, args=(stop,))
    t.start()
    try:
        assert wait_for(lambda: http("/state")[1]["in_sync"], 5)
    finally:
        stop.set()
        t.join()
    assert fake.calls[-2:] == ["add_interface interfaces/e", "add_pipeline xconnects/x2"]
    assert http("/readyz")[0] == 200


def test_healthz_and_readyz_follow_workers_and_links(tmp_path, api):
    fake = FakeApplier()
    agent = Agent(fake)
    http = api(agent)
    d = doc(tmp_path)
    d["agent"]["required"] = ["a", "b"]
    agent.submit(d, "test")
    assert http("/healthz") == (200, {"ok": True, "reasons": []})
    fake.dead = ["xconnects/x1: worker 0 (pid 123) died"]
    assert http("/healthz") == (503, {"ok": False,
                                      "reasons": ["xconnects/x1: worker 0 (pid 123) died"]})
    fake.dead = []
    assert http("/healthz")[0] == 200
    fake.up["e"] = False                       # not required: still ready
    assert http("/readyz")[0] == 200
    fake.up["b"] = False
    assert http("/readyz") == (503, {"ok": False, "reasons": ["interfaces/b: link down"]})
    assert http("/state")[1]["items"]["interfaces/b"]["up"] is False
    fake.up["b"] = True
    assert http("/readyz")[0] == 200


def test_metrics_and_unknown_path(tmp_path, api):
    agent = Agent(FakeApplier())
    http = api(agent)
    assert http("/metrics") == (200, "# TYPE memifx_rx_packets counter\nmemifx_rx_packets 7\n")
    code, body = http("/nope")
    assert code == 404 and "/readyz" in body["error"]


def test_file_source_change_and_sighup(tmp_path):
    fake = FakeApplier()
    agent = Agent(fake)
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(doc(tmp_path)))
    stop = threading.Event()
    src = FileSource(str(path), interval=0.1)
    old = signal.getsignal(signal.SIGHUP)
    try:
        src.start(agent, stop)
        assert agent.generation == 1 and agent.in_sync()
        path.write_text(yaml.safe_dump(doc(tmp_path, x2=False)))
        assert wait_for(lambda: agent.generation == 2, 5)
        assert "xconnects/x2" not in agent.state_view()["items"]
        # same size and mtime: only SIGHUP tells it to look again
        st = os.stat(path)
        text = path.read_text().replace("192.168.2.2", "192.168.2.3")
        path.write_text(text)
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
        src.seen = src.stamp()
        os.kill(os.getpid(), signal.SIGHUP)
        assert wait_for(lambda: agent.generation == 3, 5)
        assert agent.applied.pipelines["r1"].routes == ("10.0.0.0/8 via 192.168.2.3",)
        assert fake.calls[-1] == "set_routes routers/r1"
        path.write_text("interfaces: {a: {socket: [5]}}\n")
        assert wait_for(lambda: agent.document_error, 5)
        assert "interfaces.a.socket" in agent.document_error and agent.generation == 3
        path.unlink()
        os.kill(os.getpid(), signal.SIGHUP)
        assert wait_for(lambda: "No such file" in (agent.document_error or ""), 5)
    finally:
        src.close()
        signal.signal(signal.SIGHUP, old)


def test_cli_status_reads_state(tmp_path, api):
    from click.testing import CliRunner
    from memifx.cli.main import main
    fake = FakeApplier()
    fake.refuse["add_interface interfaces/e"] = "socket in use"
    agent = Agent(fake)
    srv = ApiServer(agent, 0)
    try:
        agent.submit(doc(tmp_path), "test.yaml")
        url = "http://127.0.0.1:%d" % srv.port
        r = CliRunner().invoke(main, ["agent", "status", "--url", url])
        assert r.exit_code == 1, r.output
        assert "source test.yaml, generation 1, NOT in sync" in r.output
        assert "interfaces/e" in r.output and "FAILED" in r.output and "socket in use" in r.output
        assert "xconnects/x2" in r.output and "waiting for interface e" in r.output
        del fake.refuse["add_interface interfaces/e"]
        agent.converge()
        r = CliRunner().invoke(main, ["agent", "status", "--url", url, "--json"])
        assert r.exit_code == 0 and json.loads(r.output)["in_sync"]
    finally:
        srv.close()
    r = CliRunner().invoke(main, ["agent", "status", "--url", url])
    assert r.exit_code == 1 and "Connection refused" in r.output


def test_cli_needs_one_source():
    from click.testing import CliRunner
    from memifx.cli.main import main
    for args in ([], ["--config", "x", "--etcd", "http://e:2379"]):
        r = CliRunner().invoke(main, ["agent"] + args)
        assert r.exit_code == 2 and "one of --config FILE or --etcd URL" in r.output


class RecordingDataplane:
    """The agreed Dataplane API (memifx.runtime), recording its calls."""

    def __init__(self):
        self.calls = []

    def __getattr__(self, name):
        if name not in ("add_interface", "remove_interface", "set_rx_mode", "add_pipeline",
                        "remove_pipeline", "set_routes"):
            raise AttributeError(name)
        return lambda *a, **kw: self.calls.append((name, a, kw))


def test_applier_speaks_the_agreed_dataplane_api(tmp_path):
    from memifx.agent.apply import DataplaneApplier
    from memifx.agent.config import load
    from memifx.agent.plan import plan
    dp = RecordingDataplane()
    applier = DataplaneApplier(dp)
    d = doc(tmp_path, x2=False)
    d["routers"]["r1"]["neighbors"] = ["192.168.2.2,02:00:00:00:00:02"]
    d["routers"]["r1"]["workers"] = 2
    d["routers"]["r1"]["cpus"] = [0, 1]
    d["endpoints"] = {"g1": {"kind": "gen", "interface": "e", "rate": 100, "src-ip": "1.2.3.4"}}
    d["interfaces"]["e"] = {"socket": str(tmp_path / "e.sock"), "id": 3}
    old = load(d)
    for op in plan(None, old):
        applier.execute(op)
    s = str(tmp_path)
    assert dp.calls[0] == ("add_interface", ("a", {"socket": s + "/a.sock", "role": "master",
                                                   "name": "a"}), {})
    assert dp.calls[-3:] == [
        ("add_pipeline", ("x1", "xconnect"), {"interfaces": ["a", "b"]}),
        ("add_pipeline", ("r1", "ip4"), {"interfaces": ["c", "d"],
                                         "routes": ["10.0.0.0/8 via 192.168.2.2"],
                                         "neighbors": ["192.168.2.2,02:00:00:00:00:02"],
                                         "workers": 2, "cpus": [0, 1]}),
        ("add_pipeline", ("g1", "gen"), {"interface": "e", "rate": 100,
                                         "src_ip": "1.2.3.4"})]
    dp.calls.clear()
    d["routers"]["r1"]["routes"].append("10.1.0.0/16 via 192.168.1.9 dev c")
    d["interfaces"]["a"]["rx-mode"] = "adaptive"
    del d["endpoints"]
    for op in plan(old, load(d)):
        applier.execute(op)
    assert dp.calls == [
        ("remove_pipeline", ("g1",), {}),
        ("set_rx_mode", ("a", "adaptive"), {}),
        ("set_routes", ("r1", ["10.0.0.0/8 via 192.168.2.2",
                               "10.1.0.0/16 via 192.168.1.9 dev c"]), {})]


def test_run_agent_serves_until_stopped(tmp_path):
    from memifx.agent.main import run_agent

    class RunningFake(FakeApplier):
        closed = False

        def run(self, stop):
            stop.wait()

        def close(self):
            self.closed = True
    fake = RunningFake()
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(doc(tmp_path)))
    from test_agent_etcd import free_port
    port = free_port()
    stop = threading.Event()
    src = FileSource(str(path), interval=0.1)
    t = threading.Thread(target=run_agent, args=(fake, src, stop, port))
    t.start()
    try:
        assert wait_for(lambda: get(port, "/readyz")[0] == 200 if _listening(port) else False, 10)
        assert get(port, "/state")[1]["store"] == {"kind": "file", "path": str(path)}
    finally:
        stop.set()
        t.join(10)
    assert not t.is_alive() and fake.closed and not _listening(port)
    assert not src.thread.is_alive()


def _listening(port):
    import socket
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_unexpected_applier_exception_is_an_item_error(tmp_path):
    class Broken(FakeApplier):
        def execute(self, op):
            if op.key == "routers/r1":
                raise TypeError("add_pipeline() got an unexpected keyword argument 'x'")
            super().execute(op)
    agent = Agent(Broken())
    assert agent.submit(doc(tmp_path), "test")
    state = agent.state_view()
    assert state["items"]["routers/r1"]["error"] == (
        "internal error: TypeError: add_pipeline() got an unexpected keyword argument 'x'")
    assert state["items"]["xconnects/x1"]["in_sync"] and not state["in_sync"]


def test_applier_metrics_are_this_process_stats_file(tmp_path, monkeypatch):
    """/metrics of a real agent: the Prometheus text of its own stats file."""
    import memifx
    from memifx import stats
    from memifx.agent.apply import DataplaneApplier
    monkeypatch.setenv("MEMIFX_STATS_DIR", str(tmp_path / "stats"))
    os.makedirs(str(tmp_path / "stats"))
    applier = DataplaneApplier(RecordingDataplane())
    assert applier.metrics() == ""
    sf = stats.StatsFile()
    intf = memifx.Interface(socket=str(tmp_path / "m.sock"), role="master", name="agentm")
    try:
        sf.track(intf.connect())
        text = applier.metrics()
        assert 'interface="agentm"' in text and "# TYPE memifx_" in text
    finally:
        intf.close()
        sf.close()
