"""The agent's gen and sink endpoints are runtime pipelines: frames a gen
endpoint sends reach an external ``memifx sink`` exactly, and an external
``memifx gen``'s frames are counted by a sink endpoint (its counters in the
agent's /metrics).

CPU budget (2 CPUs): interrupt mode everywhere, rate-limited gens, one
transfer at a time."""
import re
import subprocess
import sys

import pytest
import yaml

from conftest import wait_for
from test_agent_e2e import AgentProc, finish
from test_agent_etcd import free_port

MEMIFX = [sys.executable, "-m", "memifx.cli.main"]
pytestmark = pytest.mark.timeout(120)
COUNT = 2000


def metric(agent, name, node):
    """The value of ``name`` for node ``node`` in the agent's /metrics (0 if absent)."""
    import urllib.request
    with urllib.request.urlopen(agent.url + "/metrics", timeout=3) as r:
        text = r.read().decode()
    for line in text.splitlines():
        m = re.match(r'%s\{([^}]*)\} (\S+)$' % name, line)
        if m and 'node="%s"' % node in m.group(1):
            return float(m.group(2))
    return 0


def test_agent_gen_and_sink_endpoints(procs, tmp_path):
    d, port = str(tmp_path), free_port()
    irq = {"role": "master", "rx-mode": "interrupt"}
    doc = {"agent": {"http-port": port, "retry-seconds": 0.5},
           "interfaces": {n: dict(irq, socket="%s/%s.sock" % (d, n)) for n in "gs"},
           "endpoints": {"g1": {"kind": "gen", "interface": "g", "rate": 20000,
                                "count": COUNT, "size": 64, "flows": 4, "verify": "stamp"},
                         "s1": {"kind": "sink", "interface": "s", "verify": "stamp"}}}
    path = tmp_path / "agent.yaml"
    with open(path, "w") as f:
        yaml.safe_dump(doc, f)
    agent = AgentProc(procs, ["--config", str(path)], port, path)
    assert wait_for(lambda: agent.get("/state")[1]["in_sync"], 20)
    state = agent.get("/state")[1]
    assert state["items"]["endpoints/g1"]["error"] is None
    assert state["items"]["endpoints/s1"]["error"] is None

    # the agent's gen -> an external sink: every frame, in order, none lost
    sink = subprocess.Popen(MEMIFX + ["sink", "socket=%s/g.sock,role=slave,rx-mode=interrupt" % d,
                                      "--count", str(COUNT), "--duration", "30",
                                      "--verify", "stamp", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    r = finish(sink)
    assert (r["packets"], r["received"], r["lost"], r["corrupt"]) == (COUNT, COUNT, 0, 0), r
    assert wait_for(lambda: metric(agent, "memifx_node_packets_total", "gen") == COUNT, 10)

    # an external gen -> the agent's sink: counted there, none lost
    gen = subprocess.Popen(MEMIFX + ["gen", "socket=%s/s.sock,role=slave,rx-mode=interrupt" % d,
                                     "--count", str(COUNT), "--rate", "20000",
                                     "--verify", "stamp", "--json"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           start_new_session=True)
    assert finish(gen)["packets"] == COUNT
    assert wait_for(lambda: metric(agent, "memifx_node_received_total", "sink") == COUNT, 10)
    assert metric(agent, "memifx_node_lost_total", "sink") == 0
    assert metric(agent, "memifx_node_corrupt_total", "sink") == 0
