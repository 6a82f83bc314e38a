"""The write-handler seam: trivial handlers take over claimed statements.

The handlers here stand in for the real write interceptor: they answer a claimed
simple Query or Execute themselves (and may run statements on the client's own server
session through ``exchange``); everything they do not claim passes through.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import psycopg
import pytest

from stripesync.proxy import messages as m
from stripesync.proxy.hooks import ExtendedCall, ProxySession
from tests.plugins.postgres import PgServer
from tests.proxy.conftest import RunningProxy
from tests.proxy.test_server import raw_session, read_until_closed

REFUSED = m.ErrorResponse.create("23514", "Stripe refused the write", detail="No such customer")


class FakeWrites:
    """Claims INSERTs into ``stripe.customer`` (simple) and into ``t`` (extended)."""

    def __init__(self, *, decline: bool = False, fail: bool = False, refuse: bool = False) -> None:
        self.decline = decline
        self.fail = fail
        self.refuse = refuse
        self.claimed: list[str] = []
        self.queries: list[tuple[str, str]] = []
        self.executes: list[ExtendedCall] = []
        self.parses: list[str] = []

    def claims(self, sql: str) -> bool:
        hit = re.match(r"\s*insert\s+into\s+(stripe\.customer|t)\b", sql, re.IGNORECASE)
        if hit:
            self.claimed.append(sql)
        return hit is not None

    async def handle_query(self, session: ProxySession, query: m.Query) -> bool:
        if self.fail:
            raise RuntimeError("the handler broke; the client must not see this")
        self.queries.append((query.query, session.transaction_status))
        if self.decline or session.transaction_status == "E":
            return False  # the server refuses it by itself
        if self.refuse:
            await session.reject(REFUSED)
            return True
        session.send(m.CommandComplete("INSERT 0 1"), m.ReadyForQuery(session.transaction_status))
        return True

    async def handle_parse(self, session: ProxySession, parse: m.Parse) -> bool:
        self.parses.append(parse.query)
        return False  # the Execute is where this handler answers

    async def handle_execute(self, session: ProxySession, call: ExtendedCall) -> bool:
        self.executes.append(call)
        if self.decline:
            return False
        if self.refuse:
            await session.reject(REFUSED)
            return True
        # PostgreSQL evaluates the client's parameter, on the client's own session
        answer = await session.exchange(
            m.Parse("stripesync_probe", "select $1::int * 2", call.parse.param_types),
            m.Bind("stripesync_probe", "stripesync_probe", call.bind.param_formats,
                   call.bind.params, (0,)),
            m.Execute("stripesync_probe", 0),
            m.Close("P", "stripesync_probe"),
            m.Close("S", "stripesync_probe"),
        )  # fmt: skip
        errors = [x.message for x in answer if isinstance(x, m.ErrorResponse)]
        assert not errors, errors
        assert [type(x).__name__ for x in answer] == [
            "ParseComplete",
            "BindComplete",
            "DataRow",
            "CommandComplete",
            "CloseComplete",
            "CloseComplete",
        ]
        row = answer[2]
        assert isinstance(row, m.DataRow) and row.values[0] is not None
        session.send(m.CommandComplete(f"INSERT 0 {int(row.values[0])}"))
        return True


def test_a_handler_takes_over_a_simple_query(
    pg_server: PgServer, start_proxy: Callable[..., RunningProxy]
) -> None:
    handler = FakeWrites()
    proxy = start_proxy(pg_server.admin_url, write_handler=handler)
    with psycopg.connect(proxy.url(pg_server.admin_url), autocommit=True) as conn:
        cur = conn.execute("INSERT INTO stripe.customer (email) VALUES ('a@example.com')")
        assert (cur.statusmessage, cur.rowcount) == ("INSERT 0 1", 1)
        # it never reached PostgreSQL: there is no such table
        with pytest.raises(psycopg.errors.UndefinedTable):
            conn.execute("select * from stripe.customer")
        assert conn.execute("select 'reads pass'").fetchone() == ("reads pass",)
    with psycopg.connect(proxy.url(pg_server.admin_url)) as conn:  # inside a transaction
        conn.execute("select 1")
        conn.execute("insert into stripe.customer (email) values ('b@example.com')")
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
        conn.commit()
    assert handler.queries == [
        ("INSERT INTO stripe.customer (email) VALUES ('a@example.com')", "I"),
        ("insert into stripe.customer (email) values ('b@example.com')", "T"),
    ]


def test_the_reply_comes_after_earlier_pipelined_results(
    pg_server: PgServer, start_proxy: Callable[..., RunningProxy]
) -> None:
    proxy = start_proxy(pg_server.admin_url, write_handler=FakeWrites())
    s = raw_session(proxy, pg_server)
    s.start()
    s.send(
        m.Query("select pg_sleep(0.2), 'first'"),
        m.Query("insert into stripe.customer values (1)"),
        m.Query("select 'last'"),
    )
    out = s.until_ready() + s.until_ready() + s.until_ready()
    assert [type(x).__name__ for x in out] == [
        "RowDescription", "DataRow", "CommandComplete", "ReadyForQuery",
        "CommandComplete", "ReadyForQuery",
        "RowDescription", "DataRow", "CommandComplete", "ReadyForQuery",
    ]  # fmt: skip
    assert out[4] == m.CommandComplete("INSERT 0 1")
    assert out[7] == m.DataRow((b"last",))
    s.close()


def test_a_handler_takes_over_an_execute_and_uses_the_session(
    pg_server: PgServer, start_proxy: Callable[..., RunningProxy]
) -> None:
    handler = FakeWrites()
    proxy = start_proxy(pg_server.admin_url, write_handler=handler)
    with psycopg.connect(proxy.url(pg_server.admin_url), autocommit=True) as conn:
        conn.execute("create temp table t (x int)")
        cur = conn.execute("insert into t values (%s)", [21])
        assert (cur.statusmessage, cur.rowcount) == ("INSERT 0 42", 42)
        # prepared, binary, in a pipeline between reads
        with conn.pipeline():
            a = conn.execute("select 'a'")
            b = conn.execute("insert into t values (%b)", [5], prepare=True)
            c = conn.execute("select 'c'")
        assert (a.fetchone(), b.rowcount, c.fetchone()) == (("a",), 10, ("c",))
        assert conn.execute("select count(*) from t").fetchone() == (0,)  # none went in
    (first, second) = handler.executes
    assert first.parse.query == "insert into t values ($1)"
    assert first.parse.param_types == (21,)  # psycopg sends a small int as binary int2
    assert (first.bind.param_formats, first.bind.params) == ((1,), (b"\0\x15",))
    assert (second.bind.param_formats, second.bind.params) == ((1,), (b"\0\x05",))


def test_a_declining_handler_passes_everything_through(
    pg_server: PgServer, start_proxy: Callable[..., RunningProxy]
) -> None:
    handler = FakeWrites(decline=True)
    proxy = start_proxy(pg_server.admin_url, write_handler=handler)
    with psycopg.connect(proxy.url(pg_server.admin_url), autocommit=True) as conn:
        conn.execute("create temp table t (x int)")
        conn.execute("insert into t values (1)")
        conn.execute("insert into t values (%s)", [2])
        with pytest.raises(psycopg.errors.UndefinedTable):
            conn.execute("insert into stripe.customer values (1)")
        assert conn.execute("select array_agg(x order by x) from t").fetchone() == ([1, 2],)
    assert len(handler.queries) == 2 and len(handler.executes) == 1


def test_a_failing_handler_ends_only_its_session(
    pg_server: PgServer, start_proxy: Callable[..., RunningProxy]
) -> None:
    proxy = start_proxy(pg_server.admin_url, write_handler=FakeWrites(fail=True))
    s = raw_session(proxy, pg_server)
    s.start()
    s.send(m.Query("insert into stripe.customer values (1)"))
    (error,) = read_until_closed(s.sock)
    assert isinstance(error, m.ErrorResponse)
    assert (error.severity, error.code) == ("FATAL", "XX000")
    assert error.message == "stripesync proxy: internal error in the write handler"
    with psycopg.connect(proxy.url(pg_server.admin_url)) as conn:
        assert conn.execute("select 'others fine'").fetchone() == ("others fine",)


def test_a_refused_write_leaves_the_session_as_postgresql_would(
    pg_server: PgServer, start_proxy: Callable[..., RunningProxy]
) -> None:
    handler = FakeWrites(refuse=True)
    proxy = start_proxy(pg_server.admin_url, write_handler=handler)
    with psycopg.connect(proxy.url(pg_server.admin_url)) as conn:
        conn.execute("create temp table t (x int)")
        conn.execute("create temp table kept (x int)")
        conn.commit()
        # simple Query inside a transaction block: the block fails
        conn.execute("insert into kept values (1)")
        with pytest.raises(psycopg.errors.CheckViolation) as info:
            conn.execute("insert into stripe.customer values (1)")
        assert info.value.diag.message_detail == "No such customer"
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INERROR
        with pytest.raises(psycopg.errors.InFailedSqlTransaction):
            conn.execute("select 1")
        # in the failed block the handler lets the server answer
        with pytest.raises(psycopg.errors.InFailedSqlTransaction):
            conn.execute("insert into stripe.customer values (2)")
        conn.rollback()
        assert conn.execute("select count(*) from kept").fetchone() == (0,)
        conn.commit()

        # extended protocol in a pipeline: the rest of the batch is skipped
        conn.autocommit = True
        with conn.pipeline() as pipe:
            before = conn.execute("insert into kept values (%s) returning x", [7])
            # psycopg reports the refusal at the first call after it arrives (a later
            # execute or the sync, by timing): what is checked is what the server ran
            raised: list[type[psycopg.Error]] = []
            for step in (
                lambda: conn.execute("insert into t values (%s)", [1]),  # refused
                lambda: conn.execute("insert into kept values (%s)", [8]),  # skipped
                pipe.sync,
                pipe.sync,
            ):
                try:
                    step()
                except psycopg.Error as e:
                    raised.append(type(e))
            assert raised[0] is psycopg.errors.CheckViolation
            assert set(raised[1:]) <= {psycopg.errors.PipelineAborted}, raised
            assert before.fetchone() == (7,)
        # the batch was one implicit transaction: the insert before the refusal is undone,
        # the one after it skipped
        assert conn.execute("select count(*) from kept").fetchone() == (0,)
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    assert [status for _, status in handler.queries] == ["T", "E"]
    assert len(handler.executes) == 1
