"""gen and sink as pipelines of the runtime: one Dataplane holds a gen on one
end of a link and a sink on the other; every frame the gen sends is counted
by the sink, in this process and with the sink on a worker.  Their options
are checked like any management call's.

CPU budget: interrupt mode, a rate-limited gen; at most one worker."""
import os

import pytest

from memifx.runtime import DataplaneError
from conftest import wait_for
from test_runtime import master, running  # noqa: F401  (running: the fixture)

COUNT = 3000
RATE = 20000


@pytest.fixture
def sockdir(tmp_path):
    return str(tmp_path)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("workers", [0, 1], ids=["in-process", "sink-on-worker"])
def test_gen_pipeline_to_sink_pipeline_exact(running, sockdir, workers):  # noqa: F811
    dp = running.dp
    path = os.path.join(sockdir, "g.sock")
    # pipelines first, then the links (as the commands do): a pipeline on
    # workers that takes a link already up restarts it, losing what is in it
    dp.add_interface("g", master(path), connect=False)
    dp.add_interface("s", {"socket": path, "role": "slave", "rx-mode": "interrupt"},
                     connect=False)
    sink = dp.add_pipeline("s1", "sink", interface="s", workers=workers, verify="stamp")
    gen = dp.add_pipeline("g1", "gen", interface="g", count=COUNT, rate=RATE, flows=4,
                          size=64, dst_mac="02:00:00:00:00:02", dst_ip="198.19.0.9")
    dp.connect("g")
    dp.connect("s")
    assert wait_for(gen.sending_done, 20)
    assert gen.sent() == COUNT

    def received():
        sink.refresh(0.2)           # workers: a report now
        return dp.state()["pipelines"]["s1"]["counters"]["receive"]["s"]
    assert wait_for(lambda: received()["received"] == COUNT, 10), received()
    c = received()
    assert (c["lost"], c["corrupt"], c["reordered"], c["duplicated"]) == (0, 0, 0, 0), c
    state = dp.state()["pipelines"]
    assert state["g1"]["graph"] == ["gen", "interface-output"]
    assert state["s1"]["graph"] == ["memif-input", "sink"]
    assert state["g1"]["counters"]["sent"]["packets"] == COUNT
    result, arrived = sink.receive_result()
    assert (result["received"], arrived) == (COUNT, COUNT)
    running.stop()


@pytest.mark.timeout(30)
def test_gen_and_sink_options_are_checked(running, sockdir):  # noqa: F811
    dp = running.dp
    dp.add_interface("a", master(os.path.join(sockdir, "a.sock")))
    dp.add_interface("b", master(os.path.join(sockdir, "b.sock")))
    cases = [
        (dict(kind="gen", interfaces=["a", "b"]), "a gen pipeline takes 1 interface, not 2"),
        (dict(kind="gen", interface="a", receive="a"), "interface given twice: a, a"),
        (dict(kind="gen", interface="a", receive="zz"), "no interface zz"),
        (dict(kind="gen", interface="a", routes=[]), "gen takes no routes"),
        (dict(kind="sink", interface="a", rate=5), "sink takes no rate"),
        (dict(kind="sink", interface="a", verify="most"),
         "verify 'most': full, stamp, seq, count"),
        (dict(kind="gen", interface="a", receive="b", payload="fixed"),
         "payload fixed sends no stamps: what comes back on the receive interface can only "
         "be counted (verify count)"),
        (dict(kind="gen", interface="a", receive="b", payload="fixed", verify="seq"),
         "can only be counted"),
        (dict(kind="gen", interface="a", size=20), "--size"),
        (dict(kind="gen", interface="a", flows=0), "--flows"),
        (dict(kind="gen", interface="a", flows=3, dst_ip="255.255.255.250", dst_step=3),
         "--dst-step"),
        (dict(kind="gen", interface="a", dst_mac="02:00"), "dst_mac '02:00'"),
        (dict(kind="gen", interface="a", src_ip="10.0.0.300"), "src_ip '10.0.0.300'"),
        (dict(kind="gen", interface="a", capture="x.pcap", workers=1),
         "capturing run in the main process only"),
        (dict(kind="gen", interface="a", replay=os.path.join(sockdir, "none.pcap")), "--pcap"),
    ]
    for params, message in cases:
        kind = params.pop("kind")
        with pytest.raises(DataplaneError) as e:
            dp.add_pipeline("p", kind, **params)
        assert message in str(e.value.reason) or message == e.value.option, (params, e.value)
    assert not dp.pipelines
    # a gen that checks a second interface takes both
    dp.add_pipeline("g", "gen", interface="a", receive="b", rate=10)
    assert dp.state()["interfaces"]["b"]["pipeline"] == "g"
    with pytest.raises(DataplaneError, match="interface b is used by pipeline g"):
        dp.add_pipeline("s", "sink", interface="b")
    dp.remove_pipeline("g")
    dp.add_pipeline("s", "sink", interface="b")


@pytest.mark.timeout(30)
def test_gen_replays_a_capture_it_is_handed(running, sockdir):  # noqa: F811
    """``replay`` may be a memifx.pcap.Capture already read (the command
    reads --pcap once): it is replayed as it is, even an empty one, never
    taken for "no replay"."""
    from array import array
    from memifx import pcap
    dp = running.dp
    dp.add_interface("a", master(os.path.join(sockdir, "a.sock")))
    empty = pcap.Capture(pcap.LINKTYPE_ETHERNET, bytearray(), array("I"), array("Q"))
    one = pcap.Capture(pcap.LINKTYPE_ETHERNET, bytearray(60), array("I", [60]), array("Q", [0]))
    for cap in (empty, one):
        p = dp.add_pipeline("r", "gen", interface="a", replay=cap)
        assert p.replay and p.sizes == []
        assert p.node.sender.source.cap is cap
        dp.remove_pipeline("r")
