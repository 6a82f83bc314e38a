"""The protocol layer against a real PostgreSQL (the suite's ``pg_server``, over TCP).

Our frontend builders drive real sessions (SCRAM-SHA-256 and MD5 logins, simple and
extended query, COPY both ways, LISTEN/NOTIFY, errors, transaction states, protocol
3.2 and its negotiation, SSLRequest, CancelRequest); our backend parser reads every
byte the server sends, in random chunks, and each message re-serializes to exactly the
bytes received.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import random
import secrets
import socket
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import TypeVar

import psycopg
import pytest

from stripesync.proxy import messages as m
from stripesync.proxy.protocol import BackendParser, FrontendParser, ProtocolViolation
from tests.plugins.postgres import PgServer


class Session:
    """A raw TCP connection to the server: our builders out, our parser in."""

    def __init__(self, server: PgServer, seed: int = 0) -> None:
        self.server = server
        self.sock = socket.create_connection((server.host, server.port), timeout=10)
        self.parser = BackendParser()
        self.rng = random.Random(seed)
        self.received = bytearray()
        self.messages: list[m.Message] = []
        self.unread: deque[m.Message] = deque()

    def send(self, *messages: m.Message) -> None:
        self.sock.sendall(b"".join(x.encode() for x in messages))

    def start(
        self,
        user: str = "postgres",
        password: str | None = None,
        minor: int = 0,
        **extra: str,
    ) -> list[m.Message]:
        """Log in (answering SCRAM-SHA-256 or MD5) and read up to ReadyForQuery."""
        params = (("user", user), ("database", "postgres"), *extra.items())
        self.send(m.StartupMessage(params, minor))
        password = self.server.password if password is None else password
        out = self.until(m.Authentication)
        auth = out[-1]
        assert isinstance(auth, m.Authentication)
        if auth.code == m.AUTH_SASL:
            assert "SCRAM-SHA-256" in auth.mechanisms
            out += self._scram(password)
        elif auth.code == m.AUTH_MD5_PASSWORD:
            inner = hashlib.md5((password + user).encode()).hexdigest()
            digest = hashlib.md5(inner.encode() + auth.data).hexdigest()
            self.send(m.PasswordMessage.for_password("md5" + digest))
        return out + self.until_ready()

    def _scram(self, password: str) -> list[m.Message]:
        nonce = base64.b64encode(secrets.token_bytes(18)).decode()
        first_bare = f"n=,r={nonce}"
        self.send(m.PasswordMessage.for_sasl_initial("SCRAM-SHA-256", b"n,," + first_bare.encode()))
        out = self.until(m.Authentication)
        challenge = out[-1]
        assert isinstance(challenge, m.Authentication)
        assert challenge.code == m.AUTH_SASL_CONTINUE
        server_first = challenge.data.decode()
        attrs = dict(item.split("=", 1) for item in server_first.split(","))
        assert attrs["r"].startswith(nonce)
        salted = hashlib.pbkdf2_hmac(
            "sha256", password.encode(), base64.b64decode(attrs["s"]), int(attrs["i"])
        )
        client_key = hmac.digest(salted, b"Client Key", "sha256")
        without_proof = f"c=biws,r={attrs['r']}"
        auth_message = f"{first_bare},{server_first},{without_proof}".encode()
        signature = hmac.digest(hashlib.sha256(client_key).digest(), auth_message, "sha256")
        proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        final = f"{without_proof},p={base64.b64encode(proof).decode()}"
        self.send(m.PasswordMessage(final.encode()))
        out += self.until(m.Authentication)
        outcome = out[-1]
        assert isinstance(outcome, m.Authentication)
        assert outcome.code == m.AUTH_SASL_FINAL
        server_key = hmac.digest(salted, b"Server Key", "sha256")
        expected = hmac.digest(server_key, auth_message, "sha256")
        assert outcome.data == b"v=" + base64.b64encode(expected)
        return out

    def recv(self) -> list[m.Message]:
        """Read once from the socket; return (and queue) the messages completed."""
        data = self.sock.recv(65536)
        assert data, "server closed the connection"
        self.received += data
        out: list[m.Message] = []
        pos = 0
        while pos < len(data):  # random chunking of what the server sent
            step = self.rng.randint(1, 64)
            out.extend(self.parser.feed(data[pos : pos + step]))
            pos += step
        self.messages.extend(out)
        self.unread.extend(out)
        return out

    def until(self, cls: type[m.Message]) -> list[m.Message]:
        """The unread messages up to and including the next ``cls``."""
        out: list[m.Message] = []
        while True:
            while self.unread:
                message = self.unread.popleft()
                out.append(message)
                if isinstance(message, cls):
                    return out
            self.recv()

    def until_ready(self) -> list[m.Message]:
        return self.until(m.ReadyForQuery)

    def query(self, sql: str) -> list[m.Message]:
        self.send(m.Query(sql))
        return self.until_ready()

    def close(self) -> None:
        self.send(m.Terminate())
        self.sock.close()
        # every byte the server sent is accounted for, byte for byte
        assert b"".join(x.raw for x in self.messages) == self.received
        assert self.parser.pending == 0
        for message in self.messages:
            assert message.encode() == message.raw, message


T = TypeVar("T", bound=m.Message)


@pytest.fixture
def connect(pg_server: PgServer) -> Iterator[Callable[..., Session]]:
    """Open sessions; whatever a test leaves open is closed afterwards."""
    sessions: list[Session] = []

    def make(seed: int = 0) -> Session:
        session = Session(pg_server, seed)
        sessions.append(session)
        return session

    yield make
    for session in sessions:
        session.sock.close()


def of(messages: list[m.Message], cls: type[T]) -> list[T]:
    return [x for x in messages if isinstance(x, cls)]


def test_startup_and_simple_query(connect: Callable[..., Session]) -> None:
    s = connect()
    start = s.start(application_name="stripesync-test")
    auth = of(start, m.Authentication)
    assert [a.code for a in auth] == [
        m.AUTH_SASL,
        m.AUTH_SASL_CONTINUE,
        m.AUTH_SASL_FINAL,
        m.AUTH_OK,
    ]
    status = {x.name: x.value for x in of(start, m.ParameterStatus)}
    assert status["application_name"] == "stripesync-test"
    assert status["server_encoding"] == "UTF8"
    (key,) = of(start, m.BackendKeyData)
    assert len(key.secret) == 4
    assert start[-1] == m.ReadyForQuery("I")

    out = s.query("select 1 as one, null::text as n, 'é€'::text as e, 1.5::numeric as x")
    (desc,) = of(out, m.RowDescription)
    assert [f.name for f in desc.fields] == ["one", "n", "e", "x"]
    assert [f.type_oid for f in desc.fields] == [23, 25, 25, 1700]
    assert of(out, m.DataRow) == [m.DataRow((b"1", None, "é€".encode(), b"1.5"))]
    assert of(out, m.CommandComplete) == [m.CommandComplete("SELECT 1")]

    assert s.query("")[0] == m.EmptyQueryResponse()
    s.close()


def test_md5_login(pg_server: PgServer, connect: Callable[..., Session]) -> None:
    role = pg_server.create_role(method="md5")
    s = connect(11)
    start = s.start(user=role.name, password=role.password)
    auth = of(start, m.Authentication)
    assert [a.code for a in auth] == [m.AUTH_MD5_PASSWORD, m.AUTH_OK]
    assert len(auth[0].data) == 4
    assert s.query("select current_user")[1] == m.DataRow((role.name.encode(),))
    s.close()


def test_malformed_scram_proof(connect: Callable[..., Session]) -> None:
    s = connect(12)
    s.send(m.StartupMessage((("user", "postgres"),)))
    s.until(m.Authentication)
    s.send(m.PasswordMessage.for_sasl_initial("SCRAM-SHA-256", b"n,,n=,r=abc"))
    s.until(m.Authentication)
    s.send(m.PasswordMessage(b"c=biws,r=abc,p=AAAA"))
    error = s.until(m.ErrorResponse)[-1]
    assert isinstance(error, m.ErrorResponse)
    assert (error.severity, error.code, error.message) == (
        "FATAL",
        "08P01",
        "malformed SCRAM message",
    )
    s.sock.close()


def test_wrong_md5_password(pg_server: PgServer, connect: Callable[..., Session]) -> None:
    role = pg_server.create_role(method="md5")
    s = connect(13)
    s.send(m.StartupMessage((("user", role.name), ("database", "postgres"))))
    auth = s.until(m.Authentication)[-1]
    assert isinstance(auth, m.Authentication)
    assert auth.code == m.AUTH_MD5_PASSWORD
    s.send(m.PasswordMessage.for_password("md5" + "0" * 32))
    error = s.until(m.ErrorResponse)[-1]
    assert isinstance(error, m.ErrorResponse)
    assert error.code == "28P01"
    assert error.message == f'password authentication failed for user "{role.name}"'
    s.sock.close()


def test_errors_and_transaction_states(connect: Callable[..., Session]) -> None:
    s = connect(1)
    s.start()
    out = s.query("select * from no_such_table")
    (error,) = of(out, m.ErrorResponse)
    assert error.code == "42P01"
    assert error.severity == "ERROR"
    assert error.position == 15
    assert 'relation "no_such_table" does not exist' in error.message
    assert out[-1] == m.ReadyForQuery("I")

    assert s.query("begin")[-1] == m.ReadyForQuery("T")
    assert s.query("select 1/0")[-1] == m.ReadyForQuery("E")
    assert s.query("rollback")[-1] == m.ReadyForQuery("I")

    notice = s.query("do $$ begin raise notice 'hi %', 42; end $$")
    assert of(notice, m.NoticeResponse)[0].message == "hi 42"
    s.close()


def test_extended_query_with_binary_parameters(connect: Callable[..., Session]) -> None:
    s = connect(2)
    s.start()
    s.send(
        m.Parse("s1", "select $1::int4 + 1 as n, $2::text as t", (23, 0)),
        m.Describe("S", "s1"),
        m.Bind("", "s1", (1, 0), ((41).to_bytes(4, "big"), None), (1, 0)),
        m.Describe("P", ""),
        m.Execute("", 0),
        m.Close("S", "s1"),
        m.Sync(),
    )
    out = s.until_ready()
    assert [type(x) for x in out] == [
        m.ParseComplete,
        m.ParameterDescription,
        m.RowDescription,
        m.BindComplete,
        m.RowDescription,
        m.DataRow,
        m.CommandComplete,
        m.CloseComplete,
        m.ReadyForQuery,
    ]
    assert out[1] == m.ParameterDescription((23, 25))
    assert [f.format for f in out[4].fields] == [1, 0]
    assert out[5] == m.DataRow(((42).to_bytes(4, "big"), None))

    s.send(m.Parse("", "select generate_series(1, 5)"), m.Bind(), m.Execute("", 2), m.Sync())
    out = s.until_ready()
    assert len(of(out, m.DataRow)) == 2
    assert of(out, m.PortalSuspended) == [m.PortalSuspended()]

    s.send(m.Parse("", "create temp table t ()"), m.Bind(), m.Describe("P"), m.Execute(), m.Sync())
    assert m.NoData() in s.until_ready()

    s.send(m.Parse("", "select $1"), m.Bind(params=(b"x", b"y")), m.Sync())
    (error,) = of(s.until_ready(), m.ErrorResponse)
    assert error.code == "08P01"
    s.close()


def test_copy_out_and_in(connect: Callable[..., Session]) -> None:
    s = connect(3)
    s.start()
    out = s.query("copy (select g, 'r' || g from generate_series(1, 3) g) to stdout")
    assert of(out, m.CopyOutResponse) == [m.CopyOutResponse(0, (0, 0))]
    assert [x.data for x in of(out, m.CopyData)] == [
        b"1\tr1\n",
        b"2\tr2\n",
        b"3\tr3\n",
    ]
    assert m.CopyDone() in out
    assert m.CommandComplete("COPY 3") in out

    s.query("create temp table c (x int)")
    s.send(m.Query("copy c from stdin"))
    assert s.until(m.CopyInResponse)[-1] == m.CopyInResponse(0, (0,))
    s.send(m.CopyData(b"1\n2\n"), m.CopyData(b"3\n"), m.CopyDone())
    assert m.CommandComplete("COPY 3") in s.until_ready()

    s.send(m.Query("copy c from stdin"))
    s.until(m.CopyInResponse)
    s.send(m.CopyFail("changed my mind"))
    (error,) = of(s.until_ready(), m.ErrorResponse)
    assert error.code == "57014"
    assert "changed my mind" in error.message
    s.close()


def test_listen_notify(connect: Callable[..., Session]) -> None:
    s = connect(4)
    start = s.start()
    (key,) = of(start, m.BackendKeyData)
    out = s.query("listen chan; notify chan, 'payload é'")
    (note,) = of(out, m.NotificationResponse)
    assert note == m.NotificationResponse(key.pid, "chan", "payload é")
    s.close()


def test_protocol_3_2_and_negotiation(connect: Callable[..., Session]) -> None:
    s = connect(5)
    start = s.start(minor=2)
    (key,) = of(start, m.BackendKeyData)
    assert len(key.secret) == 32  # PostgreSQL 18, protocol 3.2
    s.close()

    s = connect(7)
    out = s.start(minor=9, **{"_pq_.nope": "1"})
    assert out[0] == m.NegotiateProtocolVersion(m.PROTOCOL_3_0 | 2, ("_pq_.nope",))
    assert out[0].newest_minor == 2
    s.close()


def test_ssl_request_refused_by_a_server_without_tls(connect: Callable[..., Session]) -> None:
    s = connect(8)
    s.send(m.SSLRequest())
    s.parser.expect_encryption_response()
    assert s.until(m.EncryptionResponse) == [m.EncryptionResponse("N")]
    s.start()
    assert s.query("select 1")[-1] == m.ReadyForQuery("I")
    s.close()


def test_cancel_request(pg_server: PgServer, connect: Callable[..., Session]) -> None:
    s = connect(9)
    (key,) = of(s.start(), m.BackendKeyData)
    s.send(m.Query("select pg_sleep(30)"))
    # a cancel that arrives before the query runs is ignored: wait until it runs
    deadline = time.monotonic() + 10
    with psycopg.connect(pg_server.admin_url, autocommit=True) as watcher:
        while not watcher.execute(
            "SELECT 1 FROM pg_stat_activity WHERE pid = %s AND state = 'active'", (key.pid,)
        ).fetchone():
            assert time.monotonic() < deadline, "the query never started"
            time.sleep(0.02)
    with socket.create_connection((pg_server.host, pg_server.port), timeout=10) as canceller:
        canceller.sendall(m.CancelRequest(key.pid, key.secret).encode())
        assert canceller.recv(1) == b""  # the server just closes
    (error,) = of(s.until_ready(), m.ErrorResponse)
    assert error.code == "57014"
    s.close()


def test_server_protocol_violation_matches_ours(connect: Callable[..., Session]) -> None:
    s = connect(10)
    s.start()
    garbage = b"\x01\0\0\0\x04"
    s.sock.sendall(garbage)
    (error,) = of(s.until(m.ErrorResponse), m.ErrorResponse)
    assert (error.severity, error.code) == ("FATAL", "08P01")
    ours = FrontendParser(startup=False)
    with pytest.raises(ProtocolViolation) as info:
        list(ours.feed(garbage))
    mine = info.value.to_error_response()
    assert (mine.severity, mine.code, mine.message) == (
        error.severity,
        error.code,
        error.message,
    )
    s.sock.close()
