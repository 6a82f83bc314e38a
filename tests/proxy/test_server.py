"""The proxy server against the suite's real PostgreSQL, with real clients.

psycopg (libpq 18) and a raw socket speaking through our codec connect to a
ProxyServer on 127.0.0.1 and a free port; everything must behave as it does when
connected to PostgreSQL itself: logins (trust, MD5, SCRAM, refusals), TLS offered or
refused, cancel, simple and extended queries, pipelines, COPY, notifications, big
results; and the proxy's own part: its cancel keys, 08P01 for a broken client.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Callable
from types import SimpleNamespace

import psycopg
import pytest
from psycopg import sql

from stripesync.proxy import messages as m
from stripesync.proxy.protocol import BackendParser
from tests.plugins.postgres import PgServer
from tests.proxy.conftest import RunningProxy, assert_cancels
from tests.proxy.test_protocol_server import Session


def raw_session(proxy: RunningProxy, pg_server: PgServer, seed: int = 0) -> Session:
    """Our codec's client (SCRAM/MD5 login and all), connected to the proxy."""
    target = SimpleNamespace(host="127.0.0.1", port=proxy.port, password=pg_server.password)
    return Session(target, seed)  # type: ignore[arg-type]


def read_until_closed(sock: socket.socket, timeout: float = 10) -> list[m.Message]:
    """Everything the peer sends until it closes the connection."""
    sock.settimeout(timeout)
    parser = BackendParser()
    out: list[m.Message] = []
    while data := sock.recv(65536):
        out.extend(parser.feed(data))
    assert parser.pending == 0
    return out


# -- queries of every kind --------------------------------------------------------------


def test_simple_and_extended_queries(pg_server: PgServer, proxy: RunningProxy) -> None:
    url = proxy.url(pg_server.admin_url, application_name="via-proxy")
    with psycopg.connect(url, autocommit=True) as conn:
        assert conn.execute("select current_setting('application_name')").fetchone() == (
            "via-proxy",
        )
        # extended protocol, text and binary
        assert conn.execute("select %s::int + 1, %s::text", [41, "é"]).fetchone() == (42, "é")
        cur = conn.cursor(binary=True)
        assert cur.execute("select %b::int8 * 2, %b::bytea", [21, b"\0\xff"]).fetchone() == (
            42,
            b"\0\xff",
        )
        # server-side prepared statements (psycopg prepares from the 5th run)
        for i in range(7):
            assert conn.execute("select %s::int * 2", [i], prepare=True).fetchone() == (2 * i,)
        # multi-statement simple query: every result comes back
        cur = conn.cursor()
        cur.execute("select 1 as a; select 'two' as b, 3 as c; select 4 where false")
        results = [cur.fetchall()]
        while cur.nextset():
            results.append(cur.fetchall())
        assert results == [[(1,)], [("two", 3)], []]
        # errors, and the session goes on
        with pytest.raises(psycopg.errors.UndefinedTable):
            conn.execute("select * from no_such_table")
        with pytest.raises(psycopg.errors.DivisionByZero):
            conn.execute("select 1 / %s::int", [0])
        assert conn.execute("select 'still here'").fetchone() == ("still here",)

    with psycopg.connect(url) as conn:  # transaction states pass through
        conn.execute("create temp table t (x int)")
        conn.commit()
        conn.execute("insert into t values (1)")
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
        with pytest.raises(psycopg.errors.UndefinedColumn):
            conn.execute("select nope from t")
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INERROR
        conn.rollback()
        assert conn.execute("select count(*) from t").fetchone() == (0,)


