"""The agent's document schema (field paths in errors) and its planner
(which operations, in which order, for an old and a new document)."""
import copy

import pytest

from memifx.agent.config import ConfigError, load
from memifx.agent.plan import plan

pytestmark = pytest.mark.timeout(30)


def base(tmp_path):
    s = str(tmp_path)
    return {
        "agent": {"http-port": 0, "required": ["a", "b"]},
        "interfaces": {
            "a": {"socket": s + "/a.sock", "id": 0, "role": "master"},
            "b": {"socket": s + "/b.sock", "id": 0, "role": "master", "rx-mode": "interrupt"},
            "c": {"socket": s + "/c.sock", "role": "master", "ip": "192.168.1.1/24"},
            "d": {"socket": s + "/d.sock", "role": "master", "ip": "192.168.2.1/24"},
            "e": {"socket": s + "/e.sock", "id": 1, "role": "master"},
            "f": {"socket": s + "/e.sock", "id": 2, "role": "master"},
        },
        "xconnects": {"x1": {"interfaces": ["a", "b"]}, "x2": {"interfaces": ["e", "f"]}},
        "routers": {"r1": {
            "interfaces": ["c", "d"],
            "routes": ["10.0.0.0/8 via 192.168.2.2 dev d",
                       {"prefix": "10.1.0.0/16", "via": "192.168.2.3"}],
            "neighbors": ["192.168.2.2,02:00:00:00:00:02",
                          {"ip": "192.168.1.9", "mac": "02:00:00:00:00:09", "dev": "c"}],
            "workers": 0}},
    }


def rejected(doc, path_and_reason):
    with pytest.raises(ConfigError) as e:
        load(doc)
    assert str(e.value).startswith(path_and_reason), str(e.value)
    return e.value


def test_good_document_normalised(tmp_path):
    cfg = load(base(tmp_path))
    assert sorted(cfg.interfaces) == ["a", "b", "c", "d", "e", "f"]
    assert cfg.interfaces["a"]["id"] == "0"             # spec values as the CLI reads them
    r1 = cfg.pipelines["r1"]
    assert (r1.kind, r1.interfaces) == ("ip4", ("c", "d"))
    assert r1.routes == ("10.0.0.0/8 via 192.168.2.2 dev d", "10.1.0.0/16 via 192.168.2.3")
    assert r1.params["neighbors"] == ["192.168.2.2,02:00:00:00:00:02",
                                      "192.168.1.9,02:00:00:00:00:09,dev=c"]
    assert cfg.required_interfaces() == ["a", "b"]
    assert cfg.settings.http_port == 0


def test_yaml_and_json_text(tmp_path):
    import json
    import yaml
    doc = base(tmp_path)
    assert load(json.dumps(doc)).interfaces == load(yaml.safe_dump(doc)).interfaces
    rejected("interfaces: [a\n", "document line 2 column 1: not valid YAML/JSON")
    rejected("- 1\n", "expected a mapping, got a list")


