"""TLS between the proxy and its upstream, as the database URL's sslmode asks.

The bundled PostgreSQL is built without SSL ("SSL is not supported by this build"), so
a TLS front stands in for a server's TLS: it answers the SSLRequest with ``S``, does
the TLS handshake with a self-signed certificate (recording what it saw), then relays
the decrypted bytes to the suite's real PostgreSQL.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from stripesync.proxy import messages as m
from tests.plugins.postgres import PgServer
from tests.proxy.conftest import RunningProxy, assert_cancels


class TlsFront:
    """A PostgreSQL-style TLS endpoint on 127.0.0.1:<free port> in front of ``target``."""

    def __init__(self, target: tuple[str, int], cert: Path, key: Path) -> None:
        self.target = target
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(cert, key)
        self.context.set_alpn_protocols(["postgresql"])
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.handshakes: list[dict[str, object]] = []
        self.plain: int = 0  # connections that did not ask for TLS
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        self.sockets.append(client)
        with contextlib.suppress(OSError, ssl.SSLError):
            head = client.recv(8, socket.MSG_WAITALL)
            first = b""
            if head == m.SSLRequest().encode():
                client.sendall(b"S")
                client = self.context.wrap_socket(client, server_side=True)
                self.sockets.append(client)
                self.handshakes.append(
                    {"version": client.version(), "alpn": client.selected_alpn_protocol()}
                )
            else:
                self.plain += 1
                first = head
            upstream = socket.create_connection(self.target)
            self.sockets.append(upstream)
            upstream.sendall(first)
            threading.Thread(target=self._pump, args=(upstream, client), daemon=True).start()
            self._pump(client, upstream)

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError, ssl.SSLError):
            while data := source.recv(65536):
                sink.sendall(data)
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.close()

    def close(self) -> None:
        self.listener.close()
        for sock in self.sockets:
            with contextlib.suppress(OSError):
                sock.close()


@pytest.fixture
def tls_front(pg_server: PgServer, tls_files: tuple[Path, Path]) -> Iterator[TlsFront]:
    cert, key = tls_files
    front = TlsFront((pg_server.host, pg_server.port), cert, key)
    try:
        yield front
    finally:
        front.close()


def front_url(pg_server: PgServer, front: TlsFront, **params: str) -> str:
    return make_conninfo(pg_server.admin_url, port=str(front.port), **params)


def test_tls_to_the_upstream_when_the_url_asks(
    pg_server: PgServer,
    tls_front: TlsFront,
    tls_files: tuple[Path, Path],
    start_proxy: Callable[..., RunningProxy],
) -> None:
    cert, _ = tls_files
    upstream = front_url(pg_server, tls_front, sslmode="verify-full", sslrootcert=str(cert))
    proxy = start_proxy(upstream)
    # client to proxy in plain text, proxy to the server over verified TLS
    with psycopg.connect(proxy.url(pg_server.admin_url), autocommit=True) as conn:
        assert conn.pgconn.ssl_in_use is False
        assert conn.execute("select current_user").fetchone() == ("postgres",)
        assert tls_front.handshakes == [{"version": "TLSv1.3", "alpn": "postgresql"}]
        # the cancel goes to the server over TLS too
        assert_cancels(conn, conn.cancel_safe)
    assert len(tls_front.handshakes) == 2 and tls_front.plain == 0


def test_each_sslmode(
    pg_server: PgServer,
    tls_front: TlsFront,
    tls_files: tuple[Path, Path],
    start_proxy: Callable[..., RunningProxy],
    tmp_path: Path,
) -> None:
    cert, _ = tls_files

    def login(**params: str) -> None:
        proxy = start_proxy(front_url(pg_server, tls_front, **params))
        with psycopg.connect(proxy.url(pg_server.admin_url)) as conn:
            assert conn.execute("select 1").fetchone() == (1,)

    def refused(**params: str) -> str:
        proxy = start_proxy(front_url(pg_server, tls_front, **params))
        with pytest.raises(psycopg.OperationalError) as info:
            psycopg.connect(proxy.url(pg_server.admin_url))
        return str(info.value)

    assert "cannot load the root certificate" in refused(
        sslmode="verify-ca", sslrootcert=str(tmp_path / "missing.crt")
    )
    # verify-full checks the name; verify-ca only the chain
    wrong_name = {"host": "wrong.example", "hostaddr": "127.0.0.1", "sslrootcert": str(cert)}
    assert "TLS with 127.0.0.1" in refused(sslmode="verify-full", **wrong_name)
    login(sslmode="verify-ca", **wrong_name)
    login(sslmode="require")  # encrypts without verifying
    login(sslmode="prefer")
    assert tls_front.plain == 0 and len(tls_front.handshakes) == 3  # not the refused one
    login(sslmode="disable")  # never asks
    login(sslmode="allow")
    assert tls_front.plain == 2


def test_sslmode_require_against_a_server_without_tls(
    pg_server: PgServer, start_proxy: Callable[..., RunningProxy]
) -> None:
    proxy = start_proxy(make_conninfo(pg_server.admin_url, sslmode="require"))
    with pytest.raises(psycopg.OperationalError) as info:
        psycopg.connect(proxy.url(pg_server.admin_url))
    assert f"127.0.0.1:{pg_server.port} does not support SSL, but SSL was required" in str(
        info.value
    )
    assert pg_server.password not in str(info.value)
