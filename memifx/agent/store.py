"""Where the agent's document comes from, and how it learns of changes.

``FileSource``: one YAML/JSON file.  Read at start, then again whenever its
(inode, size, mtime) changes (polled twice a second: works on every file
system and follows a Kubernetes ConfigMap's symlink swap) or on SIGHUP.

``EtcdSource``: an etcd v3 store, for a fleet of nodes.  Each item is one key
under the prefix, holding that item's YAML/JSON::

    <prefix>agent                  the agent section
    <prefix>interfaces/<name>      one interface
    <prefix>xconnects/<name>, <prefix>routers/<name>, <prefix>endpoints/<name>

The whole prefix is read at start (its revision noted), then watched from
the next revision; every change submits the whole document again (the agent
applies only the difference).  When etcd goes away the watch stream ends:
the source reports itself disconnected, retries with a growing pause (0.2 s
to 5 s), and on reconnection reads the prefix again (resync) and watches
from there, so nothing that changed meanwhile is missed.  The data plane
keeps forwarding throughout; it only stops hearing about changes.

etcd may also go silent without closing anything (host frozen, network
partition, a middlebox dropping the long-lived connection): the watch stream
then neither ends nor speaks, and a one-way HTTP watch cannot ask etcd for a
progress report.  So every read of the stream is bounded by ``watch_idle``
seconds; when it passes with nothing heard, a count-only range read of the
prefix (linearizable, so a member without quorum fails it too) under the
normal request timeout decides.  etcd answers: the watch is opened again from
the next revision, quietly (nothing is missed; counted in ``watch_reopens``).
No answer: the source is lost as above.  /state therefore shows the truth
about ``watch_idle + timeout`` seconds after etcd goes silent (at most
``watch_idle + 2 * timeout`` when even new connections go unanswered: the
check's connect and its read are each bounded by ``timeout``).

The etcd client is etcd3gw: maintained (2.7.0, 2026), it speaks etcd's
grpc-gateway JSON API over HTTP with ``requests``, so the image needs no gRPC
wheels and its calls are plain blocking calls that suit a thread.  aetcd is
asyncio-only (the agent's management side is threads), and etcd3 (gRPC) has
not been released since 2020.  etcd3gw's own watch helper does not tell its
caller when the stream ends, which reconnection needs, so the watch stream is
read here over the client's HTTP session.
"""
import base64
import json
import logging
import os
import signal
import socket
import threading
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Protocol, Tuple

import yaml  # type: ignore[import-untyped]  # PyYAML ships no types

from memifx.agent.config import ConfigError, parse_text

if TYPE_CHECKING:
    import requests

    from memifx.agent.main import Agent

log = logging.getLogger("memifx.agent")


class Source(Protocol):
    """Where documents come from: ``start`` submits the first one to the
    agent (and sets ``agent.store``), then follows changes on a thread until
    ``stop`` is set; ``status`` is shown in /state."""

    def start(self, agent: "Agent", stop: threading.Event) -> None: ...

    def status(self) -> Dict[str, Any]: ...

    def close(self) -> None: ...


class FileSource:
    """Document from a file; changes by polling and SIGHUP."""

    def __init__(self, path: str, interval: float = 0.5) -> None:
        self.path, self.interval = path, interval
        self.hup = threading.Event()
        self.stop: Optional[threading.Event] = None
        self.thread: Optional[threading.Thread] = None
        self.seen: Optional[Tuple[int, int, int]] = None

    def start(self, agent: "Agent", stop: threading.Event) -> None:
        """Submit the file now, then watch it on a thread until ``stop``.
        Call from the main thread (SIGHUP handler)."""
        self.agent, self.stop = agent, stop
        agent.store = self
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGHUP, lambda signum, frame: self.hup.set())
        self.read()
        self.thread = threading.Thread(target=self._watch, name="agent-file", daemon=True)
        self.thread.start()

    def stamp(self) -> Optional[Tuple[int, int, int]]:
        """(inode, size, mtime) of the file, None while it is missing: a
        change in any of them is a change of the file."""
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def read(self) -> None:
        self.seen = self.stamp()
        try:
            with open(self.path, "rb") as f:
                text = f.read()
        except OSError as e:
            self.agent.reject(self.path, e.strerror or str(e))
            return
        self.agent.submit(text, self.path)

    def _watch(self) -> None:
        stop = self.stop
        assert stop is not None, "start() set it"
        while not stop.is_set():
            self.hup.wait(self.interval)
            if stop.is_set():
                break
            if self.hup.is_set():
                self.hup.clear()
                log.info("SIGHUP: reading %s", self.path)
                self.read()
            elif self.stamp() != self.seen:
                log.info("%s changed", self.path)
                self.read()

    def status(self) -> Dict[str, Any]:
        return {"kind": "file", "path": self.path}

    def close(self) -> None:
        if self.stop is not None:
            self.stop.set()
        self.hup.set()
        if self.thread:
            self.thread.join(5)


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _unb64(text: str) -> str:
    return base64.b64decode(text).decode("utf-8", "replace")


