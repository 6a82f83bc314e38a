"""The wire-protocol layer, case by case: byte layouts, states, limits, violations."""

from __future__ import annotations

import struct
import tracemalloc

import pytest

from stripesync.proxy import messages as m
from stripesync.proxy.errors import ProtocolViolation
from stripesync.proxy.protocol import (
    MAX_MESSAGE_SIZE,
    BackendParser,
    FrontendParser,
    decode_backend,
    decode_frontend,
)


def startup_packet(body: bytes) -> bytes:
    return struct.pack("!i", len(body) + 4) + body


def typed(type_code: bytes, body: bytes) -> bytes:
    return type_code + struct.pack("!i", len(body) + 4) + body


def violation(parser: FrontendParser | BackendParser, data: bytes) -> ProtocolViolation:
    with pytest.raises(ProtocolViolation) as info:
        list(parser.feed(data))
    return info.value


# -- exact bytes of the builders ---------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (m.ReadyForQuery("I"), b"Z\0\0\0\x05I"),
        (m.ReadyForQuery("E"), b"Z\0\0\0\x05E"),
        (m.CommandComplete("SELECT 1"), b"C\0\0\0\x0dSELECT 1\0"),
        (m.DataRow((b"42", None)), b"D\0\0\0\x10\0\x02\0\0\0\x0242\xff\xff\xff\xff"),
        (
            m.RowDescription((m.FieldDescription("a", type_oid=23, type_size=4),)),
            b"T\0\0\0\x1a\0\x01a\0" + b"\0\0\0\0\0\0\0\0\0\x17\0\x04\xff\xff\xff\xff\0\0",
        ),
        (m.ParseComplete(), b"1\0\0\0\x04"),
        (m.BindComplete(), b"2\0\0\0\x04"),
        (m.CloseComplete(), b"3\0\0\0\x04"),
        (m.NoData(), b"n\0\0\0\x04"),
        (m.EmptyQueryResponse(), b"I\0\0\0\x04"),
        (m.ParameterDescription((23, 25)), b"t\0\0\0\x0e\0\x02\0\0\0\x17\0\0\0\x19"),
        (m.Authentication.ok(), b"R\0\0\0\x08\0\0\0\0"),
        (
            m.Authentication.sasl(("SCRAM-SHA-256",)),
            b"R\0\0\0\x17\0\0\0\x0aSCRAM-SHA-256\0\0",
        ),
        (m.BackendKeyData(7, b"abcd"), b"K\0\0\0\x0c\0\0\0\x07abcd"),
        (m.ParameterStatus("a", "b"), b"S\0\0\0\x08a\0b\0"),
        (m.Query("select 1"), b"Q\0\0\0\x0dselect 1\0"),
        (m.Parse("", "select $1", (23,)), b"P\0\0\0\x15\0select $1\0\0\x01\0\0\0\x17"),
        (
            m.Bind("", "s1", (1,), (b"\0\0\0\x01", None), (0,)),
            b"B\0\0\0\x1e\0s1\0\0\x01\0\x01\0\x02\0\0\0\x04\0\0\0\x01\xff\xff\xff\xff\0\x01\0\0",
        ),
        (m.Describe("P", ""), b"D\0\0\0\x06P\0"),
        (m.Execute("", 0), b"E\0\0\0\x09\0\0\0\0\0"),
        (m.Sync(), b"S\0\0\0\x04"),
        (m.Close("S", "s1"), b"C\0\0\0\x08Ss1\0"),
        (m.Terminate(), b"X\0\0\0\x04"),
        (m.SSLRequest(), b"\0\0\0\x08\x04\xd2\x16\x2f"),
        (m.GSSENCRequest(), b"\0\0\0\x08\x04\xd2\x16\x30"),
        (m.CancelRequest(7, b"abcd"), b"\0\0\0\x10\x04\xd2\x16\x2e\0\0\0\x07abcd"),
        (
            m.StartupMessage((("user", "bob"),)),
            b"\0\0\0\x12\0\x03\0\0user\0bob\0\0",
        ),
    ],
)
def test_builders_produce_the_documented_bytes(message: m.Message, expected: bytes) -> None:
    assert message.encode() == expected
    if isinstance(message, m.StartupMessage | m.SSLRequest | m.GSSENCRequest | m.CancelRequest):
        assert decode_frontend(expected, startup=True) == message
    elif isinstance(
        message,
        m.Query | m.Parse | m.Bind | m.Describe | m.Execute | m.Close | m.Sync | m.Terminate,
    ):
        assert decode_frontend(expected) == message
    else:
        assert decode_backend(expected) == message


