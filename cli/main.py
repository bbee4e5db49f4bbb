"""The memifx command line."""
import json
import logging
import os
import signal
import subprocess
import sys
import time

import click

import memifx
from memifx.cli.spec import SPEC
from memifx.cli.pump import Pump

CONTEXT = dict(help_option_names=["-h", "--help"])


@click.group(context_settings=CONTEXT)
@click.version_option(memifx.__version__, prog_name="memifx")
@click.option("-v", "--verbose", count=True, help="Log control-plane events (-vv: debug).")
def main(verbose):
    """memif interfaces (FD.io VPP / DPDK shared-memory packet interface) from the shell."""
    if verbose:
        logging.basicConfig(level=logging.INFO if verbose == 1 else logging.DEBUG,
                            format="%(asctime)s %(name)s %(message)s")


def _stop_on_signals():
    stop = {"flag": False}

    def handler(signum, frame):
        stop["flag"] = True
    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return stop


def _print_link(json_out):
    def cb(intf, up):
        if json_out:
            return
        if up:
            click.echo("%s: link up (peer %s)" % (intf.name, intf.info()["peer_name"]))
        else:
            click.echo("%s: link down (%s)" % (intf.name, intf.info()["last_disconnect"]))
    return cb


@main.command()
@click.argument("spec", type=SPEC)
@click.option("--duration", type=float, default=0, help="Seconds to run (0: until SIGINT/SIGTERM).")
@click.option("--json", "json_out", is_flag=True, help="Print one JSON object at exit.")
def echo(spec, duration, json_out):
    """Send every received frame back where it came from (rx queue i -> tx queue i mod n)."""
    stop = _stop_on_signals()
    intf = spec.interface()
    intf.on_link(_print_link(json_out))
    try:
        intf.connect()
    except memifx.MemifError as e:
        raise click.ClickException(e.reason)
    if not json_out:
        click.echo("%s: %s on %s id %d, echoing" % (intf.name, intf.role, intf.socket, intf.id))
    pump = Pump(intf, intf, interrupt=spec.rx_mode == "interrupt")
    start = time.monotonic()
    try:
        while not stop["flag"] and (not duration or time.monotonic() - start < duration):
            pump.run_once()
    finally:
        intf.close("echo stopped")
    if json_out:
        click.echo(json.dumps({"seconds": time.monotonic() - start, "interfaces": {
            intf.name: intf.stats()}, "dropped": pump.dropped}))


@main.command()
@click.option("--duration", type=float, default=5.0, show_default=True, help="Seconds of traffic.")
@click.option("--size", type=click.IntRange(60, 9000), default=64, show_default=True,
              help="Frame size in bytes.")
@click.option("--json", "json_out", is_flag=True, help="Print one JSON object at exit.")
def demo(duration, size, json_out):
    """Start a memifx echo master in a second process, connect a slave to it,
    push frames through the link and back, verify them, and print the rate."""
    from memifx.cli.demo import run_demo
    result = run_demo(duration, size, None if json_out else click.echo)
    if json_out:
        click.echo(json.dumps(result))
    if result["corrupt"] or not result["packets"]:
        sys.exit(1)


from memifx.cli.xconnect import xconnect  # noqa: E402
main.add_command(xconnect)


if __name__ == "__main__":
    main()
