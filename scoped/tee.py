"""One streamed request body sent to several sites at once (``&`` uploads).

The body is read once and each chunk is handed to every branch still
listening, through a queue of :data:`DEPTH` chunks: memory stays constant
(branches x DEPTH x chunk size, whatever the body's size) and the body moves
at the pace of the slowest branch. A branch whose call ended (its site
answered early, failed, or broke off) is :meth:`detached <Tee.detach>` and
never holds the others back. A failure reading the body (the client went
away) reaches every branch still listening.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

DEPTH = 2
"""Chunks a branch may lag behind the fastest one."""

_END = object()


class Tee:
    """``n`` streams of one body; :meth:`branch` ``i`` is read by one site call."""

    def __init__(self, source: AsyncIterator[bytes], n: int) -> None:
        self._source = source
        self._queues: list[asyncio.Queue[object]] = [asyncio.Queue(DEPTH) for _ in range(n)]
        self._live = [True] * n
        self._pump: asyncio.Task[None] | None = None

    async def branch(self, i: int) -> AsyncIterator[bytes]:
        """The body as branch ``i`` reads it. The first branch to read starts
        the pump, which reads the body for everyone."""
        if self._pump is None:
            self._pump = asyncio.get_running_loop().create_task(self._run())
        queue = self._queues[i]
        while True:
            item = await queue.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            assert isinstance(item, bytes)
            yield item

    def detach(self, i: int) -> None:
        """Branch ``i`` reads no more: drop what waits for it, and never wait for it again."""
        self._live[i] = False
        queue = self._queues[i]
        while not queue.empty():
            queue.get_nowait()

    async def close(self) -> None:
        """Stop the pump (every branch has ended)."""
        for i in range(len(self._live)):
            self.detach(i)
        if self._pump is not None and not self._pump.done():
            self._pump.cancel()
            # wait() never raises: a cancellation of the caller is not swallowed.
            await asyncio.wait([self._pump])

    async def _run(self) -> None:
        try:
            async for chunk in self._source:
                if not any(self._live):
                    return
                await self._hand(chunk)
        except Exception as err:  # the client's body failed: tell every branch
            await self._hand(err)
            return
        await self._hand(_END)

    async def _hand(self, item: object) -> None:
        for i, queue in enumerate(self._queues):
            if self._live[i]:
                # A put on a full queue waits for that branch; detach() empties
                # the queue, which wakes the put: an ended branch never blocks.
                await queue.put(item)
