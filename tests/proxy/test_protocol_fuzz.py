"""Seeded mutation fuzzing of the wire-protocol parsers.

Each case builds a valid stream of messages from a seeded generator, mutates it or
not (bit flips, byte sets, truncation, hostile length and count words, inserts,
deletes, duplicated ranges, splices with another stream, pure garbage), then feeds it
to a parser in random chunks and once whole. Checked on every case:

- nothing but ProtocolViolation escapes, with a SQLSTATE of class 08 or 0A;
- every message yielded re-serializes to exactly the bytes it was parsed from, and
  the yielded messages' bytes are exactly a prefix of the input (pass-through would
  forward precisely what arrived, nothing skipped or invented);
- chunked and one-shot parsing agree (same messages, same error);
- an unmutated stream parses back to the generated messages, nothing left over;
- without a violation, what stays buffered is less than one message within limits;
- after a violation the parser stays poisoned.

Aggregate assertions make sure the cases really exercised the parsers (violations,
truncations, mutated-yet-valid messages, many distinct violation messages, every
message class). ``STRIPESYNC_FUZZ_CASES`` scales the number of cases per direction;
a failure names the case number, which reproduces it alone (``_case_rng``).
"""

from __future__ import annotations

import os
import random
import re
import struct
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from stripesync.proxy import messages as m
from stripesync.proxy.protocol import (
    MAX_MESSAGE_SIZE,
    MAX_STARTUP_PACKET_SIZE,
    BackendParser,
    FrontendParser,
    ProtocolViolation,
)

CASES = int(os.environ.get("STRIPESYNC_FUZZ_CASES", "60000"))

WORDS = [
    "",
    "x",
    "select 1",
    "SELECT abalance FROM pgbench_accounts WHERE aid = $1",
    "INSERT INTO stripe.customer (email) VALUES ('a@b.c') RETURNING id",
    "user",
    "database",
    "postgres",
    "application_name",
    "client_encoding",
    "UTF8",
    "SCRAM-SHA-256",
    "Ωμέγα",
    "日本語",
    "\U0001f600",
    "42P01",
]
ALPHABET = "abcxyz_ 0123456789$'\"();,.é€\U0001f600\t\n"
INTERESTING_32 = [
    0,
    1,
    3,
    4,
    5,
    7,
    8,
    9,
    16,
    255,
    256,
    9999,
    10000,
    10001,
    65535,
    65536,
    0x3FFFFFFE,
    0x3FFFFFFF,
    0x7FFFFFFF,
    -1,
    -2,
    -0x80000000,
]
INTERESTING_16 = [0, 1, 2, 3, 0x7FFF, 0x8000, 0xFFFF, 0xFFFE]
INTERESTING_8 = [0, 1, 0x7F, 0x80, 0xFF, ord("S"), ord("E"), ord("P"), ord("Z"), ord("I")]


def _case_rng(direction: int, case: int) -> random.Random:
    return random.Random(direction * 10_000_019 + case)


# --------------------------------------------------------------------------------------
# Valid message generators
# --------------------------------------------------------------------------------------


def r_str(rng: random.Random) -> str:
    k = rng.random()
    if k < 0.55:
        return rng.choice(WORDS)
    if k < 0.85:
        return "".join(rng.choices(ALPHABET, k=rng.randint(0, 24)))
    # arbitrary bytes, not UTF-8: must survive the round trip unchanged
    data = rng.randbytes(rng.randint(1, 12)).replace(b"\0", b"\x01")
    return data.decode("utf-8", "surrogateescape")


def r_bytes(rng: random.Random, top: int = 24) -> bytes:
    return rng.randbytes(rng.randint(0, top))


def r_value(rng: random.Random) -> bytes | None:
    return None if rng.random() < 0.2 else r_bytes(rng)


def r_count(rng: random.Random) -> int:
    return rng.choice((0, 0, 1, 1, 2, 3, 5)) if rng.random() < 0.97 else rng.randint(6, 300)


