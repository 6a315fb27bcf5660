"""Newest-item-only hand-over between stages: a slow consumer drops stale items, never queues them.

:class:`LatestSlot` hands items from any thread to a worker thread (webcam frames to tracking);
:class:`FrameBus` hands rendered frames from a worker thread to the asyncio tracks that send them.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Generic, Protocol, TypeVar

T = TypeVar("T")


class LatestSlot(Generic[T]):
    """A thread-safe queue of length one: :meth:`put` replaces an item not yet taken.

    Attributes:
        put_count: items put so far.
        dropped: items replaced before anybody took them.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item: T | None = None
        self._full = False
        self._closed = False
        self.put_count = 0
        self.dropped = 0

    def put(self, item: T) -> bool:
        """Store ``item``; True when it replaced one that was never taken (counted in ``dropped``)."""
        with self._cond:
            replaced = self._full
            self.dropped += int(replaced)
            self.put_count += 1
            self._item, self._full = item, True
            self._cond.notify()
            return replaced

    def get(self, timeout: float | None = None) -> T | None:
        """The newest item, waiting up to ``timeout`` seconds; None on timeout or once closed."""
        with self._cond:
            if not self._full and not self._closed:
                self._cond.wait(timeout)
            if not self._full:
                return None
            item, self._item, self._full = self._item, None, False
            return item

    def close(self) -> None:
        """Wake the consumer; later :meth:`get` calls return what is left, then None."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed


class Sequenced(Protocol):
    """Anything with an increasing integer ``seq``."""

    @property
    def seq(self) -> int: ...


S = TypeVar("S", bound=Sequenced)


class BusClosed(Exception):
    """The bus was closed while waiting (the stage stopped)."""


class FrameBus(Generic[S]):
    """The newest item for any number of asyncio readers (each remembers the last ``seq`` it took).

    :meth:`publish` and :meth:`close` run on the event loop (from a worker thread use
    ``loop.call_soon_threadsafe(bus.publish, item)``); :meth:`next` is awaited by readers.

    Attributes:
        skipped: items replaced before any reader took them (meaningful with one reader).
    """

    def __init__(self) -> None:
        self.latest: S | None = None
        self.skipped = 0
        self._taken_seq = -1
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False

    def publish(self, item: S) -> None:
        """Make ``item`` the newest and wake every reader."""
        if self._closed:
            return
        if self.latest is not None and self.latest.seq > self._taken_seq:
            self.skipped += 1
        self.latest = item
        self._wake()

    def close(self) -> None:
        """Readers waiting now or later get :class:`BusClosed`."""
        self._closed = True
        self._wake()

    @property
    def closed(self) -> bool:
        return self._closed

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)
        self._waiter = None

    async def next(self, after_seq: int) -> S:
        """The newest item with ``seq > after_seq``, waiting for it when needed.

        Raises:
            BusClosed: the bus is closed.
        """
        while True:
            if self._closed:
                raise BusClosed()
            item = self.latest
            if item is not None and item.seq > after_seq:
                self._taken_seq = max(self._taken_seq, item.seq)
                return item
            if self._waiter is None:
                self._waiter = asyncio.get_running_loop().create_future()
            # shield: one reader being cancelled must not cancel the others' wait
            await asyncio.shield(self._waiter)