def test_pipeline_mode(pg_server: PgServer, proxy: RunningProxy) -> None:
    with psycopg.connect(proxy.url(pg_server.admin_url), autocommit=True) as conn:
        conn.execute("create temp table p (x int primary key)")
        with conn.pipeline() as pipe:
            curs = [
                conn.execute("insert into p values (%s) returning x * 10", [i]) for i in range(50)
            ]
            pipe.sync()
            assert [c.fetchone() for c in curs] == [(i * 10,) for i in range(50)]
            # an error in the middle of a pipeline: the rest of its batch is skipped. The
            # client reports the error at the first call after its result arrives (a
            # later execute or the sync, depending on timing): what PostgreSQL
            # guarantees is which statements ran.
            first = conn.execute("select 1")
            raised: list[type[psycopg.Error]] = []
            for step in (
                lambda: conn.execute("insert into p values (1)"),  # duplicate key
                lambda: conn.execute("insert into p values (1000)"),  # skipped by the server
                pipe.sync,
                pipe.sync,  # whatever the first reported, nothing is left pending
            ):
                try:
                    step()
                except psycopg.Error as e:
                    raised.append(type(e))
            assert raised[0] is psycopg.errors.UniqueViolation
            assert set(raised[1:]) <= {psycopg.errors.PipelineAborted}, raised
            assert first.fetchone() == (1,)
        assert conn.execute("select count(*), max(x) from p").fetchone() == (50, 49)


def test_copy_both_ways(pg_server: PgServer, proxy: RunningProxy) -> None:
    with psycopg.connect(proxy.url(pg_server.admin_url), autocommit=True) as conn:
        conn.execute("create temp table c (x int, y text)")
        with conn.cursor() as cur, cur.copy("copy c from stdin") as copy:
            for i in range(20_000):
                copy.write_row((i, f"row {i}"))
        assert conn.execute("select count(*), sum(x), max(y) from c").fetchone() == (
            20_000,
            sum(range(20_000)),
            "row 9999",
        )
        with (
            conn.cursor() as cur,
            cur.copy("copy (select x, y from c order by x) to stdout") as copy,
        ):
            rows = [(int(x), y) for x, y in copy.rows()]
        assert len(rows) == 20_000 and rows[123] == (123, "row 123")
        # a COPY the client aborts
        with (
            pytest.raises(psycopg.errors.QueryCanceled),
            conn.cursor() as cur,
            cur.copy("copy c from stdin") as copy,
        ):
            copy.write_row((1, "x"))
            raise psycopg.errors.QueryCanceled("stop")  # psycopg sends CopyFail
        assert conn.execute("select count(*) from c").fetchone() == (20_000,)


def test_listen_notify_between_sessions(pg_server: PgServer, proxy: RunningProxy) -> None:
    url = proxy.url(pg_server.admin_url)
    with (
        psycopg.connect(url, autocommit=True) as listener,
        psycopg.connect(url, autocommit=True) as talker,
    ):
        listener.execute("listen proxy_chan")
        talker.execute("notify proxy_chan, 'one'")
        talker.execute("select pg_notify('proxy_chan', 'two')")
        notes = list(listener.notifies(timeout=5, stop_after=2))
        assert [(n.channel, n.payload) for n in notes] == [
            ("proxy_chan", "one"),
            ("proxy_chan", "two"),
        ]
        # the pid in a notification is the upstream backend's, as PostgreSQL sends it
        assert notes[0].pid == talker.execute("select pg_backend_pid()").fetchone()[0]  # type: ignore[index]


def test_large_result(pg_server: PgServer, proxy: RunningProxy) -> None:
    with psycopg.connect(proxy.url(pg_server.admin_url), autocommit=True) as conn:
        rows = conn.execute(
            "select i, repeat('x', i % 50), i::float8 / 3 from generate_series(1, 200000) i"
        ).fetchall()
        assert len(rows) == 200_000
        assert sum(r[0] for r in rows) == 200_000 * 200_001 // 2
        assert rows[-1][:2] == (200_000, "x" * (200_000 % 50))
        # and a wide one: 64 rows of 1 MB
        big = conn.execute("select repeat(md5(i::text), 32768) from generate_series(1, 64) i")
        assert [len(r[0]) for r in big.fetchall()] == [1 << 20] * 64


