"""Typing: memifx's public API passes ``mypy --strict``, and the stubs of the
compiled modules say exactly what those modules hold.

The first test type-checks the annotated public modules, every module of
the runtime's packages (runtime, workers, nodes, agent), every stub and
tests/typing_usage.py (the API used as an application would) with the
configuration in pyproject.toml.  The others compare each compiled module
(setup.py's list) with its .pyi: a public name added to a .pyx without a
stub entry, or a stub entry for something the module does not have, fails.
"""
import ast
import glob
import importlib
import inspect
import os
import re
import subprocess
import sys
import time
import types

import pytest

from memifx import pcap

pytestmark = pytest.mark.timeout(60)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PKG = os.path.join(ROOT, "memifx")

# The annotated public Python modules (the compiled ones are checked through
# their stubs, which every import of them uses).
PUBLIC = ["__init__", "access", "aio", "errors", "ethernet", "interface", "loop", "pcap",
          "rxmode", "wire",
          "stats/__init__", "stats/exporters", "stats/layout", "stats/reader", "stats/schema",
          "stats/writer"]
# Packages checked whole, every module in them: the runtime, the workers
# that host its nodes, the node kinds, the agent.
PACKAGES = ["runtime", "workers", "nodes", "agent"]
# Modules of PACKAGES not annotated yet (each a task of its own).
UNCHECKED: list[str] = []


def package_modules():
    """The modules of PACKAGES, less UNCHECKED, as PUBLIC names them."""
    names = []
    for package in PACKAGES:
        for path in sorted(glob.glob(os.path.join(PKG, package, "*.py"))):
            name = package + "/" + os.path.basename(path)[:-3]
            if name not in UNCHECKED:
                names.append(name)
    return names


def test_packages_are_found():
    """package_modules sees the packages' modules (a moved package would
    otherwise leave the check with nothing to check)."""
    names = package_modules()
    for package in PACKAGES:
        assert package + "/__init__" in names
    assert "workers/pool" in names and "nodes/xconnect" in names
    assert not set(UNCHECKED) & set(names)


def compiled_modules():
    """The extension modules setup.py builds."""
    with open(os.path.join(ROOT, "setup.py")) as f:
        text = f.read()
    names = re.search(r"for name in \(([^)]*)\)", text).group(1)
    return re.findall(r'"(\w+)"', names)


def stub_names(tree):
    """Top-level names a stub defines; per class the names in its body, and
    of those the methods and properties (annotated names may be instance
    attributes, which a class object does not show)."""
    top, classes, methods = {}, {}, {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            top[node.name] = node
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            top[node.target.id] = node
        elif isinstance(node, ast.Assign):
            for t in node.targets:
                if isinstance(t, ast.Name):
                    top[t.id] = node
        elif isinstance(node, ast.ImportFrom):
            for alias in node.names:          # "import X as X": a re-export
                if alias.asname == alias.name:
                    top[alias.name] = node
        if isinstance(node, ast.ClassDef):
            members, defs = set(), set()
            for item in node.body:
                if isinstance(item, ast.FunctionDef):
                    members.add(item.name)
                    defs.add(item.name)
                elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                    members.add(item.target.id)
            classes[node.name] = members
            methods[node.name] = defs
    return top, classes, methods


def public(names):
    return {n for n in names if not n.startswith("_")}


@pytest.mark.timeout(300)
def test_mypy_strict_on_the_public_api():
    try:
        import mypy  # noqa: F401
    except ImportError:
        pytest.fail("mypy is missing: it is in the test extra (pip install -e '.[test]')")
    paths = [os.path.join("memifx", m + ".py") for m in PUBLIC + package_modules()]
    paths += [os.path.join("memifx", m + ".pyi") for m in compiled_modules()]
    paths.append(os.path.join("tests", "typing_usage.py"))
    r = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--no-incremental",
                        "--cache-dir", os.devnull] + paths,
                       cwd=ROOT, capture_output=True, text=True, timeout=280)
    assert r.returncode == 0, r.stdout + r.stderr