def test_error_response_fields_in_postgres_order() -> None:
    error = m.ErrorResponse.create(
        "42P01",
        'relation "x" does not exist',
        position=15,
        hint="check the name",
        table_name="x",
    )
    assert error.encode() == typed(
        b"E",
        b"SERROR\0VERROR\0C42P01\0M"
        + b'relation "x" does not exist\0'
        + b"Hcheck the name\0P15\0tx\0\0",
    )
    assert error.as_dict()["t"] == "x"
    notice = m.NoticeResponse.create("01000", "careful", severity="WARNING")
    assert notice.encode()[:1] == b"N"
    assert decode_backend(notice.encode()) == notice
    assert decode_backend(notice.encode()) != m.ErrorResponse(notice.fields)


def test_error_response_builder_refuses_a_bad_sqlstate() -> None:
    with pytest.raises(ValueError, match="SQLSTATE"):
        m.ErrorResponse.create("4201", "short")


def test_builders_refuse_what_cannot_be_encoded() -> None:
    with pytest.raises(ValueError, match="NUL"):
        m.Query("select '\0'").encode()
    with pytest.raises(ValueError, match="kind"):
        m.Describe("X", "s").encode()
    with pytest.raises(ValueError, match="status"):
        m.ReadyForQuery("X").encode()
    with pytest.raises(ValueError):
        m.Authentication.md5_password(b"abc")
    with pytest.raises(ValueError):
        m.RawMessage(b"ab", b"").encode()


def test_protocol_violation_converts_to_a_fatal_error_response() -> None:
    exc = ProtocolViolation("invalid frontend message type 1")
    response = exc.to_error_response()
    assert (response.severity, response.code) == ("FATAL", "08P01")
    assert response.message == "invalid frontend message type 1"
    assert "08P01" in str(exc)


# -- startup phase ---------------------------------------------------------------------


def test_startup_message_then_typed_messages() -> None:
    parser = FrontendParser()
    assert parser.in_startup
    data = (
        m.StartupMessage((("user", "bob"), ("database", "shop"), ("user", "eve")), 2).encode()
        + m.Query("select 1").encode()
    )
    startup, query = parser.feed(data)
    assert isinstance(startup, m.StartupMessage)
    assert startup.minor == 2
    assert startup.get("user") == "eve"  # the last one wins, as in PostgreSQL
    assert startup.get("missing") is None
    assert startup.as_dict() == {"user": "eve", "database": "shop"}
    assert query == m.Query("select 1")
    assert not parser.in_startup


def test_ssl_request_keeps_the_startup_phase() -> None:
    parser = FrontendParser()
    assert list(parser.feed(m.SSLRequest().encode())) == [m.SSLRequest()]
    parser.start_encryption()  # nothing pending: fine
    assert parser.in_startup
    assert list(parser.feed(m.GSSENCRequest().encode())) == [m.GSSENCRequest()]
    assert list(parser.feed(m.StartupMessage((("user", "u"),)).encode()))[0].get("user") == "u"


def test_plaintext_after_ssl_request_is_refused_before_encryption() -> None:
    parser = FrontendParser()
    iterator = parser.feed(m.SSLRequest().encode() + m.StartupMessage().encode())
    assert next(iterator) == m.SSLRequest()
    with pytest.raises(ProtocolViolation, match="unencrypted data after SSL request"):
        parser.start_encryption()
    with pytest.raises(ProtocolViolation):
        parser.feed(b"")


def test_cancel_request_closes_the_parser() -> None:
    parser = FrontendParser()
    (cancel,) = parser.feed(m.CancelRequest(1234, b"k" * 32).encode())  # 3.2: longer keys
    assert cancel == m.CancelRequest(1234, b"k" * 32)
    assert parser.closed
    assert "after Terminate or CancelRequest" in violation(parser, b"x").message


