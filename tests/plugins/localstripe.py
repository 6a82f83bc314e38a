"""pytest plugin: localstripe, a third-party Stripe fake, over real HTTP.

- ``localstripe_server`` (session): localstripe's aiohttp ``app`` served in-process, in a
  thread with its own event loop, on 127.0.0.1 and a free port. Yields a
  :class:`LocalstripeServer` (``url``, ``flush()``, ``advance()``, ``stripe()``). Stopped
  at the end.
- ``localstripe`` (function): the same server, its store flushed and its clock put back
  before and after the test.

localstripe pickles its whole store to the fixed path ``/tmp/localstripe.pickle`` on every
write (``Store.dump_to_disk``, called from ``Store.__setitem__`` and a middleware) and
reads it back at start. For the session both are redirected to a file in a private
temporary directory, so parallel sessions and a developer's own localstripe never share a
store. Its CLI binds every interface and takes no host, hence the in-process start.

localstripe reads the time with ``time.time()`` of its ``resources`` module; for the session
that module sees a clock that ``advance(seconds)`` moves forward, as the emulator's
``POST /_emulator/clock`` does, so scenarios can put objects in distinct seconds without
sleeping.

If localstripe cannot start, every test that needs it fails with the reason: it is never
skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import pickle
import socket
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import stripe


def _bind(host: str = "127.0.0.1") -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, 0))
    sock.listen(128)
    sock.setblocking(False)
    return sock


class _ShiftedClock:
    """Stands in for the ``time`` module inside ``localstripe.resources``."""

    def __init__(self) -> None:
        self.offset = 0.0

    def time(self) -> float:
        return time.time() + self.offset


class LocalstripeServer:
    """localstripe's aiohttp app on 127.0.0.1 and a free port, in a background thread.

    ``pickle_path`` replaces ``/tmp/localstripe.pickle`` while the server is running.
    """

    def __init__(self, pickle_path: Path) -> None:
        self.pickle_path = pickle_path
        self._sock = _bind()
        self.host = "127.0.0.1"
        self.port: int = self._sock.getsockname()[1]
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: Any = None
        self._patch = pytest.MonkeyPatch()
        self.clock = _ShiftedClock()
        self._http = httpx.Client(base_url=self.url, timeout=30)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _redirect_persistence(self) -> None:
        from localstripe.resources import Store

        path = self.pickle_path

        def dump_to_disk(store: Store) -> None:
            with path.open("wb") as f:
                pickle.dump(store, f, protocol=pickle.HIGHEST_PROTOCOL)

        def try_load_from_disk(store: Store) -> None:
            with contextlib.suppress(FileNotFoundError), path.open("rb") as f:
                old = pickle.load(f)
                store.clear()
                store.update(old)

        self._patch.setattr(Store, "dump_to_disk", dump_to_disk)
        self._patch.setattr(Store, "try_load_from_disk", try_load_from_disk)
        self._patch.setattr("localstripe.resources.time", self.clock)

    def start(self) -> LocalstripeServer:
        try:
            self._redirect_persistence()
            from aiohttp import web

            with warnings.catch_warnings():
                # its handlers are plain functions, which aiohttp deprecates at registration
                warnings.filterwarnings("ignore", "Bare functions", DeprecationWarning)
                from localstripe.server import app
        except Exception as err:  # not installed, or a version without these names
            self.stop()
            raise RuntimeError(f"localstripe did not start: {err!r}") from err

        started = threading.Event()
        failure: list[BaseException] = []

        async def serve() -> None:
            runner = web.AppRunner(app, access_log=None, handle_signals=False)
            await runner.setup()
            await web.SockSite(runner, self._sock).start()
            self._runner = runner

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(serve())
            except BaseException as err:
                failure.append(err)
                started.set()
                loop.close()
                return
            started.set()
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=run, daemon=True, name="localstripe")
        self._thread.start()
        if not started.wait(10) or failure:
            self.stop()
            raise RuntimeError(f"localstripe did not start: {failure[0] if failure else 'timeout'}")
        self.flush()
        return self

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is not None and thread is not None and thread.is_alive():

            async def shutdown() -> None:
                if self._runner is not None:
                    await self._runner.cleanup()
                # localstripe schedules a webhook delivery task (sleeping 1 s) per event
                me = asyncio.current_task()
                tasks = [t for t in asyncio.all_tasks() if t is not me]
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)

            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(shutdown(), loop).result(timeout=10)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=10)
        self._sock.close()
        self._http.close()
        self._patch.undo()

    def flush(self) -> None:
        """Empty localstripe's store (its own ``DELETE /_config/data``)."""
        r = self._http.delete("/_config/data")
        r.raise_for_status()
        self.clock.offset = 0.0

    def advance(self, seconds: float) -> int:
        """Move localstripe's clock forward; return its new time (whole seconds)."""
        if seconds < 0:
            raise ValueError("the clock only moves forward")
        self.clock.offset += seconds
        return int(self.clock.time())

    def stripe(self, key: str = "sk_test_localstripe", **options: Any) -> stripe.StripeClient:
        options.setdefault("max_network_retries", 0)
        return stripe.StripeClient(key, base_addresses={"api": self.url}, **options)

    def __enter__(self) -> LocalstripeServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@pytest.fixture(scope="session")
def localstripe_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalstripeServer]:
    pickle_path = tmp_path_factory.mktemp("localstripe") / "localstripe.pickle"
    try:
        server = LocalstripeServer(pickle_path).start()
    except RuntimeError as err:
        pytest.fail(str(err), pytrace=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def localstripe(localstripe_server: LocalstripeServer) -> Iterator[LocalstripeServer]:
    localstripe_server.flush()
    try:
        yield localstripe_server
    finally:
        localstripe_server.flush()