def test_many_sessions_at_once(pg_server: PgServer, proxy: RunningProxy) -> None:
    url = proxy.url(pg_server.admin_url)
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            with psycopg.connect(url, autocommit=True) as conn:
                for i in range(50):
                    assert conn.execute("select %s::int + %s", [n, i]).fetchone() == (n + i,)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    deadline = time.monotonic() + 5
    while proxy.sessions and time.monotonic() < deadline:
        time.sleep(0.01)
    assert proxy.sessions == 0


# -- logins -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "codes"),
    [
        ("scram-sha-256", [m.AUTH_SASL, m.AUTH_SASL_CONTINUE, m.AUTH_SASL_FINAL, m.AUTH_OK]),
        ("md5", [m.AUTH_MD5_PASSWORD, m.AUTH_OK]),
    ],
)
def test_password_logins_are_relayed(
    pg_server: PgServer, proxy: RunningProxy, method: str, codes: list[int]
) -> None:
    role = pg_server.create_role(method=method)  # type: ignore[arg-type]
    with psycopg.connect(proxy.url(role.url())) as conn:
        assert conn.execute("select current_user").fetchone() == (role.name,)
    # the server's own challenge reaches the client, unchanged
    s = raw_session(proxy, pg_server, seed=3)
    start = s.start(user=role.name, password=role.password)
    assert [a.code for a in start if isinstance(a, m.Authentication)] == codes
    assert s.query("select current_user")[1] == m.DataRow((role.name.encode(),))
    s.close()


def test_wrong_password_gets_postgresql_own_error(pg_server: PgServer, proxy: RunningProxy) -> None:
    role = pg_server.create_role(method="scram-sha-256")
    bad = proxy.url(role.url(), password="not-the-password")
    with pytest.raises(psycopg.OperationalError) as info:
        psycopg.connect(bad)
    assert f'password authentication failed for user "{role.name}"' in str(info.value)

    md5_role = pg_server.create_role(method="md5")
    s = raw_session(proxy, pg_server, seed=5)
    s.send(m.StartupMessage((("user", md5_role.name), ("database", "postgres"))))
    (challenge,) = s.until(m.Authentication)
    assert isinstance(challenge, m.Authentication) and challenge.code == m.AUTH_MD5_PASSWORD
    s.send(m.PasswordMessage.for_password("md5" + "0" * 32))
    out = read_until_closed(s.sock)
    (error,) = out
    assert isinstance(error, m.ErrorResponse)
    assert (error.severity, error.code) == ("FATAL", "28P01")
    assert error.message == f'password authentication failed for user "{md5_role.name}"'


def test_trust_login_through_a_unix_socket_upstream(
    pg_server: PgServer, start_proxy: Callable[..., RunningProxy]
) -> None:
    proxy = start_proxy(pg_server.socket_url)  # the server trusts its Unix socket
    s = raw_session(proxy, pg_server)
    start = s.start(password="")
    assert [a.code for a in start if isinstance(a, m.Authentication)] == [m.AUTH_OK]
    assert s.query("select current_user")[1] == m.DataRow((b"postgres",))
    s.close()


def test_unknown_database_and_upstream_down(
    pg_server: PgServer, proxy: RunningProxy, start_proxy: Callable[..., RunningProxy]
) -> None:
    with pytest.raises(psycopg.OperationalError, match='database "no_such_db" does not exist'):
        psycopg.connect(proxy.url(pg_server.admin_url, dbname="no_such_db"))
    # nothing listens upstream: a FATAL 08006 from the proxy, without the password
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead_port = probe.getsockname()[1]
    down = start_proxy(f"postgresql://postgres:hunter2@127.0.0.1:{dead_port}/postgres")
    with pytest.raises(psycopg.OperationalError) as info:
        psycopg.connect(down.url(pg_server.admin_url))
    text = str(info.value)
    assert f"cannot connect to 127.0.0.1:{dead_port}" in text
    assert "hunter2" not in text


# -- TLS ------------------------------------------------------------------------------


