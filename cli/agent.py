"""memifx agent: run the management agent, validate a document, put one into
etcd, or read a running agent's state."""
import json
import signal
import sys
import threading
import urllib.error
import urllib.request

import click

DEFAULT_PREFIX = "/memifx/default/"


def _load_file(path):
    from memifx.agent.config import load, parse_text
    with open(path, "rb") as f:
        return load(parse_text(f.read(), path))


@click.group("agent", invoke_without_command=True)
@click.option("--config", "config_path", type=click.Path(dir_okay=False), metavar="FILE",
              help="The document (YAML or JSON); re-read when it changes and on SIGHUP.")
@click.option("--etcd", "etcd_url", metavar="URL",
              help="Take the document from etcd v3 at URL (e.g. http://etcd:2379).")
@click.option("--prefix", default=DEFAULT_PREFIX, show_default=True,
              help="With --etcd: the keys of this node (PREFIX/interfaces/NAME, ...).")
@click.option("--etcd-timeout", type=click.FloatRange(min=0.1), default=None,
              metavar="SECONDS",
              help="With --etcd: the longest wait for the answer to each request to etcd "
                   "(default 3).")
@click.option("--etcd-watch-idle", type=click.FloatRange(min=0.1), default=None,
              metavar="SECONDS",
              help="With --etcd: when the watch has heard nothing this long, ask etcd "
                   "whether it is alive; no answer within --etcd-timeout: disconnected, "
                   "then reconnect and resync.  /state shows a silent etcd after about "
                   "idle + timeout seconds (default 10).")
@click.option("--http-port", type=click.IntRange(0, 65535), default=None,
              help="Port of the HTTP API and probes (default: the document's "
                   "agent.http-port, else 9110; 0: none).")
@click.option("--http-bind", default=None, metavar="ADDR",
              help="Address of the HTTP API (default: the document's agent.http-bind, "
                   "else 127.0.0.1).")
@click.option("--check", is_flag=True,
              help="Only validate --config's document: print the error with the path of "
                   "the bad field and exit 1, or exit 0.")
@click.pass_context
def agent(ctx, config_path, etcd_url, prefix, etcd_timeout, etcd_watch_idle, http_port,
          http_bind, check):
    """Hold a declarative configuration (interfaces, xconnects, ip4 routers,
    gen/sink/echo endpoints) and apply it to this process's data plane by
    difference as it changes; serve /config, /state, /healthz, /readyz and
    /metrics over HTTP.  The document's format: ``pydoc memifx.agent.config``."""
    if ctx.invoked_subcommand:
        return
    from memifx.agent.config import ConfigError
    if bool(config_path) == bool(etcd_url):
        raise click.UsageError("give one of --config FILE or --etcd URL")
    if check:
        if not config_path:
            raise click.UsageError("--check validates --config FILE")
        try:
            cfg = _load_file(config_path)
        except (ConfigError, OSError) as e:
            click.echo("%s: %s" % (config_path, e), err=True)
            sys.exit(1)
        click.echo("%s: ok: %d interfaces, %d pipelines"
                   % (config_path, len(cfg.interfaces), len(cfg.pipelines)))
        return
    from memifx.agent.apply import ApplyError, DataplaneApplier
    from memifx.agent.main import run_agent
    from memifx.agent.store import EtcdSource, FileSource
    if config_path:
        source = FileSource(config_path)
    else:
        given = {"timeout": etcd_timeout, "watch_idle": etcd_watch_idle}
        source = EtcdSource(etcd_url, prefix, **{k: v for k, v in given.items() if v is not None})
    try:
        applier = DataplaneApplier()
    except ApplyError as e:
        raise click.ClickException(e.reason)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, frame: stop.set())
    try:
        run_agent(applier, source, stop, http_port, http_bind)
    except OSError as e:
        raise click.ClickException("HTTP API: %s" % (e.strerror or e))


@agent.command("status")
@click.option("--url", default="http://127.0.0.1:9110", show_default=True,
              help="The agent's HTTP API.")
@click.option("--json", "json_out", is_flag=True, help="Print /state as JSON.")
def status(url, json_out):
    """Desired vs applied, per item, of a running agent (its GET /state);
    exit 1 unless all is applied."""
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/state", timeout=5) as r:
            state = json.loads(r.read())
    except (OSError, ValueError) as e:
        raise click.ClickException("%s: %s" % (url, getattr(e, "reason", e)))
    if json_out:
        click.echo(json.dumps(state, indent=1, sort_keys=True))
    else:
        click.echo("source %s, generation %d, %s" % (
            state["source"], state["generation"],
            "in sync" if state["in_sync"] else "NOT in sync"))
        if state["document_error"]:
            click.echo("rejected: %s" % state["document_error"])
        for key, item in state["items"].items():
            mark = "ok" if item["in_sync"] else ("pending" if not item["error"] else "FAILED")
            line = "  %-28s %-8s" % (key, mark)
            if "up" in item:
                line += " link %s" % ("up" if item["up"] else "down")
            if item["error"]:
                line += "  %s" % item["error"]
            click.echo(line)
    sys.exit(0 if state["in_sync"] and not state["document_error"] else 1)


@agent.command("put")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("--etcd", "etcd_url", required=True, metavar="URL")
@click.option("--prefix", default=DEFAULT_PREFIX, show_default=True)
def put(path, etcd_url, prefix):
    """Validate the document at PATH and write it to etcd as one key per item
    under PREFIX (keys of items it lacks are deleted)."""
    import yaml
    from urllib.parse import urlsplit
    import etcd3gw
    from memifx.agent.config import ConfigError
    from memifx.agent.store import put_document
    try:
        _load_file(path)
    except (ConfigError, OSError) as e:
        raise click.ClickException("%s: %s" % (path, e))
    with open(path) as f:
        data = yaml.safe_load(f) or {}
    u = urlsplit(etcd_url if "://" in etcd_url else "http://" + etcd_url)
    c = etcd3gw.client(host=u.hostname, port=u.port or 2379, protocol=u.scheme)
    for key in put_document(c, prefix, data):
        click.echo(key)