@pytest.mark.parametrize(
    ("packet", "sqlstate", "message"),
    [
        (b"\0\0\0\x07\0\0\0", "08P01", "invalid length of startup packet: 7"),
        (b"\0\0\x27\x11", "08P01", "invalid length of startup packet: 10001"),
        (b"\xff\xff\xff\xff", "08P01", "invalid length of startup packet: -1"),
        (b"GET ", "08P01", "invalid length of startup packet"),
        (b"\x16\x03\x01\x02", "08P01", "invalid length of startup packet"),  # TLS hello
        (startup_packet(b"\0\x02\0\0\0"), "0A000", "unsupported frontend protocol 2.0"),
        (startup_packet(b"\x04\xd2\x16\x31"), "0A000", "unsupported frontend protocol 1234.5681"),
        (startup_packet(b"\0\x03\0\0user\0bob\0"), "08P01", "expected terminator"),
        (startup_packet(b"\0\x03\0\0user\0\0"), "08P01", "expected terminator"),
        (startup_packet(b"\0\x03\0\0user"), "08P01", "expected terminator"),
        (startup_packet(b"\0\x03\0\0"), "08P01", "expected terminator"),
        (startup_packet(b"\0\x03\0\0\0\0"), "08P01", "expected terminator"),
        (startup_packet(b"\x04\xd2\x16\x2f\0"), "08P01", "invalid length of SSLRequest"),
        (startup_packet(b"\x04\xd2\x16\x30\0"), "08P01", "invalid length of GSSENCRequest"),
        (startup_packet(b"\x04\xd2\x16\x2e\0\0\0\x01abc"), "08P01", "cancel request"),
        (
            startup_packet(b"\x04\xd2\x16\x2e\0\0\0\x01" + b"k" * 257),
            "08P01",
            "cancel request",
        ),
    ],
)
def test_bad_startup_packets(packet: bytes, sqlstate: str, message: str) -> None:
    exc = violation(FrontendParser(), packet)
    assert exc.sqlstate == sqlstate
    assert message in exc.message


def test_an_oversized_startup_length_is_refused_from_the_length_word_alone() -> None:
    parser = FrontendParser()
    assert list(parser.feed(b"\0\0")) == []
    assert "startup packet" in violation(parser, b"\x30\0").message


def test_startup_packet_limit_is_configurable() -> None:
    packet = m.StartupMessage((("options", "x" * 200),)).encode()
    assert list(FrontendParser().feed(packet))
    assert (
        "startup packet" in violation(FrontendParser(max_startup_packet_size=100), packet).message
    )


# -- typed frontend messages -------------------------------------------------------------


def test_every_typed_frontend_message_decodes() -> None:
    stream = [
        m.Query("select 1; select 2"),
        m.Parse("s1", "select $1::int", (23,)),
        m.Bind("p1", "s1", (1,), (b"\0\0\0\x05",), (1,)),
        m.Describe("P", "p1"),
        m.Execute("p1", 10),
        m.Flush(),
        m.Close("S", "s1"),
        m.Sync(),
        m.CopyData(b"1\tx\n"),
        m.CopyDone(),
        m.CopyFail("aborted"),
        m.FunctionCall(1598, (), (None, b"ab"), 1),
        m.PasswordMessage(b"secret\0"),
        m.Terminate(),
    ]
    parser = FrontendParser(startup=False)
    out = list(parser.feed(b"".join(x.encode() for x in stream)))
    assert out == stream
    assert parser.closed
    bind = out[2]
    assert isinstance(bind, m.Bind)
    assert bind.param_format(0) == 1


def test_bind_param_format_rules() -> None:
    assert m.Bind(params=(b"1", b"2")).param_format(1) == 0
    assert m.Bind(param_formats=(1,), params=(b"1", b"2")).param_format(1) == 1
    assert m.Bind(param_formats=(0, 1), params=(b"1", b"2")).param_format(1) == 1


def test_raw_keeps_the_exact_bytes_including_invalid_utf8() -> None:
    data = typed(b"Q", b"select '\xff\xfe'\0")
    (query,) = FrontendParser(startup=False).feed(data)
    assert isinstance(query, m.Query)
    assert query.raw == data
    assert query.encode() == data
    assert query.wire() == data


