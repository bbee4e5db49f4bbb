"""The agent as a process driving the real data plane: traffic through what
it applied, changes applied live with 0 lost on the untouched pipeline, a
broken document rejected while traffic goes on, health following a killed
worker.

CPU budget (2 CPUs): the agent's pipelines sleep in interrupt mode; one gen
at a time, rate-limited."""
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request

import psutil
import pytest
import yaml

from conftest import wait_for
from test_agent_etcd import free_port

MEMIFX = [sys.executable, "-m", "memifx.cli.main"]
pytestmark = pytest.mark.timeout(180)
MAC_C = "02:00:00:00:01:01"


def document(d, port, **changes):
    irq = {"role": "master", "rx-mode": "interrupt"}
    doc = {"agent": {"http-port": port, "retry-seconds": 0.5},
           "interfaces": {n: dict(irq, socket="%s/%s.sock" % (d, n)) for n in "abef"},
           "xconnects": {"x1": {"interfaces": ["a", "b"]}, "x2": {"interfaces": ["e", "f"]}},
           "routers": {"r1": {"interfaces": ["c", "d"],
                              "routes": ["198.19.0.0/16 via 10.0.2.2"],
                              "neighbors": ["10.0.2.2,02:00:00:00:00:22,dev=d"]}}}
    doc["interfaces"]["c"] = dict(irq, socket="%s/c.sock" % d, ip="10.0.1.1/24", mac=MAC_C)
    doc["interfaces"]["d"] = dict(irq, socket="%s/d.sock" % d, ip="10.0.2.1/24")
    for change in changes.values():
        change(doc)
    return doc


class AgentProc:
    """``memifx agent`` with these arguments, its API on ``port``; ``path``:
    its config file (for ``write``)."""

    def __init__(self, procs, args, port, path=None):
        self.path, self.url = path, "http://127.0.0.1:%d" % port
        self.proc = procs.start(MEMIFX + ["agent"] + args)
        assert wait_for(lambda: self.get("/healthz")[0] == 200, 30)

    def get(self, p):
        try:
            with urllib.request.urlopen(self.url + p, timeout=3) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())
        except OSError:
            return None, None

    def write(self, doc):
        tmp = str(self.path) + ".new"
        with open(tmp, "w") as f:
            yaml.safe_dump(doc, f)
        os.replace(tmp, self.path)