def r_i16(rng: random.Random) -> int:
    return rng.choice((0, 1)) if rng.random() < 0.8 else rng.randint(-0x8000, 0x7FFF)


def r_i32(rng: random.Random) -> int:
    return rng.randint(-0x80000000, 0x7FFFFFFF)


def r_u32(rng: random.Random) -> int:
    return rng.choice((23, 25, 1043, 3802)) if rng.random() < 0.7 else rng.getrandbits(32)


def _values_and_formats(rng: random.Random) -> tuple[tuple[int, ...], tuple[bytes | None, ...]]:
    values = tuple(r_value(rng) for _ in range(r_count(rng)))
    nformats = rng.choice((0, 1, len(values)))
    return tuple(r_i16(rng) for _ in range(nformats)), values


def fe_parse(rng: random.Random) -> m.Message:
    return m.Parse(r_str(rng), r_str(rng), tuple(r_u32(rng) for _ in range(r_count(rng))))


def fe_bind(rng: random.Random) -> m.Message:
    formats, values = _values_and_formats(rng)
    results = tuple(r_i16(rng) for _ in range(r_count(rng)))
    return m.Bind(r_str(rng), r_str(rng), formats, values, results)


def fe_function_call(rng: random.Random) -> m.Message:
    formats, values = _values_and_formats(rng)
    return m.FunctionCall(r_u32(rng), formats, values, r_i16(rng))


FRONTEND_TYPED: list[Callable[[random.Random], m.Message]] = [
    lambda rng: m.Query(r_str(rng)),
    fe_parse,
    fe_bind,
    lambda rng: m.Describe(rng.choice("SP"), r_str(rng)),
    lambda rng: m.Execute(r_str(rng), rng.choice((0, 1, 100, r_i32(rng)))),
    lambda rng: m.Close(rng.choice("SP"), r_str(rng)),
    lambda rng: m.Sync(),
    lambda rng: m.Flush(),
    lambda rng: m.CopyData(r_bytes(rng, 64)),
    lambda rng: m.CopyDone(),
    lambda rng: m.CopyFail(r_str(rng)),
    fe_function_call,
    lambda rng: m.PasswordMessage(r_bytes(rng)),
]


def fe_stream(rng: random.Random) -> tuple[list[m.Message], bool]:
    """A valid client stream and whether it starts in the startup phase."""
    mode = rng.random()
    if mode < 0.1:
        secret = rng.randbytes(4 if rng.random() < 0.6 else rng.randint(4, 256))
        return [m.CancelRequest(r_i32(rng), secret)], True
    typed = [rng.choice(FRONTEND_TYPED)(rng) for _ in range(rng.randint(1, 5))]
    if rng.random() < 0.15:
        typed.append(m.Terminate())
    if mode < 0.55:
        head: list[m.Message] = []
        if rng.random() < 0.3:
            head.append(rng.choice((m.SSLRequest(), m.GSSENCRequest())))
        params = tuple((r_str(rng) or "user", r_str(rng)) for _ in range(rng.randint(0, 4)))
        head.append(m.StartupMessage(params, rng.choice((0, 0, 2, 7))))
        return head + typed, True
    return typed, False


BACKEND_UNKNOWN = sorted(set(range(1, 256)) - {ord(c) for c in "RSKZTDCEN123ntIsGHWdcAvV"})


def be_auth(rng: random.Random) -> m.Message:
    k = rng.randrange(6)
    if k == 0:
        return m.Authentication.ok()
    if k == 1:
        return m.Authentication.md5_password(rng.randbytes(4))
    if k == 2:
        return m.Authentication.sasl(tuple(r_str(rng) or "SCRAM" for _ in range(r_count(rng))))
    if k == 3:
        return m.Authentication(rng.choice((8, 11, 12)), r_bytes(rng))
    if k == 4:
        return m.Authentication(rng.choice((2, 3, 7, 9)))
    return m.Authentication(rng.randint(13, 1000), r_bytes(rng))