def bind_body(formats: list[int], values: list[bytes | None], results: list[int]) -> bytes:
    body = b"\0\0" + struct.pack(f"!H{len(formats)}h", len(formats), *formats)
    body += struct.pack("!H", len(values))
    for value in values:
        body += b"\xff\xff\xff\xff" if value is None else struct.pack("!i", len(value)) + value
    return body + struct.pack(f"!H{len(results)}h", len(results), *results)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x01", "invalid frontend message type 1"),
        (b"Z", "invalid frontend message type 90"),
        (b"Q\0\0\0\x03", "invalid message length 3"),
        (b"Q\xff\xff\xff\xfe", "invalid message length -2"),
        (b"Q\x40\0\0\0", "invalid message length 1073741824"),
        (b"S\0\0\x27\x11", "invalid message length 10001 for message type 'S' (limit 10000)"),
        (b"p\0\x01\0\0", "invalid message length 65536 for message type 'p'"),
        (typed(b"Q", b"select 1"), "no terminating NUL"),
        (typed(b"Q", b"select 1\0\0"), "1 unexpected bytes at the end of Query"),
        (typed(b"S", b"\0"), "Sync has a body"),
        (typed(b"X", b"x"), "Terminate has a body"),
        (typed(b"D", b"Xname\0"), "invalid DESCRIBE message subtype 88"),
        (typed(b"C", b"\0"), "invalid CLOSE message subtype 0"),
        (typed(b"D", b""), "insufficient data left in message"),
        (typed(b"E", b"\0\0\0"), "insufficient data left in message"),
        (typed(b"P", b"s\0q\0\0\x02\0\0\0\x17"), "Parse with 2 parameter types"),
        (typed(b"P", b"s\0q\0"), "insufficient data left in message"),
        (typed(b"B", bind_body([0, 0], [b"1"], [])), "Bind message has 2 formats but 1 values"),
        (typed(b"B", bind_body([], [b"1"], [])[:-4]), "insufficient data"),
        (
            typed(b"B", b"\0\0\0\0\0\x01\xff\xff\xff\xfe\0\0"),
            "invalid value length -2",
        ),
        (typed(b"B", b"\0\0\0\0\xff\xff\0\0\0\0"), "insufficient data left in message: 65535"),
        (typed(b"B", b"\0\0\0\x01\0\0\x7f\xff\xff\xff"), "insufficient data"),
        (typed(b"B", b"\0\0\xff\xff\0\0"), "insufficient data left in message: 65535 format"),
        (typed(b"B", bind_body([], [], [1]) + b"\0"), "unexpected bytes at the end of Bind"),
        (
            typed(b"F", b"\0\0\0\x01\0\x02\0\0\0\0\0\x01\xff\xff\xff\xff\0\0"),
            "FunctionCall message has 2 formats but 1 values",
        ),
        (typed(b"f", b"oops"), "no terminating NUL"),
        (m.Terminate().encode() + b"Q", "unexpected data after Terminate"),
    ],
)
def test_bad_typed_frontend_messages(data: bytes, message: str) -> None:
    exc = violation(FrontendParser(startup=False), data)
    assert exc.sqlstate == "08P01"
    assert message in exc.message


def test_unknown_type_is_refused_before_its_length_arrives() -> None:
    parser = FrontendParser(startup=False)
    assert list(parser.feed(m.Sync().encode())) == [m.Sync()]
    exc = violation(parser, b"?")
    assert exc.message == "invalid frontend message type 63"


def test_hostile_lengths_do_not_allocate() -> None:
    parser = FrontendParser(startup=False)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        # a CopyData that claims the largest allowed length: we wait, we do not allocate
        assert list(parser.feed(b"d" + struct.pack("!i", MAX_MESSAGE_SIZE) + b"x" * 100)) == []
        assert parser.pending == 105
        # a DataRow that claims 65535 columns in 10 bytes is refused without a loop
        backend = BackendParser()
        exc = violation(backend, typed(b"D", b"\xff\xff" + b"\0" * 8))
        assert "65535 values" in exc.message
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 64 * 1024


def test_message_size_limit_is_configurable() -> None:
    parser = FrontendParser(startup=False, max_message_size=1000)
    assert list(parser.feed(m.Query("x" * 990).encode()))
    exc = violation(parser, b"Q" + struct.pack("!i", 1001))
    assert "limit 1000" in exc.message


def test_passthrough_types_are_framed_not_decoded() -> None:
    parser = FrontendParser(startup=False, passthrough=(b"d", "Q"))
    data = m.CopyData(b"row\n").encode() + m.Query("select").encode() + m.Sync().encode()
    copy, query, sync = parser.feed(data)
    assert copy == m.RawMessage(b"d", b"row\n")
    assert query == m.RawMessage(b"Q", b"select\0")
    assert sync == m.Sync()
    assert b"".join(x.raw for x in (copy, query, sync)) == data