def gen(tx, rx, count, rate, *extra, wait=True):
    p = subprocess.Popen(MEMIFX + ["gen", "socket=%s,rx-mode=interrupt" % tx,
                                   "--receive", "socket=%s,rx-mode=interrupt" % rx,
                                   "--count", str(count), "--rate", str(rate),
                                   "--verify", "stamp", "--json"] + list(extra),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    return finish(p) if wait else p


def finish(p, timeout=60):
    out, err = p.communicate(timeout=timeout)
    assert p.returncode == 0, out + err
    return json.loads(out.strip().splitlines()[-1])


def exact(r, count):
    rx = r["receive"]
    assert (r["packets"], rx["received"], rx["lost"], rx["corrupt"]) == (count, count, 0, 0), rx


def test_agent_from_file_live_changes(procs, tmp_path):
    d, port = str(tmp_path), free_port()
    path = tmp_path / "agent.yaml"
    with open(path, "w") as f:
        yaml.safe_dump(document(d, port), f)
    agent = AgentProc(procs, ["--config", str(path)], port, path)
    assert wait_for(lambda: agent.get("/state")[1]["in_sync"], 20)
    exact(gen(d + "/a.sock", d + "/b.sock", 2000, 20000), 2000)
    exact(gen(d + "/e.sock", d + "/f.sock", 2000, 20000), 2000)
    exact(gen(d + "/c.sock", d + "/d.sock", 2000, 20000, "--dst-mac", MAC_C,
              "--src-ip", "10.0.1.2", "--dst-ip", "198.19.0.1"), 2000)
    assert agent.get("/readyz")[0] == 503           # gen left: links down
    # traffic on x1 while the file changes: a route added, x2 removed, c's rx mode
    count = 30000
    running = gen(d + "/a.sock", d + "/b.sock", count, 10000, wait=False)
    time.sleep(0.5)

    def change(doc):
        doc["routers"]["r1"]["routes"].append("198.20.0.0/16 via 10.0.2.2")
        del doc["xconnects"]["x2"]
        doc["interfaces"]["c"]["rx-mode"] = "polling"
    agent.write(document(d, port, change=change))
    assert wait_for(lambda: agent.get("/state")[1]["generation"] == 2, 10)
    state = agent.get("/state")[1]
    assert state["in_sync"] and "xconnects/x2" not in state["items"]
    assert state["items"]["routers/r1"]["applied"]["routes"][-1] == "198.20.0.0/16 via 10.0.2.2"
    assert state["items"]["interfaces/c"]["applied"]["rx-mode"] == "polling"
    # a broken document: rejected with its path, x1 still carrying the same run
    bad = document(d, port, change=change)
    bad["routers"]["r1"]["routes"].append({"prefix": "10.9.0.0/16", "via": "10.0.2.999"})
    agent.write(bad)
    assert wait_for(lambda: agent.get("/state")[1]["document_error"], 10)
    state = agent.get("/state")[1]
    assert "routers.r1.routes[2].via: not an IPv4 address" in state["document_error"]
    assert state["generation"] == 2 and state["in_sync"]
    exact(finish(running), count)                    # 0 lost on the untouched pipeline
    exact(gen(d + "/c.sock", d + "/d.sock", 1000, 20000, "--dst-mac", MAC_C,
              "--src-ip", "10.0.1.2", "--dst-ip", "198.20.0.1"), 1000)


def test_agent_health_follows_workers_and_required_links(procs, tmp_path):
    d, port = str(tmp_path), free_port()
    path = tmp_path / "agent.yaml"

    def shape(doc):
        doc["xconnects"] = {"x1": {"interfaces": ["a", "b"], "workers": 1}}
        doc["routers"] = {}
        for n in "cdef":
            del doc["interfaces"][n]
        doc["agent"]["required"] = ["a", "b"]
    with open(path, "w") as f:
        yaml.safe_dump(document(d, port, shape=shape), f)
    agent = AgentProc(procs, ["--config", str(path)], port, path)
    assert agent.get("/readyz")[0] == 503            # a and b down
    # two seconds of traffic: the window in which ready must turn 200
    running = gen(d + "/a.sock", d + "/b.sock", 10000, 5000, wait=False)
    assert wait_for(lambda: agent.get("/readyz")[0] == 200, 10)
    exact(finish(running), 10000)
    assert wait_for(lambda: agent.get("/readyz")[0] == 503, 10)   # gen gone: links down
    workers = psutil.Process(agent.proc.pid).children(recursive=True)
    assert workers
    workers[0].kill()
    assert wait_for(lambda: agent.get("/healthz")[0] == 503, 10)
    assert agent.get("/healthz")[1]["reasons"]
    # the runtime restarts a dead worker; health follows
    assert wait_for(lambda: agent.get("/healthz")[0] == 200, 20)


def test_agent_from_etcd_forwarding_survives_etcd_restart(procs, tmp_path):
    from test_agent_etcd import EtcdServer, client
    from memifx.agent.store import put_document
    server = EtcdServer(tmp_path)
    server.start()
    try:
        d, port = str(tmp_path), free_port()
        prefix = "/memifx/node1/"
        put_document(client(server), prefix, document(d, port))
        agent = AgentProc(procs, ["--etcd", server.url, "--prefix", prefix], port)
        assert wait_for(lambda: (agent.get("/state")[1] or {}).get("in_sync"), 30)
        count = 40000
        running = gen(d + "/a.sock", d + "/b.sock", count, 10000, wait=False)
        time.sleep(0.5)
        server.kill()
        assert wait_for(lambda: not agent.get("/state")[1]["store"]["connected"], 10)
        time.sleep(1)
        server.start()
        c = client(server)
        c.delete(prefix + "xconnects/x2")
        assert wait_for(lambda: "xconnects/x2" not in agent.get("/state")[1]["items"], 20)
        state = agent.get("/state")[1]
        assert state["store"]["connected"] and state["in_sync"]
        exact(finish(running), count)                # forwarding went on throughout
    finally:
        server.kill()
