"""memifx: memif, the shared-memory packet interface of FD.io VPP and DPDK, for Python.

    import memifx
    with memifx.Interface(socket="/run/memif.sock", role="slave") as intf:
        intf.wait_connected(5.0)
        intf.tx_burst([frame])
        frames = intf.rx_burst()

See memifx.interface for the threading rules, what calls do while the link is
down, how chained frames appear, and who drives the control socket.
"""
__version__ = "0.1.0"

try:
    from memifx import ring as _ring  # noqa: F401  (the compiled data path)
except ImportError as e:                                    # pragma: no cover
    raise ImportError(
        "memifx's compiled extension is not built (%s). Install the package with "
        "'pip install .' or build in place with 'python setup.py build_ext --inplace'."
        % e) from None

from memifx.errors import MemifError, LinkDown
from memifx.interface import Interface
from memifx.loop import ControlLoop, default_loop
from memifx.ring import Buffer, DEFAULT_MAX_FRAME, MAX_FRAME_SIZE

__all__ = ["Interface", "ControlLoop", "default_loop", "MemifError", "LinkDown",
           "Buffer", "MAX_FRAME_SIZE", "DEFAULT_MAX_FRAME"]
