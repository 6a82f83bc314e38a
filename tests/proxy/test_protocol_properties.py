"""Hypothesis properties of the wire protocol: builders and parsers agree.

- builder → parser gives back the same message, whose ``raw`` is the built bytes;
- any chunking of a stream gives the same messages as one feed;
- a proper prefix of a message yields nothing and keeps every byte pending;
- arbitrary bytes give messages that re-serialize exactly, or a ProtocolViolation.
"""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from stripesync.proxy import messages as m
from stripesync.proxy.protocol import (
    BackendParser,
    FrontendParser,
    ProtocolViolation,
    decode_backend,
    decode_frontend,
)

# -- strategies -------------------------------------------------------------------------

texts = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\0"), max_size=30)
not_utf8 = st.binary(max_size=16).map(
    lambda b: b.replace(b"\0", b"\x01").decode("utf-8", "surrogateescape")
)
strs = texts | not_utf8
i16 = st.integers(-(2**15), 2**15 - 1)
i32 = st.integers(-(2**31), 2**31 - 1)
u32 = st.integers(0, 2**32 - 1)
formats = st.lists(st.sampled_from((0, 1)) | i16, max_size=6).map(tuple)
values = st.none() | st.binary(max_size=40)


@st.composite
def formats_and_values(draw: st.DrawFn) -> tuple[tuple[int, ...], tuple[bytes | None, ...]]:
    vals = tuple(draw(st.lists(values, max_size=8)))
    count = draw(st.sampled_from(sorted({0, 1, len(vals)})))
    return tuple(draw(st.lists(i16, min_size=count, max_size=count))), vals


@st.composite
def binds(draw: st.DrawFn) -> m.Bind:
    fmts, vals = draw(formats_and_values())
    return m.Bind(draw(strs), draw(strs), fmts, vals, draw(formats))


@st.composite
def function_calls(draw: st.DrawFn) -> m.FunctionCall:
    fmts, vals = draw(formats_and_values())
    return m.FunctionCall(draw(u32), fmts, vals, draw(i16))


kinds = st.sampled_from("SP")

frontend_typed = st.one_of(
    st.builds(m.Query, strs),
    st.builds(m.Parse, strs, strs, st.lists(u32, max_size=6).map(tuple)),
    binds(),
    st.builds(m.Describe, kinds, strs),
    st.builds(m.Execute, strs, i32),
    st.builds(m.Close, kinds, strs),
    st.just(m.Sync()),
    st.just(m.Flush()),
    st.builds(m.CopyData, st.binary(max_size=100)),
    st.just(m.CopyDone()),
    st.builds(m.CopyFail, strs),
    function_calls(),
    st.builds(m.PasswordMessage, st.binary(max_size=60)),
)

param_names = strs.filter(bool)
startup_packets = st.one_of(
    st.builds(
        m.StartupMessage,
        st.lists(st.tuples(param_names, strs), max_size=5).map(tuple),
        st.integers(0, 0xFFFF),
    ),
    st.just(m.SSLRequest()),
    st.just(m.GSSENCRequest()),
    st.builds(m.CancelRequest, i32, st.binary(min_size=4, max_size=256)),
)

field_descriptions = st.builds(m.FieldDescription, strs, u32, i16, u32, i16, i32, i16)
diagnostic_fields = st.lists(
    st.tuples(st.characters(min_codepoint=1, max_codepoint=255), strs), max_size=6
).map(tuple)
unknown_backend_types = st.sampled_from(
    sorted(set(range(256)) - {ord(c) for c in "RSKZTDCEN123ntIsGHWdcAvV"})
).map(lambda c: bytes((c,)))

authentications = st.one_of(
    st.sampled_from((0, 2, 3, 7, 9)).map(m.Authentication),
    st.binary(min_size=4, max_size=4).map(m.Authentication.md5_password),
    st.lists(param_names, max_size=4).map(lambda ms: m.Authentication.sasl(tuple(ms))),
    st.builds(m.Authentication, st.sampled_from((8, 11, 12)), st.binary(max_size=60)),
)