def test_usage_runs(abstract_sock, tmp_path):
    """tests/typing_usage.py's functions over real links: what type-checks
    there also works (a stub that promises what the module refuses fails)."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import typing_usage as usage
    from memifx import Interface
    name = abstract_sock[1:]
    master, slave = usage.open_pair(name)
    other = Interface(socket=abstract_sock, role="master", id=0).connect()   # for own_loop
    try:
        assert usage.copying(slave) == 3
        master.tx_burst([b"\1" * 100])
        deadline = time.monotonic() + 5
        while not slave.rx_pending() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert usage.zero_copy(slave) == 200 + 8       # one 100-byte frame seen, 8 sent
        got = []
        while len(got) < 8 and time.monotonic() < deadline:
            got += master.rx_burst(0)
        assert got == [b"abcd"] * 8
        assert usage.reasons(master) == "tx_alloc is for the slave side"
        slave.tx_burst([b"\2" * 60])
        assert usage.run_interrupt_receive(master) == 1
        assert usage.own_loop(name)
        assert usage.routing() > 0
        assert usage.messages()[:2] == b"\x02\x00"
        path = str(tmp_path / "in.pcap")
        with pcap.Writer(path, pcap.LINKTYPE_ETHERNET) as w:
            w.write(b"\3" * 60)
            w.write(b"\4" * 64)
        assert usage.captures(path) == 2
        assert len(pcap.read(path + ".out")) == 3
    finally:
        for intf in (slave, master, other):
            intf.close()


def test_every_compiled_module_has_a_stub():
    missing = [m for m in compiled_modules() if not os.path.exists(os.path.join(PKG, m + ".pyi"))]
    assert not missing, "no .pyi beside %s" % missing
    assert os.path.exists(os.path.join(PKG, "py.typed"))


@pytest.mark.parametrize("name", compiled_modules())
def test_stub_matches_module(name):
    """Every public name of the compiled module (dir(), what it imported
    aside) is in its stub, with every public member of each class; and the
    stub declares nothing the module lacks."""
    mod = importlib.import_module("memifx." + name)
    with open(os.path.join(PKG, name + ".pyi")) as f:
        top, classes, methods_of = stub_names(ast.parse(f.read()))
    runtime = {n for n in public(dir(mod)) if _own(mod, getattr(mod, n))}
    unstubbed = runtime - set(top)
    assert not unstubbed, "memifx.%s: not in the stub: %s" % (name, sorted(unstubbed))
    extra = public(top) - runtime
    assert not extra, "memifx.%s: in the stub, not in the module: %s" % (name, sorted(extra))
    for cls_name, members in classes.items():
        cls = getattr(mod, cls_name)
        assert inspect.isclass(cls)
        base = Exception if issubclass(cls, BaseException) else object
        have = public(dir(cls)) - public(dir(base)) - _inherited(cls, classes)
        unstubbed = have - members
        assert not unstubbed, "memifx.%s.%s: not in the stub: %s" % (name, cls_name,
                                                                     sorted(unstubbed))
        extra = public(methods_of[cls_name]) - public(dir(cls))
        assert not extra, "memifx.%s.%s: in the stub, not in the class: %s" % (
            name, cls_name, sorted(extra))


def _own(mod, value):
    """Whether a module attribute is the module's own (not a module it
    imported, nor a class or function it imported from elsewhere)."""
    if isinstance(value, types.ModuleType):
        return False
    if inspect.isclass(value) or callable(value):
        return getattr(value, "__module__", mod.__name__) == mod.__name__
    return True


def _inherited(cls, classes):
    """Members a stub class gets from a base class declared in another stub."""
    out = set()
    for base in cls.__mro__[1:]:
        if base.__module__.startswith("memifx.") and base.__name__ not in classes:
            out |= public(vars(base))
    return out


def _stub_params(fn):
    """(name, kind, has a default) of a stub function's parameters."""
    a = fn.args
    out = []
    positional = a.posonlyargs + a.args
    first_default = len(positional) - len(a.defaults)
    for i, p in enumerate(positional):
        kind = "POSITIONAL_ONLY" if i < len(a.posonlyargs) else "POSITIONAL_OR_KEYWORD"
        out.append((p.arg, kind, i >= first_default))
    if a.vararg:
        out.append((a.vararg.arg, "VAR_POSITIONAL", False))
    for p, d in zip(a.kwonlyargs, a.kw_defaults):
        out.append((p.arg, "KEYWORD_ONLY", d is not None))
    if a.kwarg:
        out.append((a.kwarg.arg, "VAR_KEYWORD", False))
    return out


def _runtime_params(fn):
    return [(p.name, p.kind.name, p.default is not p.empty)
            for p in inspect.signature(fn).parameters.values()]


@pytest.mark.parametrize("name", compiled_modules())
def test_stub_signatures_match(name):
    """Each function and method a stub declares takes the parameters the
    compiled one takes: same names, order, kinds and optional ones.
    Properties are properties (special methods aside: a cdef class shows
    no signature for its constructor)."""
    mod = importlib.import_module("memifx." + name)
    with open(os.path.join(PKG, name + ".pyi")) as f:
        tree = ast.parse(f.read())
    wrong = []
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            pairs = [(node.name, node, getattr(mod, node.name))]
        elif isinstance(node, ast.ClassDef):
            cls = getattr(mod, node.name)
            pairs = []
            for item in node.body:
                if not isinstance(item, ast.FunctionDef) or item.name.startswith("__"):
                    continue
                what, fn = "%s.%s" % (node.name, item.name), getattr(cls, item.name)
                if any(isinstance(d, ast.Name) and d.id == "property"
                       for d in item.decorator_list):
                    if not inspect.isdatadescriptor(fn):
                        wrong.append("%s: not a property at run time" % what)
                else:
                    pairs.append((what, item, fn))
        else:
            continue
        for what, stub, fn in pairs:
            if isinstance(fn, property) or inspect.isdatadescriptor(fn):
                wrong.append("%s: a property at run time" % what)
            elif _stub_params(stub) != _runtime_params(fn):
                wrong.append("%s: stub %s, module %s" % (what, _stub_params(stub),
                                                         _runtime_params(fn)))
    assert not wrong, "memifx.%s:\n%s" % (name, "\n".join(wrong))