@pytest.mark.parametrize("change, error", [
    (lambda d: d["routers"]["r1"]["routes"].append({"prefix": "10.2.0.0/16", "via": "10.999.0.1"}),
     "routers.r1.routes[2].via: not an IPv4 address"),
    (lambda d: d["routers"]["r1"]["routes"].append("10.3.0.0/16 via 1.2.3"),
     "routers.r1.routes[2].via: not an IPv4 address"),
    (lambda d: d["routers"]["r1"]["routes"].append({"prefix": "10.3.0.0/33", "dev": "c"}),
     "routers.r1.routes[2].prefix: not an IPv4 prefix"),
    (lambda d: d["routers"]["r1"]["routes"].append({"prefix": "10.3.0.0/16", "dev": "a"}),
     "routers.r1.routes[2].dev: a is not one of this router's interfaces"),
    (lambda d: d["routers"]["r1"]["neighbors"].append({"ip": "1.2.3.4", "mac": "zz"}),
     "routers.r1.neighbors[2].mac: not a MAC address"),
    (lambda d: d["interfaces"]["a"].update({"ring-size": 1000}),
     "interfaces.a.ring-size: ring-size=1000: must be a power of two"),
    (lambda d: d["interfaces"]["a"].update({"rx-mode": "sometimes"}),
     "interfaces.a.rx-mode: rx-mode=sometimes: allowed values are"),
    (lambda d: d["interfaces"]["a"].update({"colour": "red"}),
     "interfaces.a.colour: unknown key"),
    (lambda d: d["interfaces"]["a"].update({"name": "z"}),
     "interfaces.a.name: the interface's name is its key"),
    (lambda d: d["interfaces"]["a"].pop("socket"), "interfaces.a.socket: required"),
    (lambda d: d["interfaces"]["a"].update({"perm": 0o660}), "interfaces.a.perm: write it as text"),
    (lambda d: d["interfaces"]["a"].update({"id": True}), "interfaces.a.id: expected text"),
    (lambda d: d["interfaces"]["f"].update({"id": 1}), "interfaces.f.id: "),
    (lambda d: d["xconnects"]["x1"].update({"interfaces": ["a"]}),
     "xconnects.x1.interfaces: an xconnect joins exactly two"),
    (lambda d: d["xconnects"]["x1"].update({"interfaces": ["a", "zz"]}),
     "xconnects.x1.interfaces[1]: no interface named zz"),
    (lambda d: d["xconnects"]["x2"].update({"interfaces": ["e", "a"]}),
     "xconnects.x2.interfaces[1]: interface a is already used by xconnects.x1"),
    (lambda d: d["xconnects"]["x1"].update({"workers": -1}),
     "xconnects.x1.workers: -1 is outside 0..64"),
    (lambda d: d["xconnects"]["x1"].update({"cpus": [0, "x"]}),
     "xconnects.x1.cpus[1]: expected an integer"),
    (lambda d: d.setdefault("endpoints", {}).update({"x1": {"kind": "echo", "interface": "e"}}),
     "endpoints.x1: name already used by xconnects.x1"),
    (lambda d: d.setdefault("endpoints", {}).update({"g": {"kind": "flood", "interface": "e"}}),
     "endpoints.g.kind: allowed values are echo|gen|sink"),
    (lambda d: d.setdefault("endpoints", {}).update({"g": {"kind": "gen", "interface": "a",
                                                            "rate": 5}}),
     "endpoints.g.interface: interface a is already used by xconnects.x1"),
    (lambda d: d.setdefault("endpoints", {}).update({"g": {"kind": "sink", "interface": "a",
                                                            "rate": 5}}),
     "endpoints.g.rate: unknown key"),
    (lambda d: d.setdefault("endpoints", {}).update({"g": {"kind": "sink", "interface": "e",
                                                            "zero-copy": "yes"}}),
     "endpoints.g.zero-copy: expected true or false, got text"),
    (lambda d: d.setdefault("endpoints", {}).update({"g": {"kind": "gen", "interface": "e",
                                                            "verify": "most"}}),
     "endpoints.g.verify: allowed values are full|stamp|seq|count"),
    (lambda d: d["routers"]["r1"]["interfaces"].append("a"),
     "routers.r1.interfaces[2]: interface a has no ip"),
    (lambda d: d["agent"].update({"required": ["q"]}), "agent.required[0]: no interface named q"),
    (lambda d: d["agent"].update({"http-port": 70000}), "agent.http-port: 70000 is outside"),
    (lambda d: d.update({"bridges": {}}), "bridges: unknown section"),
    (lambda d: d["interfaces"].update({"bad name": {}}), "interfaces.bad name: bad name"),
])
def test_bad_field_named_by_path(tmp_path, change, error):
    doc = base(tmp_path)
    change(doc)
    rejected(doc, error)


def test_endpoint_zero_copy_reaches_the_pipeline(tmp_path):
    doc = base(tmp_path)
    del doc["xconnects"]["x2"]
    doc["endpoints"] = {"g": {"kind": "gen", "interface": "e", "zero-copy": True},
                        "s": {"kind": "sink", "interface": "f", "zero-copy": False}}
    cfg = load(doc)
    assert cfg.pipelines["g"].params["zero_copy"] is True
    assert cfg.pipelines["s"].params["zero_copy"] is False


def test_endpoint_verify_levels(tmp_path):
    """Every level and payload reaches the pipelines (a gen of fixed frames
    counts what comes back)."""
    doc = base(tmp_path)
    del doc["xconnects"]["x2"]
    doc["endpoints"] = {"g": {"kind": "gen", "interface": "e", "verify": "count",
                              "payload": "fixed"},
                        "s": {"kind": "sink", "interface": "f", "verify": "count"}}
    cfg = load(doc)
    assert cfg.pipelines["g"].params["verify"] == "count"
    assert cfg.pipelines["g"].params["payload"] == "fixed"
    assert cfg.pipelines["s"].params["verify"] == "count"


def test_owner_needs_master_file_socket(tmp_path):
    doc = base(tmp_path)
    doc["interfaces"]["a"].update({"perm": "0660"})
    load(doc)
    doc["interfaces"]["a"].update({"role": "slave"})
    rejected(doc, "interfaces.a: owner=/perm= apply to a master's filesystem socket")


# ------------------------------------------------------------------ planner

def ops(old, new):
    return [str(op) for op in plan(old and load(old), load(new))]


