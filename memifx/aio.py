"""asyncio helper: await the next burst of a queue in interrupt mode.

    frames = await memifx.aio.recv(intf, queue=0)

The queue is switched to interrupt mode; the coroutine sleeps on its eventfd
(re-armed after every reconnect, since each link has its own fds) with a short
backstop timeout, and returns the first non-empty burst.
"""
from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from memifx.interface import Interface

BACKSTOP = 0.1        # seconds: re-check the ring even if no signal came


async def recv(intf: Interface, queue: int = 0, max: int = 256,
               timeout: float | None = None) -> list[bytes]:
    """The next non-empty list of frames; TimeoutError after ``timeout`` s."""
    loop = asyncio.get_running_loop()
    intf.set_rx_mode("interrupt", queue)
    start = time.monotonic()
    while True:
        frames = intf.rx_burst(queue, max)
        if frames:
            return frames
        wait = BACKSTOP
        if timeout is not None:
            left = start + timeout - time.monotonic()
            if left <= 0:
                raise TimeoutError("no frames within %.3f s" % timeout)
            wait = min(wait, left)
        fd = intf.rx_fd(queue)
        if fd is None:                       # link down: nothing to wait on yet
            await asyncio.sleep(min(wait, 0.01))
            continue
        woken: asyncio.Future[None] = loop.create_future()

        def wake() -> None:
            if not woken.done():
                woken.set_result(None)
        loop.add_reader(fd, wake)
        try:
            # MASK_INT is clear and fenced; anything published before that
            # shows here, anything after it signals the fd.
            if not intf.rx_pending(queue):
                await asyncio.wait_for(woken, wait)
        except asyncio.TimeoutError:
            pass
        finally:
            loop.remove_reader(fd)
        intf.rx_ack(queue)
