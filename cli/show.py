"""``memifx show``: every running memifx process on this host, from the stats
files they keep (memifx/stats/); the processes are not asked anything."""
import time

import click

from memifx import stats
from memifx.stats import schema
from memifx.wire import printable
from memifx.cli.common import emit_json

# The counter columns are schema.QUEUE's entries that name one, in its order.
COUNTER_COLUMNS = tuple(e for e in schema.QUEUE.entries if e.column)
QUEUE_COLUMNS = ("INTERFACE", "QUEUE", "DIR") + tuple(e.column for e in COUNTER_COLUMNS) + \
    ("RX-MODE", "WORKER", "CPU")


def table(header, rows, indent="  "):
    # cells may hold peer strings: printed only in printable form, whatever
    # the stats file holds
    rows = [[("-" if v is None else printable(str(v))) for v in r] for r in rows]
    widths = [max(len(str(h)), *(len(r[i]) for r in rows)) if rows else len(str(h))
              for i, h in enumerate(header)]
    out = []
    for r in [list(header)] + rows:
        out.append(indent + "  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip())
    return out


def _counter_cell(c, entry):
    if isinstance(entry, schema.Drops):
        return sum((c.get(schema.DROPS) or {}).values())
    return c.get(entry.key)


def _queue_row(name, queue, kind, c, q=None):
    q = q or {}
    return [name, queue, kind] + [_counter_cell(c, e) for e in COUNTER_COLUMNS] + \
        [q.get("rx_mode") if kind == "rx" else None, q.get("worker"), q.get("cpu")]


def _uptime(started):
    s = max(0, int(time.time() - started))
    return "%dd %02d:%02d:%02d" % (s // 86400, s // 3600 % 24, s // 60 % 60, s % 60) \
        if s >= 86400 else "%02d:%02d:%02d" % (s // 3600, s // 60 % 60, s % 60)


def _node_line(n):
    labels = " ".join(str(n[k]) if k != "queue" else "q%s" % n[k]
                      for k in ("interface", "queue", "direction") if n.get(k) is not None)
    keys = [k for k in ("packets", "bytes") if k in n] + \
        [k for k in n if k not in ("node", "interface", "queue", "direction", "drops",
                                   "packets", "bytes")]
    nums = ["%s %s" % (k, n[k]) for k in keys]
    drops = ["%s %d" % (r, v) for r, v in (n.get("drops") or {}).items() if v]
    text = "%s%s: %s" % (n.get("node"), " " + labels if labels else "", ", ".join(nums) or "-")
    if n.get("drops") is not None:
        text += "; drops: %s" % (", ".join(drops) or "none")
    return text


def _peer_ids(peer):
    """The peer process as pid/uid/gid (SO_PEERCRED), or None."""
    return "%s/%s/%s" % (peer["pid"], peer["uid"], peer["gid"]) if peer else None


def _refusals(proc):
    """'name cause: n' for each interface's refusals, and each socket's
    (peers refused before naming an interface) once per socket."""
    out, sockets = [], set()
    for i in proc["interfaces"]:
        for cause, n in sorted((i.get("refused") or {}).items()):
            out.append("%s %s: %d" % (i["name"], cause, n))
        if i.get("socket_refused") and i["socket"] not in sockets:
            sockets.add(i["socket"])
            for cause, n in sorted(i["socket_refused"].items()):
                out.append("socket %s %s: %d" % (i["socket"], cause, n))
    return out
def _listener_lines(proc):
    """One line per listening socket: connection limits at work."""
    seen = set()
    for i in proc["interfaces"]:
        ls = i.get("listener")
        if not ls or i["socket"] in seen:
            continue
        seen.add(i["socket"])
        yield ("  listener %s: %d connections (%d in handshake); evicted %d, refused %d, "
               "INIT timeouts %d, regions refused %d, accept backoffs %d%s"
               % (i["socket"], ls["connections"], ls["handshakes"], ls["evicted"],
                  ls["refused"], ls["init_timeouts"], ls["regions_refused"],
                  ls["accept_backoffs"], "" if ls["accepting"] else "; paused: out of fds"))


def lines(proc):
    yield "pid %d, up %s: %s" % (proc["pid"], _uptime(proc["started"]),
                                 printable(str(proc["command"])))
    rows = []
    for i in proc["interfaces"]:
        conf = i.get("configured") or {}
        queues = "%s/%s" % (i["rx_queues"], i["tx_queues"]) if i.get("rx_queues") is not None \
            else "(%s/%s)" % (conf.get("rx_queues"), conf.get("tx_queues"))
        rows.append([i["name"], i["role"], i["mode"], i["state"], i.get("peer_name"),
                     _peer_ids(i.get("peer")), queues, i.get("link_flaps"),
                     sum((i.get("refused") or {}).values()),
                     "%s id %s" % (i["socket"], i["id"])])
    yield from table(("INTERFACE", "ROLE", "MODE", "STATE", "PEER", "PID/UID/GID",
                      "QUEUES RX/TX", "FLAPS", "REFUSED", "SOCKET"), rows)
    for r in _refusals(proc):
        yield "  refused  " + printable(r)
    for i in proc["interfaces"]:
        if i.get("memory_faults"):
            yield "  memory faults  %s: %d (peer truncated shared memory)" % (
                printable(i["name"]), i["memory_faults"])
    yield from _listener_lines(proc)
    yield ""
    rows, drops = [], []
    for i in proc["interfaces"]:
        for kind in ("rx", "tx"):
            qs = i["queues"][kind]
            for q in qs:
                rows.append(_queue_row(i["name"], q["queue"], kind, q["counters"], q))
                for reason, n in q["counters"][schema.DROPS].items():
                    if n:
                        drops.append("%s %s%d %s: %d" % (i["name"], kind, q["queue"], reason, n))
            if len(qs) > 1:
                rows.append(_queue_row(i["name"], "all", kind, i["totals"][kind]))
    if rows:
        yield from table(QUEUE_COLUMNS, rows)
    for d in drops:
        yield "  drop  " + d
    if proc.get("nodes"):
        yield ""
        for n in proc["nodes"]:
            yield "  node  " + _node_line(n)


@click.command()
@click.option("--json", "json_out", is_flag=True, help="Print one JSON object.")
def show(json_out):
    """Every running memifx process on this host: its interfaces (link state,
    peer, queues, rx mode, worker and CPU) and counters (per queue and in
    total, drops by reason, link flaps, mode switches, node counters).

    Read from the stats files the processes keep in $MEMIFX_STATS_DIR, else
    /run/memifx (root) or $XDG_RUNTIME_DIR/memifx; files of processes that
    are gone are removed."""
    d = stats.stats_dir()
    procs = stats.scan(d)
    if json_out:
        emit_json({"dir": d, "processes": procs})
        return
    if not procs:
        click.echo("no running memifx processes (%s)" % d)
        return
    for k, p in enumerate(procs):
        if k:
            click.echo("")
        for line in lines(p):
            click.echo(line)
