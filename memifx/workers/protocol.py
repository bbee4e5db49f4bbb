"""The message protocol between the main process and a worker.

Each worker is connected to the main process by a SOCK_SEQPACKET
socketpair.  A message is a JSON object (``op`` says what it is) and a list
of fds, which travel as SCM_RIGHTS.  One message may need more fds than the
kernel passes at once (SCM_MAX_FD, 253: a link with many regions or queues)
or more bytes than one datagram should carry, so each goes out as one or
more parts: each part is one datagram, the PART header (index, count) then
up to PART_BYTES of the text, with up to PART_FDS of the fds.  The sender
writes all parts of a message back to back under its lock; a sender that
fails half way sends a part with count 0 (abort), so the receiver drops what
it has instead of waiting.

A message that arrives incomplete (fds truncated, a part missing, aborted or
cut short by another) is a HandoffError and its fds are closed; an attach
that fails this way in either process fails that link with a reason instead
of leaving it up with nobody serving it (memifx.workers.pool and .loop).

The ops: main -> worker ``plan`` (first, once), ``attach``, ``detach``,
``rx_mode``, ``report``, ``sync``, ``stop`` and whatever a node kind adds
(``finish``);
worker -> main ``counters``, ``detached``, ``fault``, ``synced`` and what a
node kind adds (``arp``).
"""
import array
import errno
import json
import os
import socket
import struct
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

from memifx.fdwait import wait_readable

PART = struct.Struct("<II")
PART_FDS = 253              # SCM_MAX_FD: more in one sendmsg is EINVAL
PART_BYTES = 32 << 10
PART_WAIT = 1.0             # seconds the receiver waits for the next part
DEAD_PEER = (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN)     # the other process died

Message = Dict[str, Any]    # one message: a JSON object, ``op`` says what it is


class HandoffError(Exception):
    """A message arrived incomplete (its fds truncated, a part missing or
    aborted).  Its fds are closed; ``msg`` is the message if its text was
    whole (so the receiver knows which link it was about), else None."""

    def __init__(self, reason: str, msg: Optional[Message] = None) -> None:
        super().__init__(reason)
        self.reason, self.msg = reason, msg


def send(sock: socket.socket, msg: Mapping[str, Any], fds: Iterable[int] = ()) -> None:
    """Send ``msg`` and ``fds`` in as many parts as they need.  The caller
    holds whatever lock keeps other writers of ``sock`` out meanwhile."""
    data = json.dumps(msg).encode()
    fds = list(fds)
    count = max(1, -(-len(data) // PART_BYTES), -(-len(fds) // PART_FDS))
    for i in range(count):
        chunk = fds[i * PART_FDS:(i + 1) * PART_FDS]
        anc = ([(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", chunk))]
               if chunk else [])
        try:
            sock.sendmsg([PART.pack(i, count), data[i * PART_BYTES:(i + 1) * PART_BYTES]],
                         anc)
        except OSError:
            if i:
                try:
                    sock.send(PART.pack(0, 0))
                except OSError:
                    pass                # a dead socket: nobody waits for the rest
            raise


def _recv_part(sock: socket.socket,
               flags: int) -> Optional[Tuple[int, int, bytes, List[int], bool]]:
    """(index, count, text, fds, truncated) of one part, or None on EOF."""
    data, anc, mflags, _ = sock.recvmsg(PART.size + PART_BYTES,
                                        socket.CMSG_SPACE(PART_FDS * 4),
                                        flags | socket.MSG_CMSG_CLOEXEC)
    fds: List[int] = []
    for level, kind, payload in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            a = array.array("i")
            a.frombytes(payload[:len(payload) - len(payload) % a.itemsize])
            fds.extend(a)
    if not data:
        close_fds(fds)
        return None
    truncated = bool(mflags & (socket.MSG_CTRUNC | socket.MSG_TRUNC)) or len(data) < PART.size
    if len(data) < PART.size:
        return 0, 1, b"", fds, True
    index, count = PART.unpack_from(data)
    return index, count, data[PART.size:], fds, truncated


def recv(sock: socket.socket, flags: int = 0) -> Tuple[Optional[Message], List[int]]:
    """One message and its fds, or (None, []) on EOF; BlockingIOError if none
    (with MSG_DONTWAIT).  HandoffError if it arrived incomplete."""
    part = _recv_part(sock, flags)
    if part is None:
        return None, []
    index, count, text, fds, truncated = part
    texts = [text]
    problem: Optional[str] = None
    if count == 0:
        problem = "message aborted by its sender"
    elif index != 0:
        problem = "stray part %d of %d" % (index + 1, count)
    try:
        while problem is None and len(texts) < count:
            if not wait_readable([sock.fileno()], PART_WAIT):
                part = None
            else:
                part = _recv_part(sock, socket.MSG_DONTWAIT)
            if part is None:
                problem = "message incomplete (%d of %d parts)" % (len(texts), count)
                break
            index, count_i, text, more, cut = part
            fds.extend(more)
            truncated |= cut
            if count_i != count or index != len(texts):
                problem = "message cut short by another (%d of %d parts)" % (len(texts), count)
            else:
                texts.append(text)
    except OSError as e:
        problem = "message incomplete: %s" % (e.strerror or e)
    except BaseException:
        close_fds(fds)
        raise
    if problem is not None:
        close_fds(fds)
        raise HandoffError(problem)
    try:
        msg: Message = json.loads(b"".join(texts))
    except ValueError:
        close_fds(fds)
        raise HandoffError("message unreadable") from None
    if truncated:
        close_fds(fds)
        raise HandoffError("fds truncated (MSG_CTRUNC)", msg)
    return msg, fds


def close_fds(fds: Iterable[int]) -> None:
    """Close every fd in ``fds`` (those a message brought and nobody took)."""
    for fd in fds:
        os.close(fd)
