"""One streamed body read once and handed to several sites (scoped.tee):
every branch gets every chunk in order, a detached branch never holds the
others back, a slow one holds the body to its pace, a failing body reaches
every branch still listening."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from scoped.tee import DEPTH, Tee

CHUNKS = [f"chunk-{i:02d}".encode() for i in range(12)]  # several times DEPTH
GUARD = 5.0
"""Seconds before a hung test fails: a guard, never asserted on."""


class Source:
    """A body of ``chunks``; counts how many it has handed out."""

    def __init__(self, chunks: list[bytes], error: Exception | None = None) -> None:
        self.chunks = chunks
        self.error = error
        self.yielded = 0

    async def __call__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            self.yielded += 1
            yield chunk
        if self.error is not None:
            raise self.error


async def read_all(tee: Tee, i: int) -> list[bytes]:
    return [chunk async for chunk in tee.branch(i)]


async def settle(rounds: int = 50) -> None:
    """Let every other task run as far as it can (bounded)."""
    for _ in range(rounds):
        await asyncio.sleep(0)


def test_every_branch_gets_every_chunk_in_order() -> None:
    async def main() -> list[list[bytes]]:
        tee = Tee(Source(CHUNKS)(), 3)
        got = await asyncio.wait_for(asyncio.gather(*(read_all(tee, i) for i in range(3))), GUARD)
        await tee.close()
        return list(got)

    assert asyncio.run(main()) == [CHUNKS, CHUNKS, CHUNKS]


def test_the_body_is_read_once_for_every_branch() -> None:
    source = Source(CHUNKS)

    async def main() -> None:
        tee = Tee(source(), 3)
        await asyncio.wait_for(asyncio.gather(*(read_all(tee, i) for i in range(3))), GUARD)
        await tee.close()

    asyncio.run(main())
    assert source.yielded == len(CHUNKS)


def test_an_empty_body_ends_every_branch() -> None:
    async def main() -> list[list[bytes]]:
        tee = Tee(Source([])(), 2)
        got = await asyncio.wait_for(asyncio.gather(read_all(tee, 0), read_all(tee, 1)), GUARD)
        await tee.close()
        return list(got)

    assert asyncio.run(main()) == [[], []]


@pytest.mark.parametrize("wait_first", [False, True], ids=["at-once", "pump-stuck"])
def test_a_detached_branch_never_blocks_the_others(wait_first: bool) -> None:
    """Branch 0 reads one chunk and its call ends; the others read the whole
    body, far more than DEPTH chunks past branch 0. With ``pump-stuck`` the
    pump is already waiting on branch 0's full queue when it is detached."""

    async def main() -> tuple[list[bytes], list[bytes], list[bytes]]:
        tee = Tee(Source(CHUNKS)(), 3)

        async def one_then_detach() -> list[bytes]:
            stream = tee.branch(0)
            first = [await anext(stream)]
            if wait_first:
                await settle()
            tee.detach(0)
            await stream.aclose()  # type: ignore[attr-defined]
            return first

        got = await asyncio.wait_for(
            asyncio.gather(one_then_detach(), read_all(tee, 1), read_all(tee, 2)), GUARD
        )
        await tee.close()
        return got

    first, b1, b2 = asyncio.run(main())
    assert first == CHUNKS[:1]
    assert b1 == CHUNKS
    assert b2 == CHUNKS


def test_a_branch_detached_before_it_reads_is_never_waited_for() -> None:
    async def main() -> list[list[bytes]]:
        tee = Tee(Source(CHUNKS)(), 3)
        tee.detach(2)
        got = await asyncio.wait_for(asyncio.gather(read_all(tee, 0), read_all(tee, 1)), GUARD)
        await tee.close()
        return list(got)

    assert asyncio.run(main()) == [CHUNKS, CHUNKS]