# -- feeding ------------------------------------------------------------------------------


def test_feed_copies_mutable_buffers() -> None:
    parser = FrontendParser(startup=False)
    chunk = bytearray(m.Query("select 1").encode())
    iterator = parser.feed(chunk[:7])
    assert list(iterator) == []
    rest = memoryview(chunk)[7:]
    messages = parser.feed(rest)
    chunk[5:11] = b"XXXXXX"
    assert list(messages) == [m.Query("select 1")]


def test_next_message_pull_style() -> None:
    parser = BackendParser()
    parser.feed(m.ParseComplete().encode() + m.BindComplete().encode()[:3])
    assert parser.next_message() == m.ParseComplete()
    assert parser.next_message() is None
    parser.feed(m.BindComplete().encode()[3:])
    assert parser.next_message() == m.BindComplete()
    assert parser.next_message() is None
    assert parser.pending == 0


def test_messages_before_a_violation_are_delivered_then_poisoned() -> None:
    parser = FrontendParser(startup=False)
    iterator = parser.feed(m.Query("ok").encode() + b"\x00junk")
    assert next(iterator) == m.Query("ok")
    with pytest.raises(ProtocolViolation) as info:
        next(iterator)
    assert parser.error is info.value
    assert parser.pending == 0
    with pytest.raises(ProtocolViolation, match="earlier violation: invalid frontend message"):
        parser.feed(m.Sync().encode())
    with pytest.raises(ProtocolViolation, match="earlier violation"):
        parser.feed(b"")
    with pytest.raises(ProtocolViolation, match="earlier violation"):
        parser.next_message()
    with pytest.raises(ProtocolViolation, match="earlier violation"):
        list(parser)


def test_decode_helpers_want_exactly_one_message() -> None:
    with pytest.raises(ProtocolViolation, match="exactly one"):
        decode_backend(m.NoData().encode() * 2)
    with pytest.raises(ProtocolViolation, match="exactly one"):
        decode_backend(m.NoData().encode()[:4])


# -- password messages ------------------------------------------------------------------------


def test_password_message_interpretations() -> None:
    assert m.PasswordMessage.for_password("s3cret").as_password() == "s3cret"
    initial = m.PasswordMessage.for_sasl_initial("SCRAM-SHA-256", b"n,,n=,r=abc")
    assert initial.as_sasl_initial() == ("SCRAM-SHA-256", b"n,,n=,r=abc")
    assert m.PasswordMessage.for_sasl_initial("X", None).as_sasl_initial() == ("X", None)
    assert m.PasswordMessage(b"c=biws").as_sasl_response() == b"c=biws"
    for bad in (b"", b"pw", b"pw\0x"):
        with pytest.raises(ProtocolViolation, match="password packet"):
            m.PasswordMessage(bad).as_password()
    for bad in (b"SCRAM", b"SCRAM\0\0\0", b"SCRAM\0\0\0\0\x05abc", b"SCRAM\0\xff\xff\xff\xffx"):
        with pytest.raises(ProtocolViolation, match="SASLInitialResponse"):
            m.PasswordMessage(bad).as_sasl_initial()


# -- backend ---------------------------------------------------------------------------------


def test_backend_session_start() -> None:
    stream = [
        m.Authentication.sasl(("SCRAM-SHA-256-PLUS", "SCRAM-SHA-256")),
        m.Authentication.sasl_continue(b"r=abc,s=xyz,i=4096"),
        m.Authentication.sasl_final(b"v=xyz"),
        m.Authentication.ok(),
        m.ParameterStatus("server_version", "18.6"),
        m.BackendKeyData(4242, b"\x01" * 32),
        m.NoticeResponse.create("00000", "hello", severity="NOTICE"),
        m.ReadyForQuery("I"),
    ]
    out = list(BackendParser().feed(b"".join(x.encode() for x in stream)))
    assert out == stream
    first = out[0]
    assert isinstance(first, m.Authentication)
    assert first.mechanisms == ("SCRAM-SHA-256-PLUS", "SCRAM-SHA-256")
    assert m.Authentication.ok().mechanisms == ()


