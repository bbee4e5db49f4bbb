"""The memifx command line."""
import logging
import sys

import click

import memifx
from memifx.cli.spec import SPEC
from memifx.cli.common import (Stop, build_dataplane, emit_json, prometheus_option,
                               run_dataplane, start_pipeline, tester_worker_options)
from memifx.cli.gen import Ip4Type, MacType, SizeType, run_gen
from memifx.cli.sink import run_sink
from memifx.traffic import VERIFY_LEVELS

CONTEXT = dict(help_option_names=["-h", "--help"])


@click.group(context_settings=CONTEXT)
@click.version_option(memifx.__version__, prog_name="memifx")
@click.option("-v", "--verbose", count=True, help="Log control-plane events (-vv: debug).")
def main(verbose):
    """memif interfaces (FD.io VPP / DPDK shared-memory packet interface) from the shell."""
    if verbose:
        logging.basicConfig(level=logging.INFO if verbose == 1 else logging.DEBUG,
                            format="%(asctime)s %(name)s %(message)s")


@main.command()
@click.argument("spec", type=SPEC)
@click.option("--duration", type=float, default=0, help="Seconds to run (0: until SIGINT/SIGTERM).")
@click.option("--json", "json_out", is_flag=True, help="Print one JSON object at exit.")
@prometheus_option
def echo(spec, duration, json_out, prometheus_port):
    """Send every received frame back where it came from (rx queue i -> tx queue i mod n)."""
    name = spec.name or "memifx%d" % spec.id
    dp = build_dataplane(prometheus_port, json_out, [(name, spec)])
    stop = Stop(duration)
    p = start_pipeline(dp, "echo", "echo", [spec], json_out, interface=name)
    intf = dp.interfaces[name]
    if not json_out:
        click.echo("%s: %s on %s id %d, echoing" % (intf.name, intf.role, intf.socket, intf.id))
    run_dataplane(dp, stop, reason="echo stopped")
    if json_out:
        (counters,) = p.counters().values()
        emit_json({"seconds": stop.elapsed, "echo": counters,
                   "interfaces": {intf.name: intf.stats()}})


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
        emit_json(result)
    if result["corrupt"] or not result["packets"]:
        sys.exit(1)


VERIFY = click.option(
    "--verify", type=click.Choice(VERIFY_LEVELS), default="full", show_default=True,
    help="What the receiver checks in each frame: every byte (full: the payload gen "
         "announced in the stamp, pattern or zeros), headers and stamp (stamp), or the stamp "
         "alone (seq); each still counts loss, order, duplicates and latency.  Or none of "
         "it (count): frames and bytes are counted, as testpmd's rxonly does, and loss is "
         "what was sent less what arrived (what --payload fixed frames allow).")


@main.command()
@click.argument("spec", type=SPEC)
@click.option("--size", "sizes", type=SizeType(), default="64", show_default=True,
              metavar="64|1518|9000|imix",
              help="Frame size: 64, 1518, 9000, imix (7:4:1 of 64/570/1518) or a byte "
                   "count; L2 bytes without FCS (the IP packet on ip-mode interfaces).")
@click.option("--count", type=click.IntRange(0), default=0,
              help="Send exactly N frames, then stop (a full ring is back-pressure, "
                   "never loss).  0: no limit.")
@click.option("--duration", type=click.FloatRange(0), default=0,
              help="Seconds of traffic, counted from link up (0: no limit).")
@click.option("--rate", type=click.FloatRange(0), default=0,
              help="Frames per second (0: as fast as possible).")
@click.option("--flows", type=click.IntRange(1, 65536), default=1, show_default=True,
              help="Number of flows (UDP source ports); spread over the tx queues by a "
                   "hash of the flow.")
@click.option("--payload", type=click.Choice(["pattern", "zeros", "fixed"]), default="pattern",
              show_default=True,
              help="What follows the stamp: a pattern that lets the receiver check "
                   "every byte, or zeros (a load test: only headers and stamps are "
                   "written per frame, then the copy into the ring).  fixed: zeros and no "
                   "stamp either, the same frame again and again, as testpmd's txonly "
                   "sends; with --zero-copy as slave a buffer that holds one is sent as "
                   "it is, only its descriptor written.  Nothing can check such frames: "
                   "count them (--verify count, here with --receive or at the sink).")
@click.option("--zero-copy", is_flag=True,
              help="Write stamped frames straight into the ring's buffers (one pass per "
                   "frame) instead of copying them in from a staging buffer; with "
                   "--receive, check what comes back where it lies in the ring's "
                   "buffers, as sink --zero-copy does.")
@click.option("--src-mac", type=MacType(), help="Source MAC (default: the interface's).")
@click.option("--dst-mac", type=MacType(), help="Destination MAC (default: broadcast).")
@click.option("--src-ip", type=Ip4Type(), help="Source IPv4 (default: the spec's ip=, "
                                                "else 198.18.0.1).")
@click.option("--dst-ip", type=Ip4Type(), help="Destination IPv4 (default 198.19.0.1).")
@click.option("--dst-step", type=click.IntRange(0, 2**32 - 1), default=0,
              help="Give each flow a destination of its own: flow f's frames go to "
                   "--dst-ip + f x N (0: every flow to --dst-ip).  With --flows, spreads "
                   "the traffic over a router's routes, e.g. --flows 4096 --dst-step 256: "
                   "one address in each of 4096 consecutive /24s.")