def test_the_body_moves_at_the_slowest_branchs_pace() -> None:
    """Whenever the slow branch has read k chunks (and everyone else has run
    as far as they can), the source has handed out at most k + DEPTH + 1: the
    queue's DEPTH and the chunk the pump holds. Memory stays constant."""
    source = Source(CHUNKS)
    leads: list[tuple[int, int]] = []

    async def main() -> list[list[bytes]]:
        tee = Tee(source(), 3)

        async def slow() -> list[bytes]:
            got: list[bytes] = []
            await settle()
            leads.append((0, source.yielded))
            async for chunk in tee.branch(2):
                got.append(chunk)
                await settle()  # the fast branches run ahead as far as they may
                leads.append((len(got), source.yielded))
            return got

        got = await asyncio.wait_for(
            asyncio.gather(read_all(tee, 0), read_all(tee, 1), slow()), GUARD
        )
        await tee.close()
        return list(got)

    assert asyncio.run(main()) == [CHUNKS, CHUNKS, CHUNKS]
    assert len(leads) == len(CHUNKS) + 1
    for k, yielded in leads:
        assert yielded <= k + DEPTH + 1, (k, yielded)
    # The measure measures something: the pump did run ahead of the slow branch.
    assert max(yielded - k for k, yielded in leads) >= DEPTH


def test_a_body_that_fails_fails_every_live_branch_with_the_same_error() -> None:
    error = ConnectionResetError("the client went away")

    async def main() -> list[tuple[list[bytes], BaseException | None]]:
        tee = Tee(Source(CHUNKS[:3], error)(), 3)

        async def read(i: int) -> tuple[list[bytes], BaseException | None]:
            got: list[bytes] = []
            try:
                async for chunk in tee.branch(i):
                    got.append(chunk)
            except ConnectionResetError as err:
                return got, err
            return got, None

        got = await asyncio.wait_for(asyncio.gather(*(read(i) for i in range(3))), GUARD)
        await tee.close()
        return list(got)

    for chunks, raised in asyncio.run(main()):
        assert chunks == CHUNKS[:3], "every chunk before the failure arrives first"
        assert raised is error


def test_a_body_that_fails_reaches_the_live_branches_not_a_detached_one() -> None:
    error = ConnectionResetError("the client went away")

    async def main() -> tuple[list[bytes], BaseException | None]:
        tee = Tee(Source(CHUNKS[:3], error)(), 2)
        tee.detach(1)
        got: list[bytes] = []
        try:
            async for chunk in tee.branch(0):
                got.append(chunk)
        except ConnectionResetError as err:
            return got, err
        finally:
            await tee.close()
        return got, None

    chunks, raised = asyncio.run(asyncio.wait_for(main(), GUARD))
    assert chunks == CHUNKS[:3]
    assert raised is error


def test_close_stops_the_pump_mid_body() -> None:
    """A body far longer than anyone reads: after close() the source is not
    read any further, even with every other task let run."""
    source = Source([b"x"] * 1000)

    async def main() -> tuple[int, int]:
        tee = Tee(source(), 2)
        stream = tee.branch(0)
        for _ in range(2):
            assert await anext(stream) == b"x"
        await tee.close()
        at_close = source.yielded
        await settle(200)
        return at_close, source.yielded

    at_close, later = asyncio.run(asyncio.wait_for(main(), GUARD))
    assert later == at_close
    assert at_close <= 2 + DEPTH + 1, "branch 1 never read: the pump waited for it"


def test_close_cancels_a_pump_waiting_on_the_body() -> None:
    """The client sends nothing more: close() ends the wait on the source."""
    events: list[str] = []

    async def main() -> None:
        never = asyncio.Event()

        async def stalled() -> AsyncIterator[bytes]:
            yield b"first"
            try:
                await never.wait()
            except asyncio.CancelledError:
                events.append("cancelled")
                raise
            yield b"never"

        tee = Tee(stalled(), 2)
        stream = tee.branch(0)
        assert await anext(stream) == b"first"
        await settle()
        closing = asyncio.ensure_future(tee.close())
        done, _ = await asyncio.wait({closing}, timeout=GUARD)
        if not done:
            closing.cancel()
            events.append("close hung")
            return
        events.append("closed")

    asyncio.run(main())
    assert events == ["cancelled", "closed"]


def test_close_before_any_branch_reads_does_nothing() -> None:
    source = Source(CHUNKS)

    async def main() -> None:
        tee = Tee(source(), 2)
        await tee.close()
        await settle()

    asyncio.run(main())
    assert source.yielded == 0
