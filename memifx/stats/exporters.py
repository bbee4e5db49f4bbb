"""Exporting a process's counters: Prometheus text and its HTTP server.

``MetricsServer`` serves /metrics in the Prometheus text exposition format
(version 0.0.4), from a description a reader gave (memifx/stats/reader.py,
``StatsFile.read``).  Queue metrics take their names and help text from
memifx/stats/schema.py; node counters become ``memifx_node_<key>_total``.
It is http.server from the standard library in a daemon thread rather than
the prometheus-client package: memifx already has every number in the stats
file, so the package would only add its own metric registry to keep in sync
plus a runtime dependency, for what is about 60 lines of formatting here.
(JSON needs no shaping: ``memifx show --json`` prints the reader's
descriptions as they are.)
"""
from __future__ import annotations

import collections
import logging
import re
import threading
from typing import Any, Callable, Dict, List, Optional, Tuple
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from memifx.stats import schema

log = logging.getLogger("memifx")

_NODE_LABELS = ("interface", "queue", "direction")

Labels = List[Tuple[str, object]]       # (label name, value), in output order
Sample = Tuple[Labels, float]           # labels and the value (int or float)


def _escape(v: object) -> str:
    return str(v).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _metric_name(key: object) -> str:
    name = re.sub(r"[^a-zA-Z0-9_]", "_", str(key)).strip("_").lower()
    return name[:-6] if name.endswith("_total") else name


class _Exposition:
    def __init__(self) -> None:
        # name -> (type, help text, samples)
        self.metrics: collections.OrderedDict[str, Tuple[str, str, List[Sample]]] = \
            collections.OrderedDict()

    def add(self, name: str, kind: str, help_text: str, labels: Labels, value: float) -> None:
        m = self.metrics.setdefault(name, (kind, help_text, []))
        m[2].append((labels, value))

    def text(self) -> str:
        lines = []
        for name, (kind, help_text, samples) in self.metrics.items():
            lines.append("# HELP %s %s" % (name, help_text))
            lines.append("# TYPE %s %s" % (name, kind))
            for labels, value in samples:
                body = ",".join('%s="%s"' % (k, _escape(v)) for k, v in labels)
                lines.append("%s{%s} %s" % (name, body, value) if body else
                             "%s %s" % (name, value))
        return "\n".join(lines) + "\n"


def prometheus_text(proc: Optional[Dict[str, Any]]) -> str:
    """The Prometheus text exposition of one process's description (from
    read_file or StatsFile.read)."""
    ex = _Exposition()
    if proc is None:
        return "# memifx: no statistics available\n"
    for intf in proc["interfaces"]:
        name = intf["name"]
        ex.add("memifx_link_up", "gauge", "1 while the memif link is up.",
               [("interface", name)], 1 if intf["state"] == "up" else 0)
        ex.add("memifx_link_flaps_total", "counter", "Times the link went down.",
               [("interface", name)], intf.get("link_flaps") or 0)
        ex.add("memifx_interface_info", "gauge", "Interface facts (value always 1).",
               [("interface", name), ("role", intf["role"]), ("mode", intf["mode"]),
                ("socket", intf["socket"]), ("id", intf["id"]), ("state", intf["state"]),
                ("peer", intf.get("peer_name") or "")], 1)
        for kind in ("rx", "tx"):
            for q in intf["queues"][kind]:
                labels = [("interface", name), ("queue", q["queue"]), ("direction", kind)]
                c = q["counters"]
                for counter in schema.QUEUE.counters:
                    if counter.metric is not None and counter.key in c:    # exported, present
                        ex.add(counter.metric, "counter", counter.help or "", labels,
                               c[counter.key])
                drops = schema.QUEUE_DROPS
                if drops.metric is not None:
                    for reason, n in c[schema.DROPS].items():
                        ex.add(drops.metric, "counter", drops.help or "",
                               labels + [("reason", reason)], n)
    for node in proc.get("nodes") or []:
        labels = [("node", node.get("node", ""))] + \
            [(k, node[k]) for k in _NODE_LABELS if node.get(k) is not None]
        for key, value in node.items():
            if key in ("node",) + _NODE_LABELS:
                continue
            if key == "drops" and isinstance(value, dict):
                for reason, n in value.items():
                    ex.add("memifx_node_drops_total", "counter",
                           "Frames a graph node dropped, by reason.",
                           labels + [("reason", reason)], n)
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                ex.add("memifx_node_%s_total" % _metric_name(key), "counter",
                       "Graph node counter %r." % key, labels, value)
    return ex.text()


class MetricsServer:
    """GET /metrics from a tiny threaded HTTP server in a daemon thread."""

    def __init__(self, port: int, source: Callable[[], str], host: str = "") -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?", 1)[0] != "/metrics":
                    self.send_error(404)
                    return
                try:
                    body = source().encode()
                except Exception:
                    log.exception("metrics: reading the counters failed")
                    self.send_error(500)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.2,),
                                       name="memifx-metrics", daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
