"""ResponseTracker (which answers the relay still waits for) and UpstreamConfig, sans I/O."""

from __future__ import annotations

import random

import pytest

from stripesync.proxy import messages as m
from stripesync.proxy.errors import ProtocolViolation
from stripesync.proxy.tracking import ResponseTracker
from stripesync.proxy.upstream import UpstreamConfig, UpstreamError


def wire(*messages: m.Message) -> bytes:
    return b"".join(x.encode() for x in messages)


def sent(tracker: ResponseTracker, *messages: m.Message) -> None:
    for message in messages:
        tracker.sent(message.encode()[0])


def chunks(data: bytes, rng: random.Random) -> list[bytes]:
    out: list[bytes] = []
    pos = 0
    while pos < len(data):
        step = rng.choice((1, 2, 3, 5, 6, 7, rng.randint(1, 64)))
        out.append(data[pos : pos + step])
        pos += step
    return out


ROWS = (
    m.RowDescription((m.FieldDescription("x"),)),
    *(m.DataRow((str(i).encode() * i,)) for i in range(40)),
)


def test_simple_query_waits_for_ready_for_query() -> None:
    for seed in range(30):
        rng = random.Random(seed)
        tracker = ResponseTracker()
        sent(tracker, m.Query("select ...; begin"))
        stream = wire(
            *ROWS,
            m.CommandComplete("SELECT 40"),
            m.ParameterStatus("TimeZone", "Europe/Paris"),
            m.NoticeResponse.create("01000", "hello"),
            m.CommandComplete("BEGIN"),
            m.ReadyForQuery("T"),
        )
        for piece in chunks(stream[:-1], rng):
            tracker.feed(piece)
            assert not tracker.idle
        tracker.feed(stream[-1:])
        assert tracker.idle and tracker.at_boundary
        assert tracker.status == "T"
        assert tracker.parameters == {"TimeZone": "Europe/Paris"}


def test_extended_messages_each_have_their_answer() -> None:
    tracker = ResponseTracker()
    sent(
        tracker,
        m.Parse("", "select $1"),
        m.Bind("", "", (), (b"1",), ()),
        m.Describe("P", ""),
        m.Execute("", 0),
        m.Close("S", "x"),
        m.Flush(),
    )
    assert tracker.pending == 5  # Flush is not answered
    steps = [
        (m.ParseComplete(), 4),
        (m.BindComplete(), 3),
        (ROWS[0], 2),  # Describe's RowDescription
        (ROWS[1], 2),
        (m.CommandComplete("SELECT 1"), 1),
        (m.CloseComplete(), 0),
    ]
    for message, pending in steps:
        tracker.feed(message.encode())
        assert tracker.pending == pending, message
    sent(tracker, m.Describe("S", "s"), m.Execute("p", 10), m.Sync())
    for message, pending in [
        (m.ParameterDescription((23,)), 3),
        (m.NoData(), 2),
        (m.DataRow((b"1",)), 2),
        (m.PortalSuspended(), 1),
        (m.ReadyForQuery("I"), 0),
    ]:
        tracker.feed(message.encode())
        assert tracker.pending == pending, message


def test_executes_since_the_last_ready_for_query_are_known() -> None:
    tracker = ResponseTracker()
    sent(tracker, m.Parse("", "begin"), m.Bind())
    assert not tracker.executed  # parsed and bound, nothing run yet
    sent(tracker, m.Execute())
    assert tracker.executed  # the batch ran a statement: the status may have changed
    tracker.feed(wire(m.ParseComplete(), m.BindComplete(), m.CommandComplete("BEGIN")))
    assert tracker.executed and tracker.status == "I"
    sent(tracker, m.Sync())
    tracker.feed(wire(m.ReadyForQuery("T")))
    assert not tracker.executed and tracker.status == "T"


def test_an_extended_error_skips_to_sync() -> None:
    tracker = ResponseTracker()
    error = m.ErrorResponse.create("42P01", "no such table")
    sent(tracker, m.Parse("", "bad"), m.Bind(), m.Execute(), m.Sync(), m.Query("select 1"))
    tracker.feed(wire(error))
    assert tracker.pending == 2 and not tracker.ignoring_till_sync  # the Sync, the Query
    tracker.feed(wire(m.ReadyForQuery("I"), m.ErrorResponse.create("42601", "x")))
    assert tracker.pending == 1  # a simple Query's error: ReadyForQuery still to come
    tracker.feed(wire(m.ReadyForQuery("I")))
    assert tracker.idle

    # no Sync sent yet: the server drops what follows until one comes
    sent(tracker, m.Parse("", "bad"), m.Bind(), m.Flush())
    tracker.feed(wire(error))
    assert tracker.idle and tracker.ignoring_till_sync
    sent(tracker, m.Execute(), m.Query("select 1"), m.Describe("P", ""))
    assert tracker.idle
    sent(tracker, m.Sync())
    assert tracker.pending == 1 and not tracker.ignoring_till_sync
    tracker.feed(wire(m.ReadyForQuery("E")))
    assert tracker.idle and tracker.status == "E"


