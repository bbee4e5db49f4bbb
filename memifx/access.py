"""Who may use an interface: peer credentials and the allow lists.

The kernel tells each end of a Unix socket who the other end is
(SO_PEERCRED: pid, uid and primary gid; SO_PEERGROUPS: the supplementary
groups; taken when the peer called connect() or listen(), so a peer cannot
lie about them).  An interface with ``allow_uid`` and/or ``allow_gid`` admits
a peer whose uid is in the first list or one of whose groups (primary or
supplementary) is in the second; with neither list every peer is admitted
(the socket file's owner and mode, or for an abstract socket nothing at all,
are then the only gate).  Ids are numbers or user/group names, looked up
once when the interface is made.

A master checks the slave that connected, a slave the master it reached
(an abstract socket name can be taken by anyone in the network namespace).
"""
from __future__ import annotations

import array
import grp
import pwd
import socket
import struct
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple, Union


class Creds(NamedTuple):
    """A peer process as the kernel saw it; ``groups``: the supplementary
    groups, () when the kernel could not say."""
    pid: int
    uid: int
    gid: int
    groups: tuple[int, ...]


# An id as given: a number, or a user/group name (or digits) as a string.
Id = Union[int, str]
# allow_uid / allow_gid as given to Interface (see id_list).
IdList = Union[Id, Iterable[Id], None]
# owner as given to Interface (see owner).
Owner = Union[str, tuple[Union[Id, None], Union[Id, None]], None]

_UCRED = struct.Struct("=iII")
SO_PEERGROUPS = getattr(socket, "SO_PEERGROUPS", 59)        # Linux >= 4.13
_GROUPS_BYTES = 1024                # the most socket.getsockopt reads: 256 groups

# The only reason a peer refused for who it is, for a wrong or missing
# secret, or for an interface id that does not exist ever hears: a stranger
# learns neither which ids exist nor whether one wants a secret.  The precise
# cause goes to the local log and the refusal counters.
NOT_ALLOWED = "peer not allowed"

ID_MAX = 0xFFFFFFFE                     # (u32)-1 means "unchanged" to chown


def peer_creds(sock: socket.socket) -> Creds:
    """The credentials of the process at the other end of a Unix socket."""
    pid, uid, gid = _UCRED.unpack(
        sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, SO_PEERGROUPS, _GROUPS_BYTES)
        groups = tuple(array.array("I", raw[:len(raw) - len(raw) % 4]))
    except OSError:                 # an old kernel, or more than 256 groups
        groups = ()
    return Creds(pid, uid, gid, groups)


def _id(v: Id, what: str, lookup: Callable[[str], int]) -> int:
    """A numeric id, or a name resolved with ``lookup`` (pwd/grp)."""
    if isinstance(v, str) and not v.strip().isdigit():
        try:
            return lookup(v.strip())
        except KeyError:
            raise ValueError("%s: no such name %r" % (what, v))
    try:
        n = int(v)
    except (TypeError, ValueError):
        raise ValueError("%s: %r is not an id" % (what, v))
    if not 0 <= n <= ID_MAX:
        raise ValueError("%s: %d out of range 0..%d" % (what, n, ID_MAX))
    return n


def _uid(name: str) -> int:
    return pwd.getpwnam(name).pw_uid


def _gid(name: str) -> int:
    return grp.getgrnam(name).gr_gid


def id_list(value: IdList, what: str) -> frozenset[int] | None:
    """allow_uid / allow_gid as given to Interface: None, an int, an iterable
    of ids, or a string of ids separated by ':' (the spec-key form); an id
    is a number or a user (allow_uid) / group (allow_gid) name."""
    if value is None:
        return None
    if isinstance(value, str):
        items: list[Id] = [v for v in value.split(":") if v.strip()]
    elif isinstance(value, int):
        items = [value]
    else:
        items = list(value)
    lookup = _gid if "gid" in what else _uid
    ids = [_id(v, what, lookup) for v in items]
    if not ids:
        raise ValueError("%s: empty list (leave it unset to admit everyone)" % what)
    return frozenset(ids)


def owner(value: Owner) -> tuple[int, int] | None:
    """``owner`` for the socket file: None, (uid, gid) or "uid[:gid]" (ids or
    names); a part left out (None or empty) is not changed.  Returns
    (uid, gid) with -1 for unchanged."""
    if value is None:
        return None
    if isinstance(value, str):
        u, _, g = value.partition(":")
        value = (u or None, g or None)
    try:
        uid, gid = value
    except (TypeError, ValueError):
        raise ValueError("owner must be uid:gid, not %r" % (value,))
    out: list[int] = []
    for what, v, lookup in (("uid", uid, _uid), ("gid", gid, _gid)):
        out.append(-1 if v is None else _id(v, "owner " + what, lookup))
    if out == [-1, -1]:
        raise ValueError("owner: give a uid, a gid or both")
    return out[0], out[1]


def perm(value: int | str | None) -> int | None:
    """``perm`` for the socket file: an int (0o660) or an octal string ("0660")."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = int(value, 8)
        except ValueError:
            raise ValueError("perm must be octal, e.g. 0660, not %r" % value)
    if not isinstance(value, int) or not 0 <= value <= 0o7777:
        raise ValueError("perm must be 0 to 07777 (octal)")
    return value


class Policy:
    """An interface's allow lists; ``admits(creds)`` is the whole decision."""

    def __init__(self, allow_uid: IdList = None, allow_gid: IdList = None) -> None:
        self.uids = id_list(allow_uid, "allow_uid")
        self.gids = id_list(allow_gid, "allow_gid")

    @property
    def open(self) -> bool:
        """True when no list is set: every peer is admitted."""
        return self.uids is None and self.gids is None

    def admits(self, creds: Creds | None) -> bool:
        """Unknown credentials (None) pass only where no list is set."""
        if self.open:
            return True
        if creds is None:
            return False
        return (self.uids is not None and creds.uid in self.uids) or \
            (self.gids is not None and not self.gids.isdisjoint((creds.gid,) + creds.groups))

    def describe(self) -> dict[str, list[int] | None]:
        """For info(): the lists as sorted lists (None when unset)."""
        return {"allow_uid": sorted(self.uids) if self.uids is not None else None,
                "allow_gid": sorted(self.gids) if self.gids is not None else None}


def describe_peer(creds: Creds | None) -> str:
    """For logs: who a peer is."""
    return "pid %d uid %d gid %d" % creds[:3] if creds else "unknown peer"


def as_dict(creds: Creds | None) -> dict[str, Any] | None:
    """For info(): pid, uid, gid and the supplementary groups as a list."""
    return dict(creds._asdict(), groups=list(creds.groups)) if creds else None