def be_diagnostic(rng: random.Random) -> m.Message:
    if rng.random() < 0.5:
        cls = rng.choice((m.ErrorResponse, m.NoticeResponse))
        return cls.create(
            "".join(rng.choices("0123456789ABCDEFP", k=5)),
            r_str(rng),
            severity=rng.choice(("ERROR", "FATAL", "NOTICE")),
            detail=r_str(rng) if rng.random() < 0.5 else None,
            position=rng.randint(1, 99) if rng.random() < 0.3 else None,
        )
    fields = tuple((chr(rng.randint(1, 255)), r_str(rng)) for _ in range(r_count(rng)))
    return rng.choice((m.ErrorResponse, m.NoticeResponse))(fields)


def be_row_description(rng: random.Random) -> m.Message:
    return m.RowDescription(
        tuple(
            m.FieldDescription(
                r_str(rng), r_u32(rng), r_i16(rng), r_u32(rng), r_i16(rng), r_i32(rng), r_i16(rng)
            )
            for _ in range(r_count(rng))
        )
    )


BACKEND: list[Callable[[random.Random], m.Message]] = [
    be_auth,
    lambda rng: m.ParameterStatus(r_str(rng), r_str(rng)),
    lambda rng: m.BackendKeyData(r_i32(rng), rng.randbytes(rng.choice((4, 4, 32, 256)))),
    lambda rng: m.ReadyForQuery(rng.choice("ITE")),
    be_row_description,
    lambda rng: m.DataRow(tuple(r_value(rng) for _ in range(r_count(rng)))),
    lambda rng: m.CommandComplete(r_str(rng)),
    be_diagnostic,
    lambda rng: m.ParseComplete(),
    lambda rng: m.BindComplete(),
    lambda rng: m.CloseComplete(),
    lambda rng: m.NoData(),
    lambda rng: m.EmptyQueryResponse(),
    lambda rng: m.PortalSuspended(),
    lambda rng: m.ParameterDescription(tuple(r_u32(rng) for _ in range(r_count(rng)))),
    lambda rng: rng.choice((m.CopyInResponse, m.CopyOutResponse, m.CopyBothResponse))(
        rng.choice((0, 1, -1)), tuple(r_i16(rng) for _ in range(r_count(rng)))
    ),
    lambda rng: m.CopyData(r_bytes(rng, 64)),
    lambda rng: m.CopyDone(),
    lambda rng: m.NotificationResponse(r_i32(rng), r_str(rng), r_str(rng)),
    lambda rng: m.NegotiateProtocolVersion(
        m.PROTOCOL_3_0 | rng.randint(0, 2), tuple(r_str(rng) for _ in range(r_count(rng)))
    ),
    lambda rng: m.FunctionCallResponse(r_value(rng)),
    lambda rng: m.RawMessage(bytes((rng.choice(BACKEND_UNKNOWN),)), r_bytes(rng)),
]


def be_stream(rng: random.Random) -> list[m.Message]:
    return [rng.choice(BACKEND)(rng) for _ in range(rng.randint(1, 6))]


# --------------------------------------------------------------------------------------
# Mutation and chunking
# --------------------------------------------------------------------------------------


