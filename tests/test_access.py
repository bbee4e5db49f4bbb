"""Access control and hygiene of peer input (memifx/access.py, control.py).

Who may connect (SO_PEERCRED against allow_uid / allow_gid, both roles), the
socket file's owner and mode, refusals that tell a stranger nothing and change
nothing but a counter, peer strings made printable before they are stored,
logged or shown, received fds close-on-exec, and a socket path that holds
anything but a stale socket left alone.

The tests run as root; a stranger is a child process that dropped to another
uid/gid with setpriv before it connected (abstract sockets: no file mode
gets in the way, the allow lists are the only gate).  Every test ends with a
good peer served.
"""
import fcntl
import json
import logging
import os
import socket
import stat
import subprocess
import sys

import pytest

import memifx
from memifx import stats, wire
from memifx.cli import show
from conftest import ENDPOINT, read_until, serves_good_slave, wait_for
from rogue import RogueMaster, RogueSlave

pytestmark = pytest.mark.timeout(60)

NOBODY = 65534
SECRET = b"s3cret"
NOT_ALLOWED = "peer not allowed"
ME = {"pid": os.getpid(), "uid": 0, "gid": 0, "groups": os.getgroups()}
RING_SIZE = 64

# A peer in a child process: connects, optionally sends INIT, prints every
# message it gets until the master closes, as one JSON line.
PEER = r"""
import json, socket, sys
from memifx import wire
path, init = sys.argv[1], json.loads(sys.argv[2])
s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
s.settimeout(5)
try:
    s.connect("\0" + path[1:] if path.startswith("@") else path)
except OSError as e:
    print(json.dumps({"connect": e.errno}), flush=True)
    sys.exit(0)
got = []
while True:
    data = s.recv(wire.MSG_SIZE)
    if not data:
        break
    m = wire.decode(data)
    got.append([type(m).__name__, getattr(m, "reason", None)])
    if isinstance(m, wire.Hello) and init is not None:
        init["secret"] = init.get("secret", "").encode()
        s.send(wire.encode(wire.Init(version=wire.VERSION, mode=0, name="stranger", **init)))
print(json.dumps({"got": got}), flush=True)
"""


def as_user(uid, gid=None, groups=()):
    """setpriv prefix: the command runs as uid/gid with these supplementary
    groups (none by default)."""
    return ["setpriv", "--reuid=%d" % uid, "--regid=%d" % (uid if gid is None else gid)] + \
        (["--groups=" + ",".join(map(str, groups))] if groups else ["--clear-groups"])