backend_messages = st.one_of(
    authentications,
    st.builds(m.ParameterStatus, strs, strs),
    st.builds(m.BackendKeyData, i32, st.binary(min_size=4, max_size=256)),
    st.builds(m.ReadyForQuery, st.sampled_from("ITE")),
    st.builds(m.RowDescription, st.lists(field_descriptions, max_size=5).map(tuple)),
    st.builds(m.DataRow, st.lists(values, max_size=8).map(tuple)),
    st.builds(m.CommandComplete, strs),
    st.builds(m.ErrorResponse, diagnostic_fields),
    st.builds(m.NoticeResponse, diagnostic_fields),
    st.sampled_from(
        (
            m.ParseComplete(),
            m.BindComplete(),
            m.CloseComplete(),
            m.NoData(),
            m.EmptyQueryResponse(),
            m.PortalSuspended(),
            m.CopyDone(),
        )
    ),
    st.builds(m.ParameterDescription, st.lists(u32, max_size=6).map(tuple)),
    st.builds(m.CopyInResponse, st.integers(-128, 127), formats),
    st.builds(m.CopyOutResponse, st.integers(-128, 127), formats),
    st.builds(m.CopyBothResponse, st.integers(-128, 127), formats),
    st.builds(m.CopyData, st.binary(max_size=100)),
    st.builds(m.NotificationResponse, i32, strs, strs),
    st.builds(m.NegotiateProtocolVersion, i32, st.lists(strs, max_size=4).map(tuple)),
    st.builds(m.FunctionCallResponse, values),
    st.builds(m.RawMessage, unknown_backend_types, st.binary(max_size=40)),
)


@st.composite
def client_streams(draw: st.DrawFn) -> list[m.Message]:
    head: list[m.Message] = draw(st.lists(st.sampled_from((m.SSLRequest(), m.GSSENCRequest()))))
    startup = m.StartupMessage(draw(st.lists(st.tuples(param_names, strs), max_size=3).map(tuple)))
    typed = draw(st.lists(frontend_typed, max_size=8))
    tail = [m.Terminate()] if draw(st.booleans()) else []
    return [*head, startup, *typed, *tail]


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(c, len(data)) for c in cuts})
    edges = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges)]


def parse_chunks(parser: FrontendParser | BackendParser, chunks: list[bytes]) -> list[m.Message]:
    out: list[m.Message] = []
    for chunk in chunks:
        out.extend(parser.feed(chunk))
    return out


# -- round trips ------------------------------------------------------------------------


@settings(max_examples=400)
@given(frontend_typed)
def test_frontend_message_round_trip(message: m.Message) -> None:
    raw = message.encode()
    decoded = decode_frontend(raw)
    assert decoded == message
    assert type(decoded) is type(message)
    assert decoded.raw == raw
    assert decoded.encode() == raw
    assert decoded.wire() == raw


@settings(max_examples=200)
@given(startup_packets)
def test_startup_packet_round_trip(message: m.Message) -> None:
    raw = message.encode()
    decoded = decode_frontend(raw, startup=True)
    assert decoded == message
    assert decoded.raw == raw


@settings(max_examples=400)
@given(backend_messages)
def test_backend_message_round_trip(message: m.Message) -> None:
    raw = message.encode()
    decoded = decode_backend(raw)
    assert decoded == message
    assert type(decoded) is type(message)
    assert decoded.raw == raw
    assert decoded.encode() == raw


