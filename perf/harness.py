"""The perf suite's harness: processes pinned to CPUs, the scratch session of one
trial, rate samplers over the processes' output, the trial window and the rounds
of trials.

Every measured program is a separate process in its own session, so one kill of
its process group takes its workers too.  Busy pollers are pinned before exec
(CPU 0: the generator or tester, CPU 1: the sink or DUT), so every thread and
child starts on its CPU: two pollers on one CPU would measure the scheduler.
(The N-queue cells pin through the commands' --cpus and testpmd's -l instead:
perf/cpuplan.py.)
Rates are read from what the receivers print once a second (memifx's Ticker
lines, testpmd's port statistics), not timed by the harness: starting and
stopping processes takes longer and varies more than one interval.
"""
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PY = sys.executable
MEMIFX = [PY, "-m", "memifx.cli.main"]
TESTER_CPU, DUT_CPU = 0, 1
SINK_CPU = 2        # the DUT cells' receiving tester, where the machine has it
# Ring slots and buffer size of every measured interface, memifx and testpmd.
RING, BUF = 1024, 2048
FAILURES_LOG = "failures.log"


def log(*a):
    """Progress for the person running the suite: stderr, so stdout is the table."""
    print(*a, file=sys.stderr, flush=True)


def spec(sock, **kw):
    """A memifx CLI interface spec on ``sock`` with the suite's ring and buffer
    sizes unless ``kw`` says otherwise (keys as the CLI spells them)."""
    kw.setdefault("ring-size", RING)
    kw.setdefault("buffer-size", BUF)
    return ",".join(["socket=" + sock] + ["%s=%s" % (k, v) for k, v in kw.items()])


# ------------------------------------------------------------------ processes

class Proc:
    """A process in its own session, pinned to ``cpus``, whose stdout lines
    (stderr merged) are collected with their arrival times by a thread."""

    def __init__(self, args, cpus=None, env=None, stdin=False):
        e = dict(os.environ, PYTHONUNBUFFERED="1")
        e.update(env or {})
        self.args = args
        # pinned before exec, so every thread and child starts on its CPU
        pin = (lambda: os.sched_setaffinity(0, set(cpus))) if cpus is not None else None
        # stdin=True: a pipe for commands (send()), as testpmd -i reads them
        self.p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  stdin=subprocess.PIPE if stdin else None,
                                  text=True, start_new_session=True, env=e, cwd=ROOT,
                                  preexec_fn=pin)
        self.lines = []
        self.cond = threading.Condition()
        self.t = threading.Thread(target=self._read, daemon=True)
        self.t.start()

    def _read(self):
        for line in self.p.stdout:
            with self.cond:
                self.lines.append((time.monotonic(), line.rstrip("\n")))
                self.cond.notify_all()
        with self.cond:
            self.cond.notify_all()

    def send(self, line):
        """Write one command line to the process's stdin (started with stdin=True)."""
        self.p.stdin.write(line + "\n")
        self.p.stdin.flush()

    def output_lines(self):
        """A snapshot of the lines so far, without their times."""
        with self.cond:
            return [l for _, l in self.lines]

    def wait_line(self, pattern, timeout):
        """The first output line matching ``pattern``; RuntimeError with the
        process's last output when none came within ``timeout`` seconds or the
        process ended without one."""
        rx = re.compile(pattern)
        end = time.monotonic() + timeout
        with self.cond:
            while True:
                for _, l in self.lines:
                    if rx.search(l):
                        return l
                left = end - time.monotonic()
                if left <= 0 or (self.p.poll() is not None and not self.t.is_alive()):
                    raise RuntimeError("%s: no %r in %.0f s; output:\n%s" % (
                        os.path.basename(self.args[0]) + " " + " ".join(self.args[1:4]),
                        pattern, timeout, self.text()[-3000:]))
                self.cond.wait(min(left, 0.2))

    def pin_threads(self, cpus):
        """Pin the process's own threads (not its children) to ``cpus``: for a
        command whose --cpus must be CPUs it may use at start, and whose
        main process is moved out of its workers' way once they run."""
        for tid in os.listdir("/proc/%d/task" % self.p.pid):
            try:
                os.sched_setaffinity(int(tid), set(cpus))
            except (ProcessLookupError, FileNotFoundError):
                pass            # a thread that ended meanwhile

    def text(self):
        with self.cond:
            return "\n".join(l for _, l in self.lines)

    def stop(self, timeout=10):
        """SIGTERM to the process, which stops its own workers and reports;
        SIGKILL to its process group after ``timeout``, and to whatever of
        the group outlives it.  Its whole output."""
        if self.p.poll() is None:
            try:
                os.kill(self.p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.p.wait(5)
        self.t.join(5)
        return self.text()


class Session:
    """Processes and scratch files of one trial; everything goes at exit.  A
    trial that raises appends what every process said to ``failures.log`` in
    ``results_dir``, so a failed cell can be read after the suite goes on."""

    def __init__(self, results_dir):
        self.results_dir = results_dir
        self.dir = tempfile.mkdtemp(prefix="mxperf-", dir="/tmp")
        self.procs = []
        self.prefixes = []

    def sock(self, name):
        return os.path.join(self.dir, name + ".sock")

    def start(self, args, cpus=None, stdin=False):
        p = Proc(args, cpus, stdin=stdin)
        self.procs.append(p)
        return p

    def testpmd(self, vdevs, fwd, cpus="0,1", main_lcore=None, extra=(), wrap=(),
                lcores=None, interactive=False, pin=None):
        """dpdk-testpmd without hugepages or PCI, in a file prefix of its own
        (removed at close), forwarding ``fwd`` and printing port statistics
        once a second; or, ``interactive``, waiting for commands on stdin
        (Proc.send: start, stop, quit).  ``wrap``: a command it runs under
        (valgrind ...); ``lcores``: an EAL --lcores map instead of -l ``cpus``;
        ``pin``: the CPUs the whole process may use (EAL's own threads too)."""
        prefix = "mxperf" + uuid.uuid4().hex[:8]
        self.prefixes.append(prefix)
        args = list(wrap) + ["dpdk-testpmd", "--no-huge", "-m", "128", "--no-pci",
                             "--file-prefix=" + prefix]
        args += ["--lcores=" + lcores] if lcores else ["-l", cpus]
        if main_lcore is not None:
            args += ["--main-lcore", str(main_lcore)]
        args += ["--vdev=" + v for v in vdevs]
        args += ["--", "--forward-mode=" + fwd, "--total-num-mbufs=16384"]
        args += ["-i"] if interactive else ["--auto-start", "--stats-period", "1"]
        return self.start(args + list(extra), pin, stdin=interactive)

    def close(self):
        for p in reversed(self.procs):
            p.stop()
        for prefix in self.prefixes:
            shutil.rmtree("/var/run/dpdk/" + prefix, ignore_errors=True)
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, etype, exc, tb):
        if etype is not None:
            # keep what every process said, for the failure log
            for p in self.procs:
                p.stop()
            with open(os.path.join(self.results_dir, FAILURES_LOG), "a") as f:
                f.write("=== %s: %s\n" % (time.strftime("%H:%M:%S"), exc))
                for p in self.procs:
                    f.write("--- %s (rc %s)\n%s\n" % (" ".join(p.args[:5]), p.p.returncode,
                                                      p.text()[-2000:]))
        self.close()


