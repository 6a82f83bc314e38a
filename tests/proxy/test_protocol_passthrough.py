"""A real client (psycopg/libpq) through a relay built on the two parsers.

The relay frames every byte each side sends with FrontendParser / BackendParser and
forwards each message's ``raw``: the smallest pass-through proxy. libpq's SSLRequest,
SCRAM login, simple and extended queries (text and binary), prepared statements,
pipeline mode, COPY both ways, notifications, errors and a cancel all go through it
unchanged, and neither parser finds anything to complain about.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import psycopg
import pytest

from stripesync.proxy import messages as m
from stripesync.proxy.protocol import BackendParser, FrontendParser
from tests.plugins.postgres import PgServer


class Relay:
    """Accepts connections on 127.0.0.1:<free port> and relays them message by message."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.05)  # so that accept() notices close()
        self.closed = threading.Event()
        self.port: int = self.listener.getsockname()[1]
        self.client: list[m.Message] = []
        self.server: list[m.Message] = []
        self.errors: list[BaseException] = []
        self.leftovers: list[int] = []
        self.threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._spawn(self._accept)

    def _spawn(self, target: object, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)  # type: ignore[arg-type]
        self.threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        while not self.closed.is_set():
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            server = socket.create_connection(self.upstream, timeout=30)
            self._sockets += [client, server]
            backend = BackendParser()
            self._spawn(self._pump, client, server, FrontendParser(), self.client, backend)
            self._spawn(self._pump, server, client, backend, self.server, None)

    def _pump(
        self,
        source: socket.socket,
        sink: socket.socket,
        parser: FrontendParser | BackendParser,
        log: list[m.Message],
        backend: BackendParser | None,
    ) -> None:
        try:
            while data := source.recv(65536):
                for message in parser.feed(data):
                    with self._lock:
                        log.append(message)
                    if backend is not None and isinstance(message, m.SSLRequest | m.GSSENCRequest):
                        backend.expect_encryption_response()
                    sink.sendall(message.raw)
        except OSError:
            pass
        except BaseException as exc:
            self.errors.append(exc)
        finally:
            self.leftovers.append(parser.pending)
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self.closed.set()
        self.listener.close()
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.close()
        for thread in self.threads:
            thread.join(timeout=5)


@pytest.fixture
def relay(pg_server: PgServer) -> Iterator[Relay]:
    relay = Relay((pg_server.host, pg_server.port))
    try:
        yield relay
    finally:
        relay.close()


def names(messages: list[m.Message]) -> set[str]:
    return {type(x).__name__ for x in messages}


def test_psycopg_session_through_the_parsers(pg_server: PgServer, relay: Relay) -> None:
    url = (
        f"postgresql://postgres:{pg_server.password}@127.0.0.1:{relay.port}/postgres"
        "?sslmode=prefer&application_name=relay-test"
    )
    with psycopg.connect(url, autocommit=True) as conn:
        assert conn.execute("select %s::int + 1, %s::text", [41, "é"]).fetchone() == (42, "é")
        cur = conn.cursor(binary=True)
        assert cur.execute("select %b::int8 * 2, %b::bytea", [21, b"\0\xff"]).fetchone() == (
            42,
            b"\0\xff",
        )
        for i in range(6):
            assert conn.execute("select %s::text", [str(i)], prepare=True).fetchone() == (str(i),)
        with conn.pipeline():
            a = conn.execute("select 1")
            b = conn.execute("select 2")
        assert (a.fetchone(), b.fetchone()) == ((1,), (2,))

        with (
            conn.cursor() as cur,
            cur.copy("copy (select generate_series(1, 500)) to stdout") as copy,
        ):
            assert sum(1 for _ in copy.rows()) == 500
        conn.execute("create temp table t (x int, y text)")
        with conn.cursor() as cur, cur.copy("copy t from stdin") as copy:
            for i in range(300):
                copy.write_row((i, f"row {i}"))
        assert conn.execute("select count(*), max(x) from t").fetchone() == (300, 299)

        with pytest.raises(psycopg.errors.UndefinedTable):
            conn.execute("select * from no_such_table")

        conn.execute("listen chan")
        conn.execute("notify chan, 'hello'")
        notes = list(conn.notifies(timeout=2, stop_after=1))
        assert [n.payload for n in notes] == ["hello"]

        def cancel_soon() -> None:
            time.sleep(0.3)
            conn.cancel_safe()

        canceller = threading.Thread(target=cancel_soon)
        canceller.start()
        with pytest.raises(psycopg.errors.QueryCanceled):
            conn.execute("select pg_sleep(20)")
        canceller.join()
        assert conn.execute("select 'still fine'").fetchone() == ("still fine",)

    deadline = time.monotonic() + 5
    while len(relay.leftovers) < 4 and time.monotonic() < deadline:
        time.sleep(0.01)  # both connections' pumps see EOF
    assert not relay.errors
    assert relay.leftovers and set(relay.leftovers) == {0}

    client = names(relay.client)
    assert {
        "SSLRequest",
        "StartupMessage",
        "PasswordMessage",
        "Query",
        "Parse",
        "Bind",
        "Describe",
        "Execute",
        "Sync",
        "CopyData",
        "CopyDone",
        "CancelRequest",
        "Terminate",
    } <= client
    server = names(relay.server)
    assert {
        "EncryptionResponse",
        "Authentication",
        "ParameterStatus",
        "BackendKeyData",
        "ReadyForQuery",
        "RowDescription",
        "DataRow",
        "CommandComplete",
        "ErrorResponse",
        "ParseComplete",
        "BindComplete",
        "CopyOutResponse",
        "CopyInResponse",
        "CopyData",
        "CopyDone",
        "NotificationResponse",
    } <= server

    startup = next(x for x in relay.client if isinstance(x, m.StartupMessage))
    assert startup.get("application_name") == "relay-test"
    password = next(x for x in relay.client if isinstance(x, m.PasswordMessage))
    mechanism, first = password.as_sasl_initial()
    assert mechanism == "SCRAM-SHA-256"
    assert first is not None and first.startswith(b"n,,")
    assert all(x.encode() == x.raw for x in relay.client + relay.server)
