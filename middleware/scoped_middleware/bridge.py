"""The bridge between synchronous WSGI threads and the core's asyncio pipeline.

One background event loop thread per process runs every request's
:meth:`~scoped.gateway.Gateway.handle` and the upstream HTTP calls; it starts
on first use and again in a child after a fork (uwsgi and mod_wsgi fork their
workers after loading the application), found by a changed ``os.getpid()``.

A WSGI thread serving a request is a :class:`Worker`: it hands the coroutine
to the loop and, while it waits, runs the *blocking* work the loop hands back
to it (:meth:`Worker.call`): calling the wrapped application, pulling its
response iterable, reading ``wsgi.input``. So the wrapped application runs in
the server's own request thread, exactly as without the filter (thread-locals,
one thread per request as the server counts them), while the remote sites of
a fan-out are awaited concurrently on the loop; and nothing blocking ever runs
on the loop. Waits nest: a job may itself wait for the loop (the application
reading a request body that comes through the core) and go on serving jobs.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import queue
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from scoped.errors import ScopedError

T = TypeVar("T")
LOG = logging.getLogger("scoped.wsgi")

_POLL = 1.0
"""Seconds between checks that the loop thread is still alive while waiting."""


class LoopThread:
    """An asyncio event loop running in a daemon thread of this process."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._run, name=f"scoped-wsgi-loop-{self.pid}", daemon=True
        )
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    @property
    def alive(self) -> bool:
        return self.pid == os.getpid() and self._thread.is_alive() and not self.loop.is_closed()

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
        """Run ``coro`` on the loop from a thread that serves no request."""
        return self.submit(coro).result(timeout)

    def stop(self, timeout: float = 10.0) -> None:
        if not self.alive:
            return
        with contextlib.suppress(Exception):
            self.run(self.loop.shutdown_asyncgens(), timeout)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout)
        if not self._thread.is_alive():
            self.loop.close()


class _Process:
    """This process's loop thread, and the lock that guards starting one."""

    current: LoopThread | None = None
    locks: dict[int, threading.Lock] = {}  # noqa: RUF012 - one per process id


def _after_fork() -> None:
    # The parent's loop thread does not exist here; neither does whoever
    # held the lock. Start afresh (loop_thread() also checks the pid, for
    # servers that fork below Python).
    _Process.current = None
    _Process.locks.clear()


os.register_at_fork(after_in_child=_after_fork)


def loop_thread() -> LoopThread:
    """This process's loop thread, started on first use (and after a fork)."""
    found = _Process.current
    if found is not None and found.alive:
        return found
    with _Process.locks.setdefault(os.getpid(), threading.Lock()):
        found = _Process.current
        if found is None or not found.alive:
            found = LoopThread()
            _Process.current = found
        return found


def current_loop_thread() -> LoopThread | None:
    """The running loop thread of this process, without starting one."""
    found = _Process.current
    return found if found is not None and found.alive else None


def stop_loop_thread() -> None:
    """Stop this process's loop thread (tests; orderly shutdown)."""
    found, _Process.current = _Process.current, None
    if found is not None:
        found.stop()


class WorkerGone(ScopedError):
    """Blocking work was handed to a request thread that is done (the
    in-process upstream turns it into a ``CallError`` for the site's report)."""


class Worker:
    """One WSGI request thread, waiting for the loop and serving its jobs."""

    __slots__ = ("_cleanups", "_closed", "_jobs", "_lock", "ident", "lt")

    def __init__(self, lt: LoopThread) -> None:
        self.lt = lt
        self.ident = threading.get_ident()
        self._jobs: queue.SimpleQueue[Callable[[], object] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._closed = False
        self._cleanups: list[Callable[[], object]] = []

    @property
    def here(self) -> bool:
        """Whether the caller runs on this worker's thread."""
        return threading.get_ident() == self.ident

    # --- from the WSGI thread ----------------------------------------------

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the loop; serve jobs until it is done."""
        return self.wait(self.lt.submit(coro))

    def wait(self, fut: concurrent.futures.Future[T]) -> T:
        fut.add_done_callback(self._wake)
        while not fut.done():
            try:
                job = self._jobs.get(timeout=_POLL)
            except queue.Empty:
                if not self.lt.alive:
                    fut.cancel()
                    raise RuntimeError("the scoped event loop thread stopped") from None
                continue
            if job is not None:
                job()
        return fut.result()

    def _wake(self, _fut: object) -> None:
        self._jobs.put(None)

    def at_finish(self, cleanup: Callable[[], object]) -> None:
        """Run ``cleanup`` on this thread when the request is over (idempotent
        cleanups only: they may have run before)."""
        self._cleanups.append(cleanup)

    def finish(self) -> None:
        """The request is over: run what is still queued and every cleanup
        (closing the application's iterables), and refuse new jobs."""
        with self._lock:
            self._closed = True
        jobs: list[Callable[[], object]] = []
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                jobs.append(job)
        jobs.extend(self._cleanups)
        self._cleanups.clear()
        for job in jobs:
            try:
                job()
            except Exception:  # cleanup must go on
                LOG.exception("scoped: cleanup after a request failed")

    # --- from the loop -------------------------------------------------------

    def post(self, job: Callable[[], object]) -> bool:
        """Queue ``job`` for this thread; False if the request is over."""
        with self._lock:
            if self._closed:
                return False
            self._jobs.put(job)
            return True

    async def call(self, fn: Callable[[], T]) -> T:
        """Run blocking ``fn`` on this request's thread; await its result."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()

        def job() -> None:
            try:
                result = fn()
            except Exception as err:
                _settle_threadsafe(loop, fut, None, err)
            except BaseException:
                _settle_threadsafe(loop, fut, None, RuntimeError("the request thread was stopped"))
                raise
            else:
                _settle_threadsafe(loop, fut, result, None)

        if not self.post(job):
            raise WorkerGone("the WSGI request this work belongs to is over")
        return await fut


def _settle_threadsafe(
    loop: asyncio.AbstractEventLoop,
    fut: asyncio.Future[T],
    result: T | None,
    error: BaseException | None,
) -> None:
    with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
        loop.call_soon_threadsafe(_settle, fut, result, error)


def _settle(fut: asyncio.Future[T], result: T | None, error: BaseException | None) -> None:
    if fut.done():
        return
    if error is not None:
        fut.set_exception(error)
    else:
        fut.set_result(result)  # type: ignore[arg-type]  # T when no error