def mutate(rng: random.Random, data: bytes, starts: list[tuple[int, int]], other: bytes) -> bytes:
    """One to three mutations. ``starts``: (offset of a message, offset of its length word)."""
    buf = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        op = rng.randrange(11)
        size = len(buf)
        if op == 0 and size:  # bit flips
            for _ in range(rng.randint(1, 8)):
                buf[rng.randrange(size)] ^= 1 << rng.randrange(8)
        elif op == 1 and size:  # bytes set to interesting values
            for _ in range(rng.randint(1, 3)):
                buf[rng.randrange(size)] = rng.choice(INTERESTING_8)
        elif op == 2 and size:  # truncation
            del buf[rng.randrange(size) :]
        elif op in (3, 4) and starts:  # a hostile length word
            _, at = rng.choice(starts)
            if at + 4 <= len(buf):
                value = rng.choice(INTERESTING_32) if op == 3 else rng.randint(-64, 64) + 5
                buf[at : at + 4] = struct.pack("!i", value if value < 2**31 else value - 2**32)
        elif op == 5 and size >= 2:  # a hostile count or int16 anywhere
            at = rng.randrange(size - 1)
            buf[at : at + 2] = struct.pack("!H", rng.choice(INTERESTING_16))
        elif op == 6:  # insertion
            at = rng.randint(0, size)
            buf[at:at] = rng.randbytes(rng.randint(1, 8))
        elif op == 7 and size:  # deletion
            at = rng.randrange(size)
            del buf[at : at + rng.randint(1, 8)]
        elif op == 8 and size:  # duplicated range
            at = rng.randrange(size)
            buf[at:at] = buf[at : at + rng.randint(1, 32)]
        elif op == 9:  # splice with another stream
            buf = buf[: rng.randint(0, size)] + other[rng.randint(0, len(other)) :]
        elif op == 10 and rng.random() < 0.3:  # garbage
            buf = bytearray(rng.randbytes(rng.randint(0, 64)))
    return bytes(buf)


def chunks_of(rng: random.Random, data: bytes) -> list[bytes]:
    k = rng.random()
    if k < 0.2:
        return [data]
    if k < 0.3:
        return [data[i : i + 1] for i in range(len(data))]
    top = 16 if k < 0.7 else max(1, len(data))
    out = []
    pos = 0
    while pos < len(data):
        n = rng.randint(1, top)
        out.append(data[pos : pos + n])
        pos += n
    if rng.random() < 0.1:
        out.insert(rng.randint(0, len(out)), b"")
    return out


# --------------------------------------------------------------------------------------
# The checks
# --------------------------------------------------------------------------------------


@dataclass
class Stats:
    cases: int = 0
    unmutated: int = 0
    violations: int = 0
    incomplete: int = 0
    mutated_clean: int = 0
    messages: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    classes_from_mutants: set[str] = field(default_factory=set)


def _run(
    parser: FrontendParser | BackendParser, chunks: list[bytes]
) -> tuple[list[m.Message], ProtocolViolation | None]:
    out: list[m.Message] = []
    error: ProtocolViolation | None = None
    try:
        for chunk in chunks:
            out.extend(parser.feed(chunk))
    except ProtocolViolation as exc:
        error = exc
    return out, error


def check_case(
    make: Callable[[], FrontendParser | BackendParser],
    data: bytes,
    chunks: list[bytes],
    limit: int,
    stats: Stats,
    expected: list[m.Message] | None,
) -> None:
    parser = make()
    out, error = _run(parser, chunks)
    whole, whole_error = _run(make(), [data])

    # chunking does not matter
    assert out == whole
    assert [x.raw for x in out] == [x.raw for x in whole]
    assert (error is None) == (whole_error is None)
    # re-serialization is exact, and the messages' bytes are a prefix of the input
    consumed = 0
    for message in out:
        raw = message.raw
        assert raw and message.encode() == raw, message
        assert data.startswith(raw, consumed)
        consumed += len(raw)
    stats.messages += len(out)

    if error is not None:
        assert isinstance(error, ProtocolViolation)
        assert error.message == whole_error.message
        assert error.sqlstate in ("08P01", "0A000")
        assert error.to_error_response().code == error.sqlstate
        stats.violations += 1
        stats.errors[re.sub(r"'.+?'|-?\d+", "N", error.message)] += 1
        try:  # poisoned
            list(parser.feed(b"S\0\0\0\x04"))
        except ProtocolViolation as exc:
            assert exc.sqlstate == error.sqlstate
        else:
            raise AssertionError("parser not poisoned after a violation")
    else:
        assert parser.pending == len(data) - consumed
        assert parser.pending <= limit, "buffered more than one message's worth"
        if parser.pending:
            stats.incomplete += 1

    if expected is not None:
        stats.unmutated += 1
        assert error is None, error
        assert out == expected
        assert parser.pending == 0
    elif error is None and out:
        stats.mutated_clean += 1
        stats.classes_from_mutants.update(type(x).__name__ for x in out)


