"""The memifx command: spec parsing, errors with exit codes, echo and demo."""
import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

import memifx
from memifx.cli.main import main
from memifx.cli.spec import parse_spec
from conftest import wait_for
from test_link import exchange, frame

pytestmark = pytest.mark.timeout(60)
MEMIFX = [sys.executable, "-m", "memifx.cli.main"]


def test_spec_parsing():
    s = parse_spec("socket=@x,id=3,role=server,secret=abc,mode=ip,queues=2,tx-queues=3,"
                   "ring-size=256,buffer-size=512,rx-mode=interrupt,name=a,"
                   "mac=02:00:00:00:00:01,ip=10.0.0.1/24")
    assert (s.socket, s.id, s.role, s.secret, s.mode) == ("@x", 3, "master", "abc", "ip")
    assert (s.rx_queues, s.tx_queues, s.ring_size, s.buffer_size) == (2, 3, 256, 512)
    assert s.rx_mode == "interrupt" and s.mac_bytes() == b"\x02\0\0\0\0\x01"
    assert str(s.ip) == "10.0.0.1/24"
    assert parse_spec("").socket == "/run/memif.sock"
    derived = parse_spec("socket=@y").mac_bytes()
    assert derived[0] & 0x02 and not derived[0] & 0x01       # locally administered unicast


@pytest.mark.parametrize("spec, words", [
    ("role=boss", ["role", "master"]),
    ("mode=atm", ["mode", "ethernet"]),
    ("ring-size=1000", ["ring-size", "power of two"]),
    ("queues=0", ["queues", "1..255"]),
    ("buffer-size=64", ["buffer-size", "128..65535"]),
    ("colour=red", ["unknown key", "socket"]),
    ("socket=/nonexistent-dir/x.sock", ["socket", "does not exist"]),
    ("secret=" + "x" * 24, ["secret", "23"]),
    ("mac=zz", ["mac"]),
    ("ip=300.1.1.1/8", ["ip"]),
    ("id", ["key=value"]),
])
def test_bad_spec_exit_code_2(spec, words):
    r = CliRunner().invoke(main, ["echo", spec])
    assert r.exit_code == 2
    for w in words:
        assert w in r.output


def test_version_and_help():
    r = CliRunner().invoke(main, ["--version"])
    assert r.exit_code == 0 and memifx.__version__ in r.output
    for args in (["-h"], ["echo", "-h"], ["demo", "-h"]):
        assert CliRunner().invoke(main, args).exit_code == 0


def test_echo_command_and_role_clash(procs, sock):
    p = procs.start(MEMIFX + ["echo", "socket=%s,role=master,rx-mode=interrupt" % sock,
                              "--duration", "30", "--json"])
    assert wait_for(lambda: os.path.exists(sock), 10)
    # a second master on the same socket: clear error, non-zero exit
    r = subprocess.run(MEMIFX + ["echo", "socket=%s,role=master" % sock, "--duration", "1"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and "in use" in r.stderr
    s = memifx.Interface(socket=sock, name="t").connect()
    try:
        assert s.wait_connected(5)
        frames = [frame(i, 64 + i) for i in range(300)]
        assert exchange(s, frames) == frames
    finally:
        s.close()
    p.terminate()
    out, _ = p.communicate(timeout=10)
    result = json.loads(out.strip().splitlines()[-1])
    stats = list(result["interfaces"].values())[0]
    assert stats["rx"][0]["packets"] == 300 and stats["tx"][0]["packets"] == 300
    assert not os.path.exists(sock)


def test_demo_moves_traffic():
    r = subprocess.run(MEMIFX + ["demo", "--duration", "1", "--json"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert result["packets"] > 10000 and result["corrupt"] == 0 and result["lost"] == 0