@click.option("--pcap", "pcap_path", type=click.Path(exists=True, dir_okay=False),
              help="Replay this capture's frames unchanged (no stamps), in order on queue "
                   "0: once, or in a loop with --count/--duration.")
@click.option("--receive", "receive_spec", type=SPEC, metavar="SPEC2",
              help="Also receive on a second interface in this process and report "
                   "what the sink reports (lost, reordered, duplicated, corrupt, latency).")
@click.option("--capture", "capture_path", type=click.Path(dir_okay=False, writable=True),
              help="Write what arrives on SPEC (replies) to this pcap file.")
@VERIFY
@click.option("--stats-interval", type=click.FloatRange(0), default=0,
              help="Print rates every S seconds.")
@click.option("--json", "json_out", is_flag=True,
              help="Print one JSON object at exit (packets, bytes, seconds, mpps, gbps, ...).")
@tester_worker_options("generate (and, with --receive, check) the traffic, transmit queue q "
                       "in worker q mod N; --count and --rate are split between them",
                       "--pcap or --capture")
@prometheus_option
def gen(spec, sizes, count, duration, rate, flows, payload, zero_copy, src_mac, dst_mac, src_ip,
        dst_ip, dst_step, pcap_path, receive_spec, capture_path, verify, stats_interval, json_out,
        workers, cpus, prometheus_port):
    """Traffic generator: IPv4/UDP frames stamped with a sequence number per
    flow and a timestamp, a pattern (or zeros) over the rest of every frame;
    or a pcap replay.  Without --count or --duration it runs until SIGINT/SIGTERM.

    With --workers the frames are made and sent by worker processes, each
    owning some transmit queues (and the --receive queues of the same
    numbers); the report adds up theirs and is shaped as without."""
    run_gen(spec, sizes, count, duration, rate, flows, src_mac, dst_mac, src_ip, dst_ip,
            pcap_path, receive_spec, capture_path, stats_interval, json_out,
            prometheus_port=prometheus_port, payload=payload, verify=verify,
            workers=workers, cpus=cpus, zero_copy=zero_copy, dst_step=dst_step)


@main.command()
@click.argument("spec", type=SPEC)
@click.option("--duration", type=click.FloatRange(0), default=0,
              help="Seconds to run (0: until --count or SIGINT/SIGTERM).")
@click.option("--count", type=click.IntRange(0), default=0,
              help="Stop after N frames (0: no limit).")
@click.option("--pcap", "pcap_path", type=click.Path(dir_okay=False, writable=True),
              help="Capture every frame to this pcap file (link type Ethernet, or raw IP "
                   "on ip-mode interfaces).")
@click.option("--stats-interval", type=click.FloatRange(0), default=0,
              help="Print the receive rate every S seconds.")
@VERIFY
@click.option("--zero-copy", "zero_copy", is_flag=True,
              help="Check each frame where it lies in shared memory instead of copying "
                   "it out first (either role: nothing is written to the buffers); "
                   "not with --pcap, which copies every frame.")
@click.option("--json", "json_out", is_flag=True,
              help="Print one JSON object at exit (packets, bytes, seconds, mpps, gbps, "
                   "received, lost, reordered, duplicated, corrupt, latency_us, ...).")
@tester_worker_options("receive and check, receive queue q in worker q mod N; the report "
                       "adds up their results", "--pcap")
@prometheus_option
def sink(spec, duration, count, pcap_path, stats_interval, verify, zero_copy, json_out,
         workers, cpus, prometheus_port):
    """Receiver: checks each frame's stamp and its full payload and reports
    received, lost, reordered, duplicated, corrupt and latency percentiles
    (frames that are not gen's are counted as "other").

    Every frame is copied out of shared memory in full (rx_into) and then
    checked byte for byte (less with --verify stamp, seq or count): the
    measured rate includes that copy.  With --zero-copy each frame is checked
    in place instead, and only one the fast check does not take (chained,
    damaged, out of order) is copied.  With
    rx-mode=interrupt in SPEC the sink sleeps on the queue's eventfd when
    idle; in polling mode it busy-polls.  Sequence numbers start at 0 per
    flow: frames gen sent before the sink started count as lost.

    With --workers the receive queues are checked in worker processes and
    the report merges their checkers (counters, sequence windows, latency
    histograms); --count then stops the run once they have seen N frames
    together (they report twice a second, so a few more may be counted)."""
    run_sink(spec, duration, count, pcap_path, stats_interval, json_out,
             prometheus_port=prometheus_port, verify=verify, workers=workers, cpus=cpus,
             zero_copy=zero_copy)


from memifx.cli.xconnect import xconnect  # noqa: E402
main.add_command(xconnect)
from memifx.cli.ip4_forward import ip4_forward  # noqa: E402
main.add_command(ip4_forward)
from memifx.cli.show import show  # noqa: E402
main.add_command(show)
from memifx.cli.agent import agent  # noqa: E402
main.add_command(agent)


if __name__ == "__main__":
    main()
