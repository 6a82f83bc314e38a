"""Fixtures for the proxy server's tests: a ProxyServer on its own event-loop thread.

- ``start_proxy`` (function): ``start_proxy(upstream_url, **options)`` starts a
  :class:`RunningProxy` on 127.0.0.1 and a free port; every proxy is stopped afterwards.
- ``proxy``: one proxy in front of the suite's ``pg_server`` over TCP.
- ``proxy_command`` (function): ``proxy_command(*flags)`` runs ``stripesync proxy`` in
  its own process in front of the suite's ``pg_server`` (``DATABASE_URL`` in its
  environment) on a free port and returns ``(process, port)``; killed afterwards.
- ``tls_files`` (session): a self-signed certificate and key for ``localhost`` and
  ``127.0.0.1``, made with the ``openssl`` command.
- ``assert_cancels(conn, cancel)``: ``cancel`` (called on a timer) ends the long query
  ``conn`` runs with QueryCanceled, within 5 s.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from stripesync.proxy.server import ProxyServer
from tests.plugins.postgres import PgServer

T = TypeVar("T")


class RunningProxy:
    """A ProxyServer serving from a background thread; ``url()`` points a URL at it."""

    def __init__(self, upstream_url: str, **options: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        options.setdefault("listen_port", 0)
        self.server = self.call(self._make(upstream_url, options))
        self.port = self.server.port

    @staticmethod
    async def _make(upstream_url: str, options: dict[str, Any]) -> ProxyServer:
        server = ProxyServer(upstream_url, **options)
        await server.start()
        return server

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 15) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def url(self, url: str, **params: Any) -> str:
        """``url`` (a role's TCP URL) sent to the proxy instead, with extra parameters."""
        return make_conninfo(url, host="127.0.0.1", port=str(self.port), **params)

    @property
    def sessions(self) -> int:
        async def count() -> int:
            return self.server.sessions

        return self.call(count())

    def stop(self) -> None:
        if self.loop.is_closed():
            return
        try:
            self.call(self.server.stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=10)
            self.loop.close()


@pytest.fixture
def start_proxy() -> Iterator[Callable[..., RunningProxy]]:
    proxies: list[RunningProxy] = []

    def start(upstream_url: str, **options: Any) -> RunningProxy:
        proxy = RunningProxy(upstream_url, **options)
        proxies.append(proxy)
        return proxy

    try:
        yield start
    finally:
        for proxy in proxies:
            proxy.stop()


@pytest.fixture
def proxy(pg_server: PgServer, start_proxy: Callable[..., RunningProxy]) -> RunningProxy:
    return start_proxy(pg_server.admin_url)


ProxyProcess = tuple[subprocess.Popen[str], int]


@pytest.fixture
def proxy_command(pg_server: PgServer) -> Iterator[Callable[..., ProxyProcess]]:
    procs: list[subprocess.Popen[str]] = []

    def start(*flags: str) -> ProxyProcess:
        proc = subprocess.Popen(
            [sys.executable, "-m", "stripesync.proxy.cli", "--proxy-listen", "127.0.0.1:0",
             *flags],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "DATABASE_URL": pg_server.admin_url, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
        procs.append(proc)
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        match = re.fullmatch(r"proxy listening on 127\.0\.0\.1:(\d+)", line)
        assert match is not None, (line, proc.stderr.read() if proc.stderr else "")
        return proc, int(match.group(1))

    try:
        yield start
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)
            for stream in (proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()


def assert_cancels(
    conn: psycopg.Connection[Any], cancel: Callable[[], object], delay: float = 0.3
) -> None:
    """``cancel``, called after ``delay`` on a timer, cancels a long query within 5 s."""
    timer = threading.Timer(delay, cancel)
    timer.start()
    started = time.monotonic()
    try:
        with pytest.raises(psycopg.errors.QueryCanceled):
            conn.execute("select pg_sleep(20)")
        assert time.monotonic() - started < 5
    finally:
        timer.join()


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-days", "2", "-subj", "/CN=localhost",
            "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


# the write path's fixtures (a migrated database, a proxy with the StripeWriteHandler)
from tests.proxy.writes_fixtures import stripe_database, writes  # noqa: E402, F401
