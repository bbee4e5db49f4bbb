"""Run a Python module with its new fds numbered high, for tests.

    python tests/highfd.py [--floor N] MODULE [ARGS...]

Raises the soft RLIMIT_NOFILE to 4096 (or the hard limit), then fills fd
numbers below ``--floor`` (default 1100) with placeholders, so that every fd
the module opens afterwards (sockets, received eventfds and memfds) is
numbered at or above it, out of select()'s reach (FD_SETSIZE 1024).  The
placeholders are close-on-exec, so child processes do not inherit them; a
child that is passed an fd (pass_fds) keeps its number.  ``--floor 0`` only
raises the limit.
"""
import os
import resource
import runpy
import sys

LIMIT = 4096


def main():
    args = sys.argv[1:]
    floor = 1100
    if args[:1] == ["--floor"]:
        floor, args = int(args[1]), args[2:]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = LIMIT if hard == resource.RLIM_INFINITY else min(LIMIT, hard)
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    fd = -1
    while fd < floor - 1:
        fd = os.open(os.devnull, os.O_RDONLY)
    sys.argv = args
    runpy.run_module(args[0], run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