def _range_end(prefix: str) -> str:
    b = bytearray(prefix.encode())
    b[-1] += 1
    return bytes(b).decode()


def _reason(e: Exception) -> str:
    """'Type: text' of an error; etcd3gw's errors keep their text in
    ``detail_text``, not in their arguments."""
    return "%s: %s" % (type(e).__name__, getattr(e, "detail_text", None) or e)


def document_from(kvs: Mapping[str, str], prefix: str) -> Dict[str, Any]:
    """{key: value text} under ``prefix`` -> the document (ConfigError naming
    the key when one is misplaced or does not parse)."""
    doc: Dict[str, Any] = {}
    for key, value in sorted(kvs.items()):
        rel = key[len(prefix):]
        try:
            data = parse_text(value, "etcd key %s" % key)
        except ConfigError as e:
            raise ConfigError("", e.reason)
        if rel == "agent":
            doc["agent"] = data
        elif rel.count("/") == 1 and all(rel.split("/")):
            section, name = rel.split("/")
            doc.setdefault(section, {})[name] = data
        else:
            raise ConfigError("", "etcd key %s: expected %sagent or %sSECTION/NAME"
                              % (key, prefix, prefix))
    return doc


class EtcdSilent(ConnectionError):
    """The watch stream heard nothing for ``watch_idle`` seconds and etcd
    did not answer the check that followed."""


