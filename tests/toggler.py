"""A hostile peer's helper process: flips O_NONBLOCK on eventfds, nonstop.

The peer shares each ring eventfd's open file description with memifx, so
it can change the flags memifx's writes and reads see at any moment.  This
process receives the eventfds to torment over a SOCK_SEQPACKET socket (fd
in argv[1]; each message replaces the set, a message with no fds empties
it, EOF ends the process) and toggles O_NONBLOCK on them in a tight loop,
so that any "look at the flags, then write" check loses the race sooner or
later (it yields the CPU every 256 rounds, so that on a small
machine it races memifx instead of starving it).  It runs in its own process, as a real peer would, so the flipping
does not wait for this test process's GIL.  On exit it prints how many
flips it made.
"""
import fcntl
import os
import socket
import sys
import time


def main():
    sock = socket.socket(fileno=int(sys.argv[1]))
    sock.setblocking(False)
    fds, flips, n = [], 0, 0
    while True:
        if n % 256 == 0 or not fds:
            try:
                msg, got, _, _ = socket.recv_fds(sock, 16, 8)
            except BlockingIOError:
                if not fds:
                    time.sleep(0.0005)
            else:
                for fd in fds:
                    os.close(fd)
                fds = got
                if not msg:                     # EOF: the test is done
                    break
                sock.send(b"ok")               # the new set is in effect
            os.sched_yield()                    # racing, not starving, on 2 CPUs
        n += 1
        for fd in fds:
            fl = fcntl.fcntl(fd, fcntl.F_GETFL)
            fcntl.fcntl(fd, fcntl.F_SETFL, fl ^ os.O_NONBLOCK)
            flips += 1
    print("FLIPS %d" % flips, flush=True)


if __name__ == "__main__":
    main()
