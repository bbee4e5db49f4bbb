"""deploy/: the Containerfile and the Kubernetes manifests agree with the
agent's code (probe paths and ports, the socket path and its volume, the
config file's mount), run as non-root with no capabilities; the image's
entrypoint command runs here as a non-root user."""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

import pytest
import yaml

from memifx.agent import http
from memifx.agent.config import load
from memifx.cli.spec import parse_spec

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEPLOY = os.path.join(ROOT, "deploy")
VENV_BIN = os.path.dirname(sys.executable)
pytestmark = pytest.mark.timeout(60)


def manifests():
    out = {}
    for name in sorted(os.listdir(os.path.join(DEPLOY, "k8s"))):
        with open(os.path.join(DEPLOY, "k8s", name)) as f:
            for doc in yaml.safe_load_all(f):
                out[(doc["kind"], doc["metadata"]["name"])] = doc
    return out


def containerfile():
    """Containerfile instructions of the final stage: {INSTRUCTION: [args...]}."""
    with open(os.path.join(DEPLOY, "Containerfile")) as f:
        text = f.read().replace("\\\n", " ")
    stage = text.split("\nFROM ")[-1]
    out = {}
    for line in stage.splitlines():
        if line.strip() and not line.startswith("#"):
            word, _, rest = line.strip().partition(" ")
            out.setdefault(word, []).append(rest.strip())
    return out


def document(text, socket_dir=None):
    """The agent document; with socket_dir, its socket paths moved there
    (validation checks that a socket's directory exists)."""
    data = yaml.safe_load(text)
    if socket_dir:
        for spec in data.get("interfaces", {}).values():
            spec["socket"] = os.path.join(socket_dir, os.path.basename(spec["socket"]))
    return data


def agent_pod():
    m = manifests()
    pod = m[("Pod", "memifx-cnf")]
    agent = next(c for c in pod["spec"]["containers"] if c["name"] == "agent")
    return m, pod, agent


def test_configmap_document_is_valid_and_is_the_image_default(tmp_path):
    m, pod, agent = agent_pod()
    text = m[("ConfigMap", "memifx-agent")]["data"]["agent.yaml"]
    cfg = load(document(text, str(tmp_path)))
    assert cfg.pipelines and cfg.settings.http_bind == "0.0.0.0"
    with open(os.path.join(DEPLOY, "agent.yaml")) as f:
        assert yaml.safe_load(f) == yaml.safe_load(text)


def test_probes_and_ports_match_the_code():
    m, pod, agent = agent_pod()
    text = m[("ConfigMap", "memifx-agent")]["data"]["agent.yaml"]
    port = yaml.safe_load(text)["agent"]["http-port"]
    assert [p["containerPort"] for p in agent["ports"]] == [port]
    probes = {k: agent[k]["httpGet"] for k in ("livenessProbe", "readinessProbe",
                                                "startupProbe")}
    assert probes["livenessProbe"]["path"] == "/healthz"
    assert probes["readinessProbe"]["path"] == "/readyz"
    for probe in probes.values():
        assert probe["path"] in http.PATHS and probe["port"] == port
    assert "EXPOSE" in containerfile() and containerfile()["EXPOSE"] == [str(port)]