def test_ssl_request_refused_without_a_certificate(
    pg_server: PgServer, proxy: RunningProxy
) -> None:
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as sock:
        sock.sendall(m.SSLRequest().encode())
        assert sock.recv(1) == b"N"
        sock.sendall(m.GSSENCRequest().encode())
        assert sock.recv(1) == b"N"
    with pytest.raises(psycopg.OperationalError, match="server does not support SSL"):
        psycopg.connect(proxy.url(pg_server.admin_url, sslmode="require"))
    with psycopg.connect(proxy.url(pg_server.admin_url, sslmode="prefer")) as conn:
        assert conn.pgconn.ssl_in_use is False
        assert conn.execute("select 1").fetchone() == (1,)


def test_tls_with_a_certificate(
    pg_server: PgServer,
    start_proxy: Callable[..., RunningProxy],
    tls_files: tuple,  # type: ignore[type-arg]
) -> None:
    cert, key = tls_files
    proxy = start_proxy(pg_server.admin_url, tls_cert=cert, tls_key=key)
    url = proxy.url(pg_server.admin_url, sslmode="verify-full", sslrootcert=str(cert))
    with psycopg.connect(url) as conn:
        assert conn.pgconn.ssl_in_use is True
        assert conn.execute("select %s::text", ["über TLS"]).fetchone() == ("über TLS",)
        # the upstream leg is the server's business: plain here (sslmode=prefer, no TLS)
        assert conn.execute(
            "select ssl from pg_stat_ssl where pid = pg_backend_pid()"
        ).fetchone() == (False,)
    md5_role = pg_server.create_role(method="md5")
    with psycopg.connect(proxy.url(md5_role.url(), sslmode="require")) as conn:
        assert conn.execute("select current_user").fetchone() == (md5_role.name,)
    # plain text is still allowed (PostgreSQL's pg_hba decides what it accepts)
    with psycopg.connect(proxy.url(pg_server.admin_url, sslmode="disable")) as conn:
        assert conn.pgconn.ssl_in_use is False
    # bytes after the SSLRequest, before our answer, are refused (CVE-2021-23214)
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as sock:
        sock.sendall(m.SSLRequest().encode() + m.StartupMessage((("user", "x"),)).encode())
        (error,) = read_until_closed(sock)
        assert isinstance(error, m.ErrorResponse) and error.code == "08P01"
        assert error.message == "received unencrypted data after SSL request"


# -- cancel -----------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["3.0", "3.2"])
def test_cancel_request_reaches_the_upstream(
    pg_server: PgServer, proxy: RunningProxy, protocol: str
) -> None:
    url = proxy.url(pg_server.admin_url, max_protocol_version=protocol)
    with psycopg.connect(url, autocommit=True) as conn:
        upstream_pid = conn.execute("select pg_backend_pid()").fetchone()[0]  # type: ignore[index]
        # the key the client holds is the proxy's, not the server's
        assert conn.info.backend_pid != upstream_pid

        # (libpq's older, blocking PQcancel holds the GIL: test_cli.py runs it against a
        # proxy in its own process)
        assert_cancels(conn, conn.cancel_safe)
        assert conn.execute("select 'after cancel'").fetchone() == ("after cancel",)

        # a cancel request with a wrong key is ignored
        def wrong_key() -> None:
            with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as sock:
                sock.sendall(m.CancelRequest(conn.info.backend_pid, b"\0" * 4).encode())
                assert sock.recv(1) == b""  # closed without an answer, as PostgreSQL does

        timer = threading.Timer(0.1, wrong_key)
        timer.start()
        assert conn.execute("select 'not cancelled' from pg_sleep(0.5)").fetchone() == (
            "not cancelled",
        )
        timer.join()


