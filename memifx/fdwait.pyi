"""Type stubs for memifx.fdwait (compiled): poll() on a list of fds, GIL released."""
from collections.abc import Sequence

def wait_readable(fds: Sequence[int], timeout: float | None = ...) -> list[int]: ...