def test_plan_from_nothing_interfaces_first(tmp_path):
    doc = base(tmp_path)
    assert ops(None, doc) == [
        "add_interface interfaces/a", "add_interface interfaces/b", "add_interface interfaces/c",
        "add_interface interfaces/d", "add_interface interfaces/e", "add_interface interfaces/f",
        "add_pipeline xconnects/x1", "add_pipeline xconnects/x2", "add_pipeline routers/r1"]


def test_plan_same_document_is_empty(tmp_path):
    assert ops(base(tmp_path), base(tmp_path)) == []


def test_plan_route_added_touches_only_the_router(tmp_path):
    old, new = base(tmp_path), base(tmp_path)
    new["routers"]["r1"]["routes"].append("10.9.0.0/16 via 192.168.1.7")
    steps = plan(load(old), load(new))
    assert [str(s) for s in steps] == ["set_routes routers/r1"]
    assert steps[0].item.routes[-1] == "10.9.0.0/16 via 192.168.1.7"


def test_plan_rx_mode_change_is_set_rx_mode(tmp_path):
    old, new = base(tmp_path), base(tmp_path)
    new["interfaces"]["b"]["rx-mode"] = "polling"
    new["interfaces"]["a"]["rx-mode"] = "adaptive"
    assert ops(old, new) == ["set_rx_mode interfaces/a", "set_rx_mode interfaces/b"]


def test_plan_remove_xconnect_and_its_interfaces(tmp_path):
    old, new = base(tmp_path), base(tmp_path)
    del new["xconnects"]["x2"]
    del new["interfaces"]["e"], new["interfaces"]["f"]
    assert ops(old, new) == ["remove_pipeline xconnects/x2", "remove_interface interfaces/e",
                             "remove_interface interfaces/f"]


def test_plan_changed_interface_rebuilds_its_pipeline_only(tmp_path):
    old, new = base(tmp_path), base(tmp_path)
    new["interfaces"]["e"]["ring-size"] = 256
    assert ops(old, new) == ["remove_pipeline xconnects/x2", "remove_interface interfaces/e",
                             "add_interface interfaces/e", "add_pipeline xconnects/x2"]


def test_plan_router_neighbors_change_rebuilds_router(tmp_path):
    old, new = base(tmp_path), base(tmp_path)
    new["routers"]["r1"]["neighbors"].pop()
    new["routers"]["r1"]["routes"].pop()
    assert ops(old, new) == ["remove_pipeline routers/r1", "add_pipeline routers/r1"]


def test_plan_pipeline_moves_to_new_interfaces(tmp_path):
    old, new = base(tmp_path), base(tmp_path)
    new["interfaces"]["g"] = {"socket": str(tmp_path / "g.sock"), "role": "master"}
    new["xconnects"]["x2"]["interfaces"] = ["e", "g"]
    assert ops(old, new) == ["remove_pipeline xconnects/x2", "add_interface interfaces/g",
                             "add_pipeline xconnects/x2"]


def test_plan_is_deterministic_and_converges(tmp_path):
    """Applying a plan's operations to the old config in order gives the new
    one (the planner's contract with the agent)."""
    from memifx.agent.config import Config
    old, new = base(tmp_path), copy.deepcopy(base(tmp_path))
    new["interfaces"]["a"]["rx-mode"] = "polling"
    new["interfaces"]["e"]["ring-size"] = 512
    del new["xconnects"]["x1"]
    new["endpoints"] = {"echo1": {"kind": "echo", "interface": "a"}}
    cur, want = load(old), load(new)
    state = Config(interfaces=dict(cur.interfaces), pipelines=dict(cur.pipelines))
    for op in plan(cur, want):
        if op.action == "remove_pipeline":
            del state.pipelines[op.name]
        elif op.action == "remove_interface":
            assert all(op.name not in p.interfaces for p in state.pipelines.values())
            del state.interfaces[op.name]
        elif op.action in ("add_interface", "set_rx_mode"):
            state.interfaces[op.name] = op.item
        else:
            assert all(i in state.interfaces for i in op.item.interfaces)
            state.pipelines[op.name] = op.item
    assert state.interfaces == want.interfaces and state.pipelines == want.pipelines
    assert plan(state, want) == []


def test_the_documented_example_is_valid(tmp_path):
    """config.py's docstring example is a document the agent accepts."""
    import textwrap
    from memifx.agent import config
    text = config.__doc__.split("every one optional::\n", 1)[1].split("\n\n", 1)[0]
    data = __import__("yaml").safe_load(textwrap.dedent(text))
    for name, spec in data["interfaces"].items():
        spec["socket"] = str(tmp_path / ("%s.sock" % name))
    cfg = load(data)
    assert sorted(cfg.pipelines) == ["e1", "g1", "r1", "s1", "x1"]