def test_config_mount_and_entrypoint_agree():
    m, pod, agent = agent_pod()
    cf = containerfile()
    entry, cmd = json.loads(cf["ENTRYPOINT"][0]), json.loads(cf["CMD"][0])
    assert entry[-1] == "agent" and cmd[0] == "--config"
    assert agent.get("args", cmd) == cmd
    config_path = cmd[1]
    mounts = {v["mountPath"]: v["name"] for v in agent["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    vol = volumes[mounts[os.path.dirname(config_path)]]
    assert vol["configMap"]["name"] == "memifx-agent"
    assert os.path.basename(config_path) in m[("ConfigMap", "memifx-agent")]["data"]


def test_socket_shared_through_a_volume():
    """Every interface's socket lies in a volume the agent mounts, and every
    other container's memif spec names a socket of the document, in the same
    volume, with the other role."""
    m, pod, agent = agent_pod()
    doc = yaml.safe_load(m[("ConfigMap", "memifx-agent")]["data"]["agent.yaml"])
    ours = {(s["socket"], s.get("id", 0)): s["role"] for s in doc["interfaces"].values()}

    def volume_of(container, path):
        for mnt in container["volumeMounts"]:
            if path.startswith(mnt["mountPath"].rstrip("/") + "/"):
                return mnt["name"]
        raise AssertionError("%s: %s is on no volume" % (container["name"], path))

    for sock, _ in ours:
        volume_of(agent, sock)
    peers = 0
    for c in pod["spec"]["containers"]:
        if c is agent:
            continue
        for word in c.get("command", []) + c.get("args", []):
            if word.startswith("socket="):
                spec = parse_spec(word.replace(os.path.dirname(word[7:].split(",")[0]),
                                               tempfile.gettempdir(), 1))
                path = word[7:].split(",")[0]
                assert (path, spec.id) in ours, word
                assert ours[(path, spec.id)] != spec.role
                assert volume_of(c, path) == volume_of(agent, path)
                peers += 1
    assert peers == 2


def test_non_root_no_capabilities():
    m, pod, agent = agent_pod()
    sc = pod["spec"]["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] != 0
    for c in pod["spec"]["containers"]:
        csc = c["securityContext"]
        assert csc["allowPrivilegeEscalation"] is False
        assert csc["capabilities"]["drop"] == ["ALL"] and "add" not in csc["capabilities"]
        assert csc["readOnlyRootFilesystem"] is True
        assert not csc.get("privileged")
    user = containerfile()["USER"][-1].split(":")[0]
    assert user.isdigit() and int(user) == sc["runAsUser"]
    etcd = m[("Deployment", "memifx-etcd")]["spec"]["template"]["spec"]
    assert etcd["securityContext"]["runAsNonRoot"] is True


def entrypoint_command(config_path, *extra):
    """The image's ENTRYPOINT + CMD, with the image's paths mapped to this tree."""
    cf = containerfile()
    argv = json.loads(cf["ENTRYPOINT"][0]) + json.loads(cf["CMD"][0]) + list(extra)
    argv[0] = os.path.join(VENV_BIN, os.path.basename(argv[0]))
    return [config_path if a.startswith("/etc/memifx/") else a for a in argv]


def as_user(argv):
    if os.geteuid() != 0:
        return argv
    if not shutil.which("setpriv"):
        pytest.skip("setpriv (util-linux) needed to drop to a non-root user")
    return ["setpriv", "--reuid=10001", "--regid=10001", "--clear-groups"] + argv


@pytest.fixture
def shared_dir():
    d = tempfile.mkdtemp(prefix="memifx-deploy-")
    os.chmod(d, 0o777)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_entrypoint_checks_the_default_document_as_non_root(shared_dir):
    with open(os.path.join(DEPLOY, "agent.yaml")) as f:
        data = document(f.read(), shared_dir)
    path = os.path.join(shared_dir, "agent.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(data, f)
    os.chmod(path, 0o644)
    r = subprocess.run(as_user(entrypoint_command(path, "--check")), capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert "ok: 2 interfaces, 1 pipelines" in r.stdout
    data["interfaces"]["a"]["ring-size"] = 1000
    with open(path, "w") as f:
        yaml.safe_dump(data, f)
    r = subprocess.run(as_user(entrypoint_command(path, "--check")), capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 1 and "interfaces.a.ring-size" in r.stderr


def test_entrypoint_runs_as_non_root_and_answers_probes(shared_dir, procs):
    with open(os.path.join(DEPLOY, "agent.yaml")) as f:
        data = document(f.read(), shared_dir)
    from test_agent_etcd import free_port
    port = free_port()
    data["agent"].update({"http-port": port, "http-bind": "127.0.0.1"})
    path = os.path.join(shared_dir, "agent.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(data, f)
    os.chmod(path, 0o644)
    env = dict(os.environ, MEMIFX_STATS_DIR=os.path.join(shared_dir, "stats"))
    agent = procs.start(as_user(entrypoint_command(path)), env=env)
    url = "http://127.0.0.1:%d" % port

    def get(p):
        try:
            with urllib.request.urlopen(url + p, timeout=2) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code
        except OSError:
            return None
    deadline = time.monotonic() + 20
    while get("/healthz") != 200 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert get("/healthz") == 200
    assert get("/readyz") == 503             # nothing connected to a and b yet
    assert agent.poll() is None


def test_containerfile_copies_what_the_build_needs():
    """The build stage copies the sources the package is built from (and not
    the whole tree, which may hold a .venv)."""
    with open(os.path.join(DEPLOY, "Containerfile")) as f:
        text = f.read()
    build = text.split("\nFROM ")[1]              # the first stage
    copied = set()
    for line in build.splitlines():
        if line.startswith("COPY "):
            words = line.split()[1:-1]
            assert "." not in words
            copied.update(words)
    for needed in ("pyproject.toml", "setup.py", "csrc", "memifx", "cli", "README.md"):
        assert needed in copied, needed
        assert os.path.exists(os.path.join(ROOT, needed))