class EtcdSource:
    """Document from an etcd v3 prefix; changes by watch, with reconnection
    and resync.  ``timeout``: seconds for each request to etcd;
    ``watch_idle``: seconds the watch stream may stay silent before etcd is
    checked."""

    MIN_PAUSE, MAX_PAUSE = 0.2, 5.0
    TIMEOUT, WATCH_IDLE = 3.0, 10.0

    def __init__(self, url: str, prefix: str, timeout: float = TIMEOUT,
                 watch_idle: float = WATCH_IDLE) -> None:
        import etcd3gw
        from urllib.parse import urlsplit
        if not (timeout > 0 and watch_idle > 0):
            raise ValueError("etcd timeout and watch_idle must be positive seconds")
        u = urlsplit(url if "://" in url else "http://" + url)
        if not prefix.endswith("/"):
            prefix += "/"
        self.url, self.prefix, self.timeout = url, prefix, timeout
        self.watch_idle = watch_idle
        self.client = etcd3gw.client(host=u.hostname or "127.0.0.1", port=u.port or 2379,
                                     protocol=u.scheme or "http", timeout=timeout)
        self.kvs: Dict[str, str] = {}
        self.revision = 0
        self.connected = False
        self.last_error: Optional[str] = None
        self.resyncs = 0
        self.watch_reopens = 0
        self.response: Optional[requests.Response] = None
        self.stop: Optional[threading.Event] = None
        self.thread: Optional[threading.Thread] = None
        self.submitted: Optional[Dict[str, str]] = None

    def start(self, agent: "Agent", stop: threading.Event) -> None:
        """Read the prefix now (if etcd answers), then watch on a thread."""
        self.agent, self.stop = agent, stop
        agent.store = self
        try:
            self._resync()
        except Exception as e:
            self._lost(e)
        self.thread = threading.Thread(target=self._run, name="agent-etcd", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        stop = self.stop
        assert stop is not None, "start() set it"
        pause = self.MIN_PAUSE
        while not stop.is_set():
            try:
                if not self.connected:
                    self._resync()
                pause = self.MIN_PAUSE
                self._watch()
                if stop.is_set():
                    break
                self._check_alive()
                self.watch_reopens += 1
                log.debug("etcd %s: watch silent for %g s, etcd answers: watching again "
                          "from revision %d", self.url, self.watch_idle, self.revision + 1)
                continue
            except Exception as e:
                if stop.is_set():
                    break
                self._lost(e)
            if stop.wait(pause):
                break
            pause = min(pause * 2, self.MAX_PAUSE)

    def _lost(self, e: Exception) -> None:
        reason = _reason(e)
        if self.connected or self.last_error is None:
            log.warning("etcd %s: %s", self.url, reason)
        self.connected = False
        self.last_error = reason

    def _resync(self) -> None:
        """Read the whole prefix; submit it if it differs from the last one."""
        reply = self.client.post(self.client.get_url("/kv/range"),
                                 json={"key": _b64(self.prefix),
                                       "range_end": _b64(_range_end(self.prefix))})
        self.kvs = {_unb64(kv["key"]): _unb64(kv.get("value", ""))
                    for kv in reply.get("kvs", [])}
        self.revision = int(reply["header"]["revision"])
        if self.submitted is not None:
            self.resyncs += 1
        self.connected, self.last_error = True, None
        log.info("etcd %s: read %d keys at revision %d", self.url, len(self.kvs),
                 self.revision)
        self._submit()

    def _check_alive(self) -> None:
        """After a silent watch: return if etcd answers a count-only read of
        the prefix within ``timeout``, else raise EtcdSilent."""
        try:
            self.client.post(self.client.get_url("/kv/range"),
                             json={"key": _b64(self.prefix),
                                   "range_end": _b64(_range_end(self.prefix)),
                                   "count_only": True})
        except Exception as e:
            raise EtcdSilent("watch silent for %g s and etcd does not answer: %s"
                             % (self.watch_idle, _reason(e))) from e

    def _submit(self) -> None:
        if self.kvs == self.submitted:
            return
        self.submitted = dict(self.kvs)
        origin = "etcd %s%s@%d" % (self.url, self.prefix, self.revision)
        try:
            doc = document_from(self.kvs, self.prefix)
        except ConfigError as e:
            self.agent.reject(origin, str(e))
            return
        self.agent.submit(doc, origin)

    def _watch(self) -> None:
        """Follow the prefix from the next revision.  Returns when the stream
        has been silent for ``watch_idle`` seconds (etcd may still be fine);
        raises when it ends or fails."""
        import requests
        from urllib3.exceptions import ReadTimeoutError
        stop = self.stop
        assert stop is not None, "start() set it"
        request: Dict[str, Any] = {"create_request": {
            "key": _b64(self.prefix), "range_end": _b64(_range_end(self.prefix)),
            "start_revision": self.revision + 1}}
        try:
            resp = self.client.session.post(self.client.get_url("/watch"), json=request,
                                            stream=True,
                                            timeout=(self.timeout, self.watch_idle))
        except requests.exceptions.ReadTimeout:
            return                      # not even the created reply: check etcd
        self.response = resp
        try:
            resp.raise_for_status()
            try:
                self._follow(resp, stop)
            except requests.exceptions.ConnectionError as e:
                # requests reports a read timeout in the body as a ConnectionError
                # around urllib3's ReadTimeoutError: that is silence, not an end
                if e.args and isinstance(e.args[0], ReadTimeoutError):
                    return
                raise
        finally:
            self.response = None
            resp.close()
        raise ConnectionError("watch stream ended")

    def _follow(self, resp: "requests.Response", stop: threading.Event) -> None:
        """Apply the watch's events line by line until the stream ends or
        ``stop``."""
        for line in resp.iter_lines():
            if stop.is_set():
                return
            if not line.strip():
                continue
            result = json.loads(line).get("result", {})
            if result.get("canceled") or int(result.get("compact_revision", 0) or 0):
                self.connected = False          # compacted: read everything again
                raise ConnectionError("watch canceled: %s"
                                      % result.get("cancel_reason", "compacted"))
            events = result.get("events", [])
            for ev in events:
                kv = ev["kv"]
                key = _unb64(kv["key"])
                if ev.get("type") == "DELETE":
                    self.kvs.pop(key, None)
                else:
                    self.kvs[key] = _unb64(kv.get("value", ""))
                self.revision = max(self.revision, int(kv.get("mod_revision", 0)))
            if events:
                self._submit()

    def status(self) -> Dict[str, Any]:
        return {"kind": "etcd", "url": self.url, "prefix": self.prefix,
                "connected": self.connected, "revision": self.revision,
                "resyncs": self.resyncs, "watch_idle": self.watch_idle,
                "watch_reopens": self.watch_reopens, "error": self.last_error}

    def close(self) -> None:
        if self.stop is not None:
            self.stop.set()
        resp = self.response
        if resp is not None:            # wake the watch thread out of its read
            try:
                sock = resp.raw.connection.sock
                sock.shutdown(socket.SHUT_RDWR)
            except Exception:
                pass
        if self.thread:
            self.thread.join(5)


def put_document(client: Any, prefix: str, data: Mapping[str, Any]) -> List[str]:
    """Write a document's items as keys under ``prefix`` (deleting the keys of
    items it no longer has): for ``memifx agent put`` and tests."""
    if not prefix.endswith("/"):
        prefix += "/"
    keys: Dict[str, Any] = {}
    for section, items in data.items():
        if section == "agent":
            keys[prefix + "agent"] = items
        else:
            for name, item in items.items():
                keys["%s%s/%s" % (prefix, section, name)] = item
    for value, meta in client.get_prefix(prefix):
        k = meta["key"].decode() if isinstance(meta["key"], bytes) else meta["key"]
        if k not in keys:
            client.delete(k)
    for k, v in keys.items():
        client.put(k, yaml.safe_dump(v))
    return sorted(keys)


__all__ = ["FileSource", "EtcdSource", "EtcdSilent", "document_from", "put_document"]