@given(
    st.sampled_from(("ERROR", "FATAL", "WARNING")),
    st.text(alphabet="0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=5, max_size=5),
    texts,
    st.none() | texts,
    st.none() | texts,
    st.none() | st.integers(1, 10**6),
)
def test_error_response_builder(
    severity: str, code: str, message: str, detail: str | None, hint: str | None, pos: int | None
) -> None:
    built = m.ErrorResponse.create(
        code, message, severity=severity, detail=detail, hint=hint, position=pos
    )
    decoded = decode_backend(built.encode())
    assert isinstance(decoded, m.ErrorResponse)
    assert decoded == built
    assert (decoded.severity, decoded.code, decoded.message) == (severity, code, message)
    assert (decoded.detail, decoded.hint, decoded.position) == (detail, hint, pos)
    assert decoded.get("S") == severity
    assert [k for k, _ in decoded.fields][:4] == ["S", "V", "C", "M"]


# -- chunking ---------------------------------------------------------------------------


@given(client_streams(), st.lists(st.integers(0, 2000), max_size=30))
def test_any_chunking_of_a_client_stream(stream: list[m.Message], cuts: list[int]) -> None:
    data = b"".join(x.encode() for x in stream)
    parser = FrontendParser()
    out = parse_chunks(parser, split(data, cuts))
    assert out == stream
    assert b"".join(x.raw for x in out) == data
    assert parser.pending == 0
    assert not parser.in_startup
    assert parser.closed == isinstance(stream[-1], m.Terminate)


@given(st.lists(backend_messages, max_size=10), st.lists(st.integers(0, 3000), max_size=30))
def test_any_chunking_of_a_server_stream(stream: list[m.Message], cuts: list[int]) -> None:
    data = b"".join(x.encode() for x in stream)
    parser = BackendParser()
    out = parse_chunks(parser, split(data, cuts))
    assert out == stream
    assert b"".join(x.raw for x in out) == data
    assert parser.pending == 0


@given(st.lists(frontend_typed, min_size=1, max_size=6), st.data())
def test_messages_left_in_an_iterator_come_out_of_the_next(
    stream: list[m.Message], data: st.DataObject
) -> None:
    encoded = b"".join(x.encode() for x in stream)
    parser = FrontendParser(startup=False)
    taken = data.draw(st.integers(0, len(stream)))
    iterator = parser.feed(encoded[: len(encoded) // 2])
    first = [message for _, message in zip(range(taken), iterator, strict=False)]
    rest = list(parser.feed(encoded[len(encoded) // 2 :]))
    assert first + rest == stream


@given(frontend_typed, st.data())
def test_a_proper_prefix_yields_nothing(message: m.Message, data: st.DataObject) -> None:
    raw = message.encode()
    cut = data.draw(st.integers(0, len(raw) - 1))
    parser = FrontendParser(startup=False)
    assert list(parser.feed(raw[:cut])) == []
    assert parser.pending == cut
    assert list(parser.feed(raw[cut:])) == [message]


# -- arbitrary bytes ----------------------------------------------------------------------


def _only_violations(parser: FrontendParser | BackendParser, chunks: list[bytes]) -> None:
    data = b"".join(chunks)
    out: list[m.Message] = []
    try:
        for chunk in chunks:
            out.extend(parser.feed(chunk))
    except ProtocolViolation as exc:
        assert exc.sqlstate in ("08P01", "0A000")
        assert parser.error is exc
    consumed = b"".join(x.raw for x in out)
    assert data.startswith(consumed)
    for message in out:
        assert message.encode() == message.raw


@settings(max_examples=300)
@given(st.binary(max_size=300), st.lists(st.integers(0, 300), max_size=10), st.booleans())
def test_arbitrary_bytes_to_the_frontend_parser(data: bytes, cuts: list[int], start: bool) -> None:
    _only_violations(FrontendParser(startup=start), split(data, cuts))


@settings(max_examples=300)
@given(st.binary(max_size=300), st.lists(st.integers(0, 300), max_size=10))
def test_arbitrary_bytes_to_the_backend_parser(data: bytes, cuts: list[int]) -> None:
    _only_violations(BackendParser(), split(data, cuts))


@settings(max_examples=300)
@given(st.lists(backend_messages, min_size=1, max_size=4), st.binary(max_size=40), st.data())
def test_garbage_after_valid_server_messages(
    stream: list[m.Message], garbage: bytes, data: st.DataObject
) -> None:
    encoded = b"".join(x.encode() for x in stream)
    at = data.draw(st.integers(0, len(encoded)))
    _only_violations(BackendParser(), [encoded[:at] + garbage + encoded[at:]])
