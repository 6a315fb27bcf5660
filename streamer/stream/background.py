"""Running an :class:`~streamer.stream.server.AvatarServer` on its own event loop in a thread.

``bench stream`` and the tests drive clients from their own loop while the server keeps its loop
to itself, as it would in its own process.

Example:
    >>> with ServerThread(ServerConfig(port=0)) as server:
    ...     server.url        # 'http://127.0.0.1:PORT/'
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any, TypeVar

from ..errors import StreamError
from .server import AvatarServer, ServerConfig

T = TypeVar("T")


class ServerThread:
    """An avatar server serving from a daemon thread; :meth:`start` returns once it listens.

    Args:
        config: what to serve (``port=0`` picks a free port).
        start_timeout: seconds to wait for the assets to load and the port to bind.
        **assets: ``avatar``, ``body``, ``motion`` objects for :class:`AvatarServer`.
    """

    def __init__(self, config: ServerConfig, start_timeout: float = 300.0, **assets: Any) -> None:
        self.config, self.start_timeout, self.assets = config, start_timeout, assets
        self.loop: asyncio.AbstractEventLoop | None = None
        self.server: AvatarServer | None = None
        self._thread = threading.Thread(target=self._run, name="avatar-server", daemon=True)
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._stopped: asyncio.Event | None = None

    def _run(self) -> None:
        # asyncio.run also cancels what aiortc/aioice leave pending when the server is closed
        asyncio.run(self._main())

    async def _main(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        try:
            self.server = AvatarServer(self.config, **self.assets)
            await self.server.start()
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            await self._stopped.wait()
        finally:
            await self.server.close()

    def start(self) -> ServerThread:
        self._thread.start()
        if not self._ready.wait(self.start_timeout):
            raise StreamError(f"the avatar server did not start within {self.start_timeout:g} s")
        if self._error is not None:
            raise self._error
        return self

    @property
    def url(self) -> str:
        assert self.server is not None, "start() first"
        return self.server.url

    def call(self, fn: Callable[[], T], timeout: float = 30.0) -> T:
        """Run ``fn`` on the server's loop (to read its state safely) and return its result."""
        assert self.loop is not None, "start() first"
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            try:
                future.set_result(fn())
            except BaseException as exc:
                future.set_exception(exc)

        self.loop.call_soon_threadsafe(run)
        return future.result(timeout)

    def stop(self, timeout: float = 60.0) -> None:
        """Close every session and stage and stop the loop (idempotent)."""
        if self._thread.is_alive() and self._stopped is not None and self.loop is not None:
            self.loop.call_soon_threadsafe(self._stopped.set)
            self._thread.join(timeout)

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