# ------------------------------------------------------------------ sampling

def memifx_samples(proc, name):
    """Per-interval Mpps samples of one name from a memifx Ticker line."""
    rx = re.compile(r"(?:^|\s)%s\s+([\d.]+) Mpps" % re.escape(name))
    out = []
    for l in proc.output_lines():
        m = rx.search(l)
        if m:
            out.append(float(m.group(1)))
    return out


def testpmd_samples(proc, port, key="Rx-pps"):
    """Per-stats-period samples of one port's ``key`` from testpmd's NIC
    statistics, in millions (Mpps for Rx-pps)."""
    out, cur = [], None
    for l in proc.output_lines():
        m = re.search(r"NIC statistics for port (\d+)", l)
        if m:
            cur = int(m.group(1))
            continue
        m = re.search(r"%s:\s+(\d+)" % key, l)
        if m and cur == port:
            out.append(int(m.group(1)) / 1e6)
    return out


def wait_window(sampler, warm, trial, timeout):
    """Wait until traffic flows, then for warm + trial samples after that;
    returns the mean of the trial samples (the warm-up ones discarded) and
    all samples."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        s = sampler()
        first = next((i for i, v in enumerate(s) if v > 0.001), None)
        # the first non-zero sample is a partial interval: skip it too
        if first is not None and len(s) >= first + 1 + warm + trial:
            w = s[first + 1 + warm:first + 1 + warm + trial]
            return sum(w) / len(w), s
        time.sleep(0.2)
    raise RuntimeError("no %d rate samples within %.0f s: %r" % (warm + trial, timeout, sampler()))


# ------------------------------------------------------------------ trials

def run_trial(cfg, name, size, fn, k):
    """Trial ``k`` of one cell: its result dict, or the error text after a
    second failed attempt (a trial that fails to start is retried once)."""
    err = None
    for attempt in range(2):
        try:
            r = fn(cfg, size)
        except Exception as e:      # a failed cell is reported, the suite goes on
            err = "%s: %s" % (type(e).__name__, str(e).splitlines()[0] if str(e) else "")
            log("%s %s trial %d attempt %d: %s (see %s)" % (
                name, size, k + 1, attempt + 1, err[:200],
                os.path.join(cfg.out, FAILURES_LOG)))
            continue
        r["attempts"] = attempt + 1
        log("%s %s trial %d: %s" % (name, size, k + 1, {
            k2: (round(v, 3) if isinstance(v, float) else v)
            for k2, v in r.items() if k2 != "samples"}))
        return r
    return err


def run_rounds(cfg, cells):
    """Run ``cfg.trials`` trials of every (name, size, fn) cell in rounds:
    trial k of every cell before trial k + 1 of any, so that a slow drift of
    the host (a neighbour's load) falls on memifx and testpmd alike instead of
    on whichever ran during it.  A cell that failed twice in one round is not
    tried again.  No trial starts after ``cfg.stop_at`` (time.monotonic(), if
    set): the cells keep the trials they got.  Returns ({(name, size):
    [result]}, {(name, size): error})."""
    trials = {(name, size): [] for name, size, _ in cells}
    errors = {}
    stop_at = getattr(cfg, "stop_at", None)
    for k in range(cfg.trials):
        for name, size, fn in cells:
            if (name, size) in errors:
                continue
            if stop_at is not None and time.monotonic() >= stop_at:
                log("time budget spent: no more trials (round %d of %d)" % (k + 1, cfg.trials))
                return trials, errors
            r = run_trial(cfg, name, size, fn, k)
            if isinstance(r, str):
                errors[(name, size)] = r
                continue
            trials[(name, size)].append(r)
    return trials, errors