def _starts(messages: list[m.Message], encoded: list[bytes]) -> list[tuple[int, int]]:
    starts = []
    pos = 0
    for message, raw in zip(messages, encoded, strict=True):
        typed = bool(message.type) or isinstance(message, m.RawMessage)
        starts.append((pos, pos + 1 if typed else pos))
        pos += len(raw)
    return starts


def _fuzz(direction: int, cases: int) -> Stats:
    stats = Stats()
    previous = b""
    for case in range(cases):
        rng = _case_rng(direction, case)
        if direction == 0:
            messages, startup = fe_stream(rng)
        else:
            messages, startup = be_stream(rng), False
        encoded = [x.encode() for x in messages]
        data = b"".join(encoded)
        mutated = rng.random() >= 0.15
        if mutated:
            data = mutate(rng, data, _starts(messages, encoded), previous)
        previous = data
        small = mutated and rng.random() < 0.3
        max_size = rng.choice((64, 300, 4096)) if small else MAX_MESSAGE_SIZE
        if direction == 0:

            def make(startup: bool = startup, max_size: int = max_size) -> FrontendParser:
                return FrontendParser(startup=startup, max_message_size=max_size)

            limit = max(max_size, MAX_STARTUP_PACKET_SIZE)
        else:

            def make(max_size: int = max_size) -> BackendParser:  # type: ignore[misc]
                return BackendParser(max_message_size=max_size)

            limit = max_size
        try:
            check_case(
                make,
                data,
                chunks_of(rng, data),
                limit,
                stats,
                None if mutated else messages,
            )
        except Exception as exc:
            raise AssertionError(
                f"fuzz case {case} (direction {direction}) failed: {exc!r}\ninput: {data!r}"
            ) from exc
        stats.cases += 1
    return stats


def _assert_exercised(stats: Stats, cases: int, min_errors: int, classes: set[str]) -> None:
    assert stats.cases == cases
    assert stats.unmutated >= cases // 10
    assert stats.violations >= cases // 4, stats
    assert stats.incomplete >= cases // 20, stats
    assert stats.mutated_clean >= cases // 20, stats
    assert stats.messages >= cases
    assert len(stats.errors) >= min_errors, sorted(stats.errors)
    missing = classes - stats.classes_from_mutants
    assert not missing, f"never parsed from a mutated stream: {sorted(missing)}"


def test_fuzz_frontend_parser() -> None:
    stats = _fuzz(0, CASES)
    classes = {
        "StartupMessage",
        "SSLRequest",
        "GSSENCRequest",
        "CancelRequest",
        "Query",
        "Parse",
        "Bind",
        "Describe",
        "Execute",
        "Close",
        "Sync",
        "Flush",
        "Terminate",
        "CopyData",
        "CopyDone",
        "CopyFail",
        "FunctionCall",
        "PasswordMessage",
    }
    _assert_exercised(stats, CASES, 28, classes)


def test_fuzz_backend_parser() -> None:
    stats = _fuzz(1, CASES)
    classes = {
        "Authentication",
        "ParameterStatus",
        "BackendKeyData",
        "ReadyForQuery",
        "RowDescription",
        "DataRow",
        "CommandComplete",
        "ErrorResponse",
        "NoticeResponse",
        "ParseComplete",
        "BindComplete",
        "CloseComplete",
        "NoData",
        "EmptyQueryResponse",
        "PortalSuspended",
        "ParameterDescription",
        "CopyInResponse",
        "CopyOutResponse",
        "CopyBothResponse",
        "CopyData",
        "CopyDone",
        "NotificationResponse",
        "NegotiateProtocolVersion",
        "FunctionCallResponse",
        "RawMessage",
    }
    _assert_exercised(stats, CASES, 28, classes)


def test_fuzz_runs_at_least_100k_cases() -> None:
    assert 2 * CASES >= 100_000 or "STRIPESYNC_FUZZ_CASES" in os.environ
