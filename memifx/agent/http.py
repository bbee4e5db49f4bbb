"""The agent's HTTP API: what it holds and how it is, for people and for
Kubernetes' probes.  Read-only; every answer is JSON except /metrics.

    GET /config    the accepted document (source, generation, document)
    GET /state     per item (section/name): desired, applied, in_sync, error,
                   and up for interfaces; the last rejected document's error
    GET /healthz   200 while the process answers and no worker is dead, else
                   503 with the problems (Kubernetes livenessProbe)
    GET /readyz    200 once the document is applied in full and the required
                   interfaces are up, else 503 with the reasons (readinessProbe)
    GET /metrics   the Prometheus text of this process's counters

Probe settings that suit it (deploy/ uses them): liveness every 10 s,
failureThreshold 3; readiness every 2 s, failureThreshold 1; a startupProbe
on /healthz with failureThreshold 30 while the first document is applied.
"""
import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from memifx.agent.main import Agent

log = logging.getLogger("memifx.agent")

PATHS = ("/config", "/state", "/healthz", "/readyz", "/metrics")


class _Server(ThreadingHTTPServer):
    """The HTTP server, holding the agent its handlers answer for."""
    agent: "Agent"


class _Handler(BaseHTTPRequestHandler):
    server_version = "memifx-agent"

    def do_GET(self) -> None:
        assert isinstance(self.server, _Server)
        agent = self.server.agent
        path = self.path.split("?", 1)[0]
        try:
            if path == "/config":
                self._json(200, agent.config_view())
            elif path == "/state":
                self._json(200, agent.state_view())
            elif path in ("/healthz", "/readyz"):
                ok, reasons = agent.health() if path == "/healthz" else agent.readiness()
                self._json(200 if ok else 503, {"ok": ok, "reasons": reasons})
            elif path == "/metrics":
                self._send(200, agent.metrics().encode(), "text/plain; version=0.0.4")
            else:
                self._json(404, {"error": "not found; paths: %s" % ", ".join(PATHS)})
        except Exception as e:          # an answer, never a dead API thread
            log.exception("GET %s", path)
            self._json(500, {"error": "%s: %s" % (type(e).__name__, e)})

    def _json(self, code: int, obj: Any) -> None:
        self._send(code, (json.dumps(obj, indent=1, sort_keys=True) + "\n").encode(),
                   "application/json")

    def _send(self, code: int, body: bytes, ctype: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt: str, *args: Any) -> None:
        log.debug("http: " + fmt, *args)


class ApiServer:
    """The API on ``host:port`` (port 0: a free one, see ``.port``), served
    by a thread per request until ``close()``."""

    def __init__(self, agent: "Agent", port: int, host: str = "127.0.0.1") -> None:
        self.httpd = _Server((host, port), _Handler)
        self.httpd.daemon_threads = True
        self.httpd.agent = agent
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="agent-http",
                                       daemon=True)
        self.thread.start()
        log.info("agent API on %s:%d", host, self.port)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)