# -- broken clients ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("garbage", "message"),
    [
        (b"\x01\0\0\0\x04", "invalid frontend message type 1"),
        (b"Q\0\0\0\x02", "invalid message length 2 for message type 'Q' (limit 1073741822)"),
        (b"Q\0\0\0\x08abcd", "invalid string in message: no terminating NUL"),
        (b"S\0\0\0\x08abcd", "invalid message format: Sync has a body"),
    ],
)
def test_malformed_messages_get_08P01_and_the_proxy_goes_on(
    pg_server: PgServer, proxy: RunningProxy, garbage: bytes, message: str
) -> None:
    s = raw_session(proxy, pg_server)
    s.start()
    assert s.query("select 1")[1] == m.DataRow((b"1",))
    s.sock.sendall(garbage)
    out = read_until_closed(s.sock)
    assert len(out) == 1 and isinstance(out[0], m.ErrorResponse)
    assert (out[0].severity, out[0].code, out[0].message) == ("FATAL", "08P01", message)
    with psycopg.connect(proxy.url(pg_server.admin_url)) as conn:  # others still served
        assert conn.execute("select 2").fetchone() == (2,)


def test_malformed_startup_packets_get_08P01(pg_server: PgServer, proxy: RunningProxy) -> None:
    cases = [
        (struct.pack("!i", 3), "invalid length of startup packet: 3"),
        (struct.pack("!ii", 8, 0x00020000), None),  # protocol 2: 0A000
        (struct.pack("!ii", 9, 80877103) + b"x", "invalid length of SSLRequest packet: 9"),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc", None),  # a direct TLS ClientHello
    ]
    for packet, message in cases:
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as sock:
            sock.sendall(packet)
            (error,) = read_until_closed(sock)
            assert isinstance(error, m.ErrorResponse) and error.severity == "FATAL"
            if message is not None:
                assert (error.code, error.message) == ("08P01", message)
            else:
                assert error.code in ("08P01", "0A000")


def test_a_broken_client_mid_result_gets_its_error_at_a_message_boundary(
    pg_server: PgServer, proxy: RunningProxy
) -> None:
    s = raw_session(proxy, pg_server)
    s.start()
    # ask for a big result and break the protocol while it streams
    s.sock.sendall(
        m.Query("select repeat('y', 1000) from generate_series(1, 20000)").encode()
        + b"\x02\0\0\0\x04"
    )
    out = read_until_closed(s.sock, timeout=15)
    assert isinstance(out[-1], m.ErrorResponse) and out[-1].code == "08P01"
    assert all(
        isinstance(x, m.RowDescription | m.DataRow | m.CommandComplete | m.ReadyForQuery)
        for x in out[:-1]
    )


def test_stop_closes_every_session(
    pg_server: PgServer, start_proxy: Callable[..., RunningProxy]
) -> None:
    proxy = start_proxy(pg_server.admin_url)
    conns = [psycopg.connect(proxy.url(pg_server.admin_url), autocommit=True) for _ in range(3)]
    pids = [c.execute("select pg_backend_pid()").fetchone()[0] for c in conns]  # type: ignore[index]
    assert proxy.sessions == 3
    proxy.stop()
    for conn in conns:
        with pytest.raises(psycopg.OperationalError):
            conn.execute("select 1")
        conn.close()
    # the upstream sessions end too
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        alive = pg_server.execute(
            sql.SQL("select count(*) from pg_stat_activity where pid = any(%s)"), [pids]
        )[0][0]
        if alive == 0:
            break
        time.sleep(0.02)
    assert alive == 0


def test_a_silent_or_vanishing_client_is_dropped(
    pg_server: PgServer, start_proxy: Callable[..., RunningProxy]
) -> None:
    proxy = start_proxy(pg_server.admin_url, startup_timeout=0.5)
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as sock:
        (error,) = read_until_closed(sock)  # says nothing: dropped after the timeout
        assert isinstance(error, m.ErrorResponse)
        assert (error.code, error.message) == ("08006", "canceling authentication due to timeout")

    proxy = start_proxy(pg_server.admin_url)  # the default timeout: a minute

    def wait_for_sessions(count: int) -> None:
        deadline = time.monotonic() + 5
        while proxy.sessions != count and time.monotonic() < deadline:
            time.sleep(0.01)
        assert proxy.sessions == count

    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as sock:
        sock.sendall(m.StartupMessage((("user", "postgres"),)).encode()[:7])  # half a packet
        wait_for_sessions(1)
    wait_for_sessions(0)  # gone with its client