def test_copy_and_function_calls() -> None:
    tracker = ResponseTracker()
    sent(tracker, m.Query("copy t from stdin"), m.CopyData(b"1\n"), m.CopyDone())
    tracker.feed(wire(m.CopyInResponse(0, (0,)), m.CommandComplete("COPY 1")))
    assert tracker.pending == 1
    tracker.feed(wire(m.ReadyForQuery("I")))
    sent(tracker, m.Parse("", "copy t to stdout"), m.Bind(), m.Execute(), m.Sync())
    tracker.feed(
        wire(
            m.ParseComplete(),
            m.BindComplete(),
            m.CopyOutResponse(0, (0,)),
            m.CopyData(b"1\n"),
            m.CopyDone(),
        )
    )
    assert tracker.pending == 2
    tracker.feed(wire(m.CommandComplete("COPY 1"), m.ReadyForQuery("I")))
    assert tracker.idle
    sent(tracker, m.FunctionCall(1, (), (), 0))
    tracker.feed(wire(m.FunctionCallResponse(b"x")))
    assert tracker.pending == 1
    tracker.feed(wire(m.ReadyForQuery("I")))
    assert tracker.idle


def test_a_huge_row_is_skipped_by_its_length() -> None:
    tracker = ResponseTracker()
    sent(tracker, m.Query("select big"))
    row = m.DataRow((b"x" * 1_000_000,)).encode()
    tracker.feed(row[:3])
    assert not tracker.at_boundary
    tracker.feed(row[3:100])
    assert tracker._skip == len(row) - 100  # no bytes kept for it
    tracker.feed(row[100:] + wire(m.CommandComplete("SELECT 1"), m.ReadyForQuery("I")))
    assert tracker.idle and tracker.at_boundary


def test_notifications_while_idle_are_just_passed() -> None:
    tracker = ResponseTracker()
    tracker.feed(wire(m.NotificationResponse(7, "chan", "x")))
    assert tracker.idle and tracker.at_boundary


@pytest.mark.parametrize(
    "data", [b"Z\0\0\0\x03", b"D\0\0\0\x00", b"Z\0\0\0\x06II", b"T\xff\xff\xff\xff"]
)
def test_garbage_from_the_server_is_a_violation(data: bytes) -> None:
    tracker = ResponseTracker()
    sent(tracker, m.Query("x"))
    with pytest.raises(ProtocolViolation):
        tracker.feed(data)


# -- UpstreamConfig ---------------------------------------------------------------------


def test_upstream_from_a_url() -> None:
    config = UpstreamConfig.from_url("postgresql://bob:s3cret@db.example:6000/app")
    assert (config.host, config.port, config.sslmode) == ("db.example", 6000, "prefer")
    assert config.uses_tls and config.unix_path is None
    assert config.describe() == "db.example:6000"
    config = UpstreamConfig.from_url("postgresql://u@/app?host=/run/pg&port=5444&sslmode=require")
    assert config.unix_path == "/run/pg/.s.PGSQL.5444"
    assert not config.uses_tls and config.describe() == "/run/pg/.s.PGSQL.5444"
    config = UpstreamConfig.from_url("host=a,b port=1,2 sslmode=disable hostaddr=10.0.0.1")
    assert (config.host, config.port, config.hostaddr, config.uses_tls) == (
        "a",
        1,
        "10.0.0.1",
        False,
    )
    assert config.describe() == "10.0.0.1:1"
    assert UpstreamConfig.from_url("postgresql://[::1]:7/x").describe() == "[::1]:7"
    assert UpstreamConfig.from_url("postgresql:///x").host == "localhost"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgresql://u:s3cret@h/x?sslmode=sometimes", "invalid sslmode"),
        ("postgresql://u:s3cret@h:99999/x", "invalid port"),
        ("host=h password=s3cret nonsense", "invalid database URL"),
        ("postgresql://u:s3cret@h/x?bogus_option=1", "invalid database URL"),
    ],
)
def test_upstream_url_errors_keep_the_password_out(url: str, message: str) -> None:
    with pytest.raises(UpstreamError) as info:
        UpstreamConfig.from_url(url)
    assert message in str(info.value)
    assert "s3cret" not in str(info.value) and info.value.__cause__ is None