def test_unknown_backend_types_are_kept_raw() -> None:
    data = typed(b"q", b"future")
    (message,) = BackendParser().feed(data)
    assert message == m.RawMessage(b"q", b"future")
    assert message.raw == data


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"Z\0\0\0\x06II", "invalid message length 6 for message type 'Z' (limit 5)"),
        (typed(b"Z", b"X"), "unexpected transaction status 88"),
        (typed(b"Z", b""), "ReadyForQuery"),
        (b"1\0\0\0\x05", "limit 4"),
        (typed(b"R", b"\0\0\0\x05abc"), "MD5 salt"),
        (typed(b"R", b"\0\0\0\0x"), "authentication request 0"),
        (typed(b"R", b"\0\0\0\x0aSCRAM\0"), "AuthenticationSASL"),
        (typed(b"R", b"\0\0\0\x0a\0\0"), "AuthenticationSASL"),
        (typed(b"R", b"\0\0"), "insufficient data"),
        (typed(b"K", b"\0\0\0\x01abc"), "cancel key length 3"),
        (typed(b"T", b"\0\x01a\0" + b"\0" * 17), "insufficient data"),
        (typed(b"T", b"\x01\0" + b"\0" * 19), "insufficient data left in message: 256 fields"),
        (typed(b"E", b"SERROR\0"), "ErrorResponse unterminated"),
        (typed(b"E", b"SERROR\0\0x"), "unexpected bytes at the end of ErrorResponse"),
        (typed(b"N", b"SERROR"), "no terminating NUL"),
        (typed(b"t", b"\0\x02\0\0\0\x17"), "ParameterDescription of 2"),
        (typed(b"G", b""), "insufficient data"),
        (typed(b"H", b"\0\0\x01"), "insufficient data"),
        (typed(b"A", b"\0\0\0\x01chan\0"), "no terminating NUL"),
        (typed(b"v", b"\0\0\0\0\xff\xff\xff\xff"), "invalid option count -1"),
        (typed(b"v", b"\0\0\0\0\0\0\0\x02a\0"), "no terminating NUL"),
        (typed(b"V", b"\0\0\0\x05abc"), "FunctionCallResponse"),
        (typed(b"D", b"\0\x01\0\0\0\x05abc"), "insufficient data left in message: value"),
        (b"?\xff\xff\xff\xff", "invalid message length -1 for message type '?'"),
    ],
)
def test_bad_backend_messages(data: bytes, message: str) -> None:
    exc = violation(BackendParser(), data)
    assert exc.sqlstate == "08P01"
    assert message in exc.message


@pytest.mark.parametrize("answer", [b"S", b"G", b"N"])
def test_encryption_response(answer: bytes) -> None:
    parser = BackendParser()
    parser.expect_encryption_response()
    (response,) = parser.feed(answer)
    assert response == m.EncryptionResponse(answer.decode())
    assert response.accepted == (answer != b"N")
    assert response.encode() == answer
    # afterwards, typed messages again
    assert list(parser.feed(m.Authentication.ok().encode())) == [m.Authentication.ok()]


def test_encryption_response_error_from_an_old_server() -> None:
    parser = BackendParser()
    parser.expect_encryption_response()
    error = m.ErrorResponse.create("08P01", "unsupported frontend protocol", severity="FATAL")
    assert list(parser.feed(error.encode())) == [error]


def test_encryption_response_refuses_garbage_and_injected_plaintext() -> None:
    parser = BackendParser()
    parser.expect_encryption_response()
    assert "invalid response to encryption request" in violation(parser, b"X").message
    parser = BackendParser()
    parser.expect_encryption_response()
    exc = violation(parser, b"S" + m.Authentication.ok().encode())
    assert exc.message == "received unencrypted data after SSL response"
    parser = BackendParser()
    parser.expect_encryption_response()
    assert list(parser.feed(b"N" + m.ReadyForQuery("I").encode()))[1] == m.ReadyForQuery("I")


def test_negative_and_signed_fields_survive() -> None:
    field = m.FieldDescription("ctid", 1259, -1, 27, 6, -1, 0)
    row = m.RowDescription((field,))
    assert decode_backend(row.encode()) == row
    copy = m.CopyOutResponse(-1, (-5, 1))
    assert decode_backend(copy.encode()) == copy
    execute = m.Execute("", -1)
    assert decode_frontend(execute.encode()) == execute