def stranger(path, uid=NOBODY, gid=None, init=None):
    """Run PEER as another user; return what it saw ({"got": [...]} or
    {"connect": errno})."""
    out = subprocess.run(as_user(uid, gid) + [sys.executable, "-c", PEER, path,
                                              json.dumps(init)],
                         capture_output=True, text=True, timeout=20)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def endpoint_as(procs, uid, gid, groups, *args):
    """tests/endpoint.py (a memifx echo endpoint) as another user."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return procs.start(as_user(uid, gid, groups) + [sys.executable, ENDPOINT] +
                       [str(a) for a in args], env=env)


def serves_echo(procs, master, uid, gid=None, groups=()):
    """A memifx endpoint running as ``uid`` connects and echoes our frames;
    the master sees its pid, uid, gid and groups."""
    gid = uid if gid is None else gid
    p = endpoint_as(procs, uid, gid, groups, "--socket", master.socket,
                    "--id", master.id, "--ring-size", RING_SIZE)
    read_until(p, "LINK UP", 10)
    assert wait_for(lambda: master.connected, 5)
    assert master.info()["peer"] == {"pid": p.pid, "uid": uid, "gid": gid,
                                     "groups": sorted(groups)}
    sent = [bytes([i]) * 64 for i in range(8)]
    got = []
    assert master.tx_burst(sent) == len(sent)
    assert wait_for(lambda: got.extend(master.rx_burst()) or len(got) >= len(sent), 5)
    assert got == sent
    return p


@pytest.fixture
def master(abstract_sock):
    made = []

    def make(**kw):
        kw.setdefault("socket", abstract_sock)
        kw.setdefault("name", "mx-master")
        m = memifx.Interface(role="master", **kw).connect()
        made.append(m)
        return m
    yield make
    for m in made:
        m.close()


# ------------------------------------------------------ allow-uid/allow-gid

def test_allow_uid_refuses_stranger_admits_listed(master, procs):
    m = master(allow_uid=[0, 4242])
    got = stranger(m.socket, init={"id": 0})
    # no interface here admits uid 65534: DISCONNECT before HELLO, nothing else
    assert got == {"got": [["Disconnect", NOT_ALLOWED]]}
    assert wait_for(lambda: m.info()["socket_refused"] == {"peer credentials": 1})
    assert m.info()["last_disconnect"] is None and m.info()["link_flaps"] == 0
    serves_good_slave(m)                            # root is listed


def test_allow_uid_admits_other_user(master, procs):
    m = master(allow_uid=[NOBODY])
    p = serves_echo(procs, m, NOBODY)
    p.kill()
    assert wait_for(lambda: not m.connected, 5)
    # root is not listed: a slave in this process is refused, and counted
    slave = memifx.Interface(socket=m.socket, role="slave", name="root-slave").connect()
    try:
        assert wait_for(lambda: slave.info()["last_disconnect"] == NOT_ALLOWED, 5)
        assert not slave.connected
    finally:
        slave.close()
    assert m.info()["socket_refused"].get("peer credentials", 0) >= 1
    serves_echo(procs, m, NOBODY)


def test_allow_gid(master, procs):
    m = master(allow_gid=[4243])
    assert stranger(m.socket, uid=NOBODY, gid=NOBODY, init={"id": 0}) == \
        {"got": [["Disconnect", NOT_ALLOWED]]}
    p = serves_echo(procs, m, NOBODY, gid=4243)     # the primary group
    p.kill()
    assert wait_for(lambda: not m.connected, 5)
    serves_echo(procs, m, NOBODY, groups=[4100, 4243])     # a supplementary group


def test_allow_lists_per_interface_on_one_socket(master, procs):
    """One socket, two ids: the stranger passes the socket's gate (id 1
    admits it) but is refused on id 0, with the same words as for an id that
    does not exist; the refusal is counted on id 0 by its precise cause."""
    m0 = master(id=0, allow_uid=[0])
    m1 = master(id=1, allow_uid=[NOBODY], name="mx-other")
    assert stranger(m0.socket, init={"id": 0}) == \
        {"got": [["Hello", None], ["Disconnect", NOT_ALLOWED]]}
    assert stranger(m0.socket, init={"id": 9}) == \
        {"got": [["Hello", None], ["Disconnect", NOT_ALLOWED]]}
    assert wait_for(lambda: m0.info()["refused"] == {"peer credentials": 1})
    assert m0.info()["socket_refused"] == {"unmatched interface id": 1}
    assert m1.info()["refused"] == {}
    assert m0.info()["last_disconnect"] is None
    serves_good_slave(m0)
    serves_echo(procs, m1, NOBODY)


def test_slave_refuses_master_not_listed(master):
    """A slave checks who listens: here root, not in its list (an abstract
    name can be taken by anyone in the netns).  It never sends INIT."""
    m = master()
    slave = memifx.Interface(socket=m.socket, role="slave", name="picky",
                             allow_uid=[4242]).connect()
    try:
        assert wait_for(lambda: slave.info()["last_disconnect"] == NOT_ALLOWED, 5)
        assert slave.info()["refused"]["peer credentials"] >= 1
        assert not slave.connected and not m.connected
        assert m.info()["last_disconnect"] is None      # it never reached id 0
    finally:
        slave.close()
    serves_good_slave(m, allow_uid=[0])             # a listed master is accepted


def test_slave_sees_master_creds(master):
    m = master()
    slave = memifx.Interface(socket=m.socket, role="slave", name="s").connect()
    try:
        assert slave.wait_connected(5)
        assert slave.info()["peer"] == ME
        assert wait_for(lambda: m.connected)
        assert m.info()["peer"] == ME
    finally:
        slave.close()
    serves_good_slave(m)


def test_allow_list_arguments():
    for bad in (dict(allow_uid=[]), dict(allow_uid="x"), dict(allow_gid=[-1]),
                dict(allow_uid=[2**32]), dict(owner="a:b"), dict(perm="999"),
                dict(perm=0o10000), dict(owner="1:2", role="master"),   # abstract
                dict(perm=0o600, role="slave", socket="/tmp/x.sock")):
        kw = dict(socket="@x", role="master")
        kw.update(bad)
        with pytest.raises(ValueError):
            memifx.Interface(**kw)
    i = memifx.Interface(socket="@x", allow_uid="0:1000", allow_gid=5)
    assert i.info()["access"] == {"allow_uid": [0, 1000], "allow_gid": [5]}
    i = memifx.Interface(socket="/tmp/x.sock", role="master", allow_uid=["root", NOBODY],
                         allow_gid="root", owner="nobody:root")
    assert i.info()["access"] == {"allow_uid": [0, NOBODY], "allow_gid": [0]}
    assert i.socket_owner == (NOBODY, 0)


def test_spec_keys():
    from cli.spec import parse_spec
    import click
    s = parse_spec("socket=/tmp/m.sock,role=master,allow-uid=0:1000,allow-gid=27,"
                   "owner=1000:27,perm=0660")
    args = s.interface_args()
    assert args["allow_uid"] == [0, 1000] and args["allow_gid"] == [27]
    assert args["owner"] == "1000:27" and args["perm"] == 0o660
    i = memifx.Interface(**args)
    assert i.socket_owner == (1000, 27) and i.socket_perm == 0o660
    for bad in ("allow-uid=", "allow-uid=a", "perm=0999", "owner=x",
                "socket=@a,role=master,perm=0600", "socket=/tmp/m.sock,perm=0600"):
        with pytest.raises(click.BadParameter):
            parse_spec(bad)


# ------------------------------------------------------ socket file

def test_owner_and_perm_of_socket_file(sock, procs):
    m = memifx.Interface(socket=sock, role="master", name="mx-file",
                         owner="%d:%d" % (NOBODY, 4244), perm=0o660).connect()
    try:
        st = os.lstat(sock)
        assert stat.S_ISSOCK(st.st_mode)
        assert stat.S_IMODE(st.st_mode) == 0o660
        assert (st.st_uid, st.st_gid) == (NOBODY, 4244)
        # the mode is what keeps out a user who is neither owner nor group
        os.chmod(os.path.dirname(sock), 0o755)
        assert stranger(sock, uid=4245, init={"id": 0}) == {"connect": 13}   # EACCES
        # a second interface on the same socket with another mode is refused
        with pytest.raises(memifx.MemifError, match="perm"):
            memifx.Interface(socket=sock, id=1, role="master", perm=0o600).connect()
        serves_echo(procs, m, NOBODY)               # the owner may connect
    finally:
        m.close()
    assert not os.path.exists(sock)


def test_non_socket_at_path_left_alone(sock):
    with open(sock, "w") as f:
        f.write("precious")
    with pytest.raises(memifx.MemifError, match="not a socket"):
        memifx.Interface(socket=sock, role="master").connect()
    with open(sock) as f:
        assert f.read() == "precious"
    # a symlink (even to a socket) is not a socket either
    os.unlink(sock)
    target = sock + ".target"
    os.symlink(target, sock)
    with pytest.raises(memifx.MemifError, match="not a socket"):
        memifx.Interface(socket=sock, role="master").connect()
    assert os.path.islink(sock)
    os.unlink(sock)
    # a stale socket (nobody listens) is replaced
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    s.bind(sock)
    s.close()
    m = memifx.Interface(socket=sock, role="master").connect()
    try:
        serves_good_slave(m)
    finally:
        m.close()


@pytest.mark.timeout(20)
@pytest.mark.parametrize("kind", ["listening", "backlog full", "stream"])
def test_live_socket_not_replaced(sock, kind):
    """A socket someone listens on stays, whatever its type, and probing it
    never blocks (a listener that never accepts, its backlog full, answers
    a blocking connect never)."""
    live = socket.socket(socket.AF_UNIX,
                         socket.SOCK_STREAM if kind == "stream" else socket.SOCK_SEQPACKET)
    live.bind(sock)
    live.listen(0)
    fillers = []
    try:
        if kind == "backlog full":
            for _ in range(2):
                c = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_NONBLOCK)
                fillers.append(c)
                try:
                    c.connect(sock)
                except BlockingIOError:
                    pass
        with pytest.raises(memifx.MemifError, match="in use"):
            memifx.Interface(socket=sock, role="master").connect()
        assert os.path.exists(sock)
    finally:
        live.close()
        for c in fillers:
            c.close()
    m = memifx.Interface(socket=sock, role="master").connect()     # stale now
    try:
        serves_good_slave(m)
    finally:
        m.close()


# ------------------------------------------------------ refusals

def test_refusals_identical_and_state_untouched(master):
    """Unknown id, missing secret, wrong secret, credentials: one string for
    the peer; precise causes in the counters; last_disconnect, link_flaps and
    traffic counters of the interface untouched."""
    m = master(id=1, secret=SECRET, allow_uid=[0, NOBODY])
    serves_good_slave(m, secret=SECRET)             # leaves a last_disconnect
    before, rx_before = m.info(), m.stats()["rx"]
    assert rx_before[0]["packets"] == 8
    assert before["last_disconnect"] and before["link_flaps"] == 1
    outcomes = []
    for init in (dict(id=7, secret=SECRET), dict(id=1), dict(id=1, secret=b"wrong")):
        with RogueSlave.connect(m.socket) as r:
            r.init(**init)
            outcomes.append(r.outcome())
            assert r.is_closed()
    m2 = master(id=2, allow_uid=[0])                # admits root only
    outcomes.append(stranger(m.socket, init={"id": 2, "secret": "s3cret"})["got"][-1][1])
    outcomes.append(stranger(m.socket, init={"id": 1})["got"][-1][1])
    assert outcomes == [NOT_ALLOWED] * 5
    assert wait_for(lambda: m.info()["refused"] == {"secret required": 2,
                                                    "incorrect secret": 1})
    assert m2.info()["refused"] == {"peer credentials": 1}
    assert m.info()["socket_refused"] == {"unmatched interface id": 1}
    after = m.info()
    for k in ("last_disconnect", "link_flaps", "state"):
        assert after[k] == before[k], k
    assert m.stats()["rx"] == rx_before
    assert m.stats()["refused"] == after["refused"]
    serves_good_slave(m, secret=SECRET)


def test_refusal_needs_authentication_first(master):
    """An interface that is up, or wants another mode, says so only to a
    peer that authenticated; a stranger hears the one refusal."""
    m = master(id=1, secret=SECRET)
    slave = memifx.Interface(socket=m.socket, id=1, role="slave", secret=SECRET,
                             ring_size=RING_SIZE).connect()
    try:
        assert slave.wait_connected(5) and wait_for(lambda: m.connected)
        for secret, reason in ((b"wrong", NOT_ALLOWED), (SECRET, "already connected")):
            with RogueSlave.connect(m.socket) as r:
                r.init(id=1, secret=secret)
                assert r.outcome() == reason
        with RogueSlave.connect(m.socket) as r:
            r.init(id=1, secret=b"x", mode=1)
            assert r.outcome() == NOT_ALLOWED
        assert m.connected and slave.connected
        assert m.info()["refused"] == {"incorrect secret": 2, "already connected": 1}
    finally:
        slave.close()
    assert wait_for(lambda: not m.connected)
    serves_good_slave(m, secret=SECRET)


# ------------------------------------------------------ peer strings

EVIL = "\x1b[2J\x1b]0;pwn\x07\r\n\u202egnp.exe\x00tail"


def test_printable():
    assert wire.printable("memif0 ok") == "memif0 ok"
    p = wire.printable(EVIL)
    assert p.isprintable() and "\\x1b" in p and "\\u202e" in p and "\\x00" in p
    assert len(wire.printable("\x01" * 1000)) == wire.MAX_PRINTABLE
    # decoding is where it happens: no peer string comes out unprintable
    raw = wire.encode(wire.Disconnect(code=0, reason=EVIL))
    assert wire.decode(raw).reason.isprintable()
    bad_utf8 = wire.encode(wire.Hello(name=b"\xff\xfe\x1b", min_version=0, max_version=0,
                                      max_region=0, max_m2s_ring=0, max_s2m_ring=0,
                                      max_log2_ring_size=0))
    assert wire.decode(bad_utf8).name.isprintable()


def test_slave_names_and_reason_sanitised(master, caplog):
    caplog.set_level(logging.DEBUG, logger="memifx")
    m = master()
    with RogueSlave.connect(m.socket) as r:
        r.handshake(name=EVIL[:31])
        assert wait_for(lambda: m.connected)
        name = m.info()["peer_name"]
        assert name.isprintable() and "\\x1b" in name
        r.send(wire.Disconnect(code=0, reason=EVIL))
        assert wait_for(lambda: not m.connected)
    reason = m.info()["last_disconnect"]
    assert reason.isprintable() and "\\x07" in reason and "gnp.exe" in reason
    assert "\x1b" not in caplog.text and "\u202e" not in caplog.text and "\x07" not in caplog.text
    serves_good_slave(m)


def test_master_names_and_reason_sanitised(abstract_sock, caplog):
    caplog.set_level(logging.DEBUG, logger="memifx")
    rm = RogueMaster.listen(abstract_sock)
    slave = memifx.Interface(socket=abstract_sock, role="slave", name="s",
                             ring_size=RING_SIZE).connect()
    try:
        rm.accept(hello=rm.hello_msg(name=EVIL[:31]))
        rm.handshake()
        assert slave.wait_connected(5)
        assert slave.info()["peer_name"] == "rogue-master"
        rm.send(wire.Disconnect(code=0, reason=EVIL))
        assert wait_for(lambda: slave.info()["last_disconnect"] not in (None, ""), 5)
        reason = slave.info()["last_disconnect"]
        assert reason.isprintable() and "\\x1b" in reason
        assert "\x1b" not in caplog.text and "\x07" not in caplog.text
    finally:
        rm.close()
        slave.close()
    m = memifx.Interface(socket=abstract_sock, role="master", name="m").connect()
    try:
        serves_good_slave(m)
    finally:
        m.close()


def test_show_prints_peer_creds_and_refusals(master, procs, sockdir, monkeypatch):
    monkeypatch.setenv("MEMIFX_STATS_DIR", os.path.join(sockdir, "stats"))
    sf = stats.StatsFile()
    m = master(secret=SECRET)
    sf.track(m)
    try:
        with RogueSlave.connect(m.socket) as r:
            r.init(id=0, secret=b"nope")
            assert r.outcome() == NOT_ALLOWED
        with RogueSlave.connect(m.socket) as r:
            r.handshake(secret=SECRET, name=EVIL[:31])
            assert wait_for(lambda: m.connected)
            sf.refresh()
            cmd = [sys.executable, "-m", "memifx.cli.main", "show"]
            env = dict(os.environ)
            out = subprocess.run(cmd + ["--json"], capture_output=True, text=True,
                                 timeout=30, check=True, env=env).stdout
            mine = [p for p in json.loads(out)["processes"] if p["pid"] == os.getpid()][0]
            intf = mine["interfaces"][0]
            assert intf["peer"] == ME
            assert intf["refused"] == {"incorrect secret": 1}
            text = subprocess.run(cmd, capture_output=True, text=True, timeout=30,
                                  check=True, env=env).stdout
            assert "PID/UID/GID" in text and "%d/0/0" % os.getpid() in text
            assert "refused  mx-master incorrect secret: 1" in text
            assert "\x1b" not in text and "\\x1b" in text
    finally:
        sf.close()
    serves_good_slave(m, secret=SECRET)


def test_show_lines_escape_whatever_the_file_holds():
    proc = {"pid": 1, "started": 0, "command": "x", "nodes": [],
            "interfaces": [{"name": "a\x1bb", "role": "master", "mode": "ethernet",
                            "state": "up", "peer_name": "p\x07", "id": 0,
                            "socket": "@s", "rx_queues": 1, "tx_queues": 1,
                            "link_flaps": 0, "peer": {"pid": 2, "uid": 3, "gid": 4},
                            "refused": {"x\x1b": 1},
                            "queues": {"rx": [], "tx": []}, "totals": {}}]}
    text = "\n".join(show.lines(proc))
    assert "\x1b" not in text and "\x07" not in text and "2/3/4" in text


# ------------------------------------------------------ received fds

def test_received_fds_close_on_exec(master):
    """The eventfds a slave hands over arrive close-on-exec (MSG_CMSG_CLOEXEC):
    a child this process starts never inherits a peer's fd."""
    m = master()
    with RogueSlave.connect(m.socket) as r:
        r.handshake()
        assert wait_for(lambda: m.connected)
        fd = m.rx_fd(0)
        assert fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC
        # and so an exec'd child does not have it
        child = subprocess.run([sys.executable, "-c",
                                "import os,sys; os.fstat(int(sys.argv[1]))", str(fd)],
                               close_fds=False, capture_output=True, timeout=20)
        assert child.returncode != 0 and b"Bad file descriptor" in child.stderr
    assert wait_for(lambda: not m.connected)
    serves_good_slave(m)
