"""Sans-I/O PostgreSQL v3 wire protocol: incremental parsers for both directions.

Feed the bytes a socket delivered, in chunks of any size, and iterate the complete
messages they finish::

    parser = FrontendParser()
    for message in parser.feed(chunk):
        upstream.write(message.raw)  # exactly the bytes received

:class:`FrontendParser` reads what a client sends: first the untyped startup packets
(StartupMessage, SSLRequest, GSSENCRequest, CancelRequest), then typed messages.
:class:`BackendParser` reads what a server sends. Both decode into the dataclasses of
:mod:`stripesync.proxy.messages` (re-exported here), each keeping its ``raw`` bytes.

Malformed or hostile input raises :class:`ProtocolViolation` (SQLSTATE 08P01, or 0A000
for an unsupported protocol version) and nothing else. Lengths are checked against
per-type limits as soon as the 5-byte header is in (the way PostgreSQL's
``SocketBackend`` does), so a peer cannot make the parser buffer more than the limit;
every field is bounds-checked, counts must fit in the bytes that remain, and a
message must be consumed exactly. After a violation the parser is poisoned: every
later ``feed`` or iteration raises again.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Collection, Iterator
from typing import Generic, TypeVar

from stripesync.proxy.errors import (
    FEATURE_NOT_SUPPORTED,
    PROTOCOL_VIOLATION,
    ProtocolViolation,
)
from stripesync.proxy.messages import (
    AUTH_CLEARTEXT_PASSWORD,
    AUTH_GSS,
    AUTH_KERBEROS_V5,
    AUTH_MD5_PASSWORD,
    AUTH_OK,
    AUTH_SASL,
    AUTH_SSPI,
    CANCEL_REQUEST_CODE,
    GSSENC_REQUEST_CODE,
    SSL_REQUEST_CODE,
    Authentication,
    BackendKeyData,
    BackendMessage,
    Bind,
    BindComplete,
    CancelRequest,
    Close,
    CloseComplete,
    CommandComplete,
    CopyBothResponse,
    CopyData,
    CopyDone,
    CopyFail,
    CopyInResponse,
    CopyOutResponse,
    DataRow,
    Describe,
    EmptyQueryResponse,
    EncryptionResponse,
    ErrorResponse,
    Execute,
    FieldDescription,
    Flush,
    FrontendMessage,
    FunctionCall,
    FunctionCallResponse,
    GSSENCRequest,
    Message,
    NegotiateProtocolVersion,
    NoData,
    NoticeResponse,
    NotificationResponse,
    ParameterDescription,
    ParameterStatus,
    Parse,
    ParseComplete,
    PasswordMessage,
    PortalSuspended,
    Query,
    RawMessage,
    ReadyForQuery,
    RowDescription,
    SSLRequest,
    StartupMessage,
    Sync,
    Terminate,
    sasl_mechanisms,
)

__all__ = [
    "MAX_AUTH_MESSAGE_SIZE",
    "MAX_MESSAGE_SIZE",
    "MAX_SMALL_MESSAGE_SIZE",
    "MAX_STARTUP_PACKET_SIZE",
    "BackendParser",
    "FrontendParser",
    "ProtocolViolation",
    "decode_backend",
    "decode_frontend",
]

# Limits on the Int32 length word (which counts itself), as in PostgreSQL's pqcomm.h.
MAX_MESSAGE_SIZE = 0x3FFFFFFE  # PQ_LARGE_MESSAGE_LIMIT: MaxAllocSize - 1 (1 GiB - 2)
MAX_SMALL_MESSAGE_SIZE = 10000  # PQ_SMALL_MESSAGE_LIMIT: control messages
MAX_AUTH_MESSAGE_SIZE = 65535  # PG_MAX_AUTH_TOKEN_LENGTH: 'p' messages
MAX_STARTUP_PACKET_SIZE = 10000  # MAX_STARTUP_PACKET_LENGTH
MAX_CANCEL_KEY_LENGTH = 256  # protocol 3.2

_I16 = struct.Struct("!h")
_U16 = struct.Struct("!H")
_I32 = struct.Struct("!i")
_U32 = struct.Struct("!I")
_FIELD = struct.Struct("!IhIhih")

M = TypeVar("M", bound=Message)
_Decoder = Callable[[bytes], Message]


# --------------------------------------------------------------------------------------
# Field readers: ``raw`` is a whole message, so its end is the message's end.
# Integer reads past the end raise struct.error, which the parsers turn into a
# ProtocolViolation ("insufficient data left in message").
# --------------------------------------------------------------------------------------


def _read_str(raw: bytes, pos: int) -> tuple[str, int]:
    end = raw.find(b"\0", pos)
    if end < 0:
        raise ProtocolViolation("invalid string in message: no terminating NUL")
    return raw[pos:end].decode("utf-8", "surrogateescape"), end + 1


def _read_int16s(raw: bytes, pos: int) -> tuple[tuple[int, ...], int]:
    (count,) = _U16.unpack_from(raw, pos)
    pos += 2
    end = pos + 2 * count
    if end > len(raw):
        raise ProtocolViolation(f"insufficient data left in message: {count} format codes")
    return struct.unpack_from(f"!{count}h", raw, pos), end


def _read_values(raw: bytes, pos: int) -> tuple[tuple[bytes | None, ...], int]:
    (count,) = _U16.unpack_from(raw, pos)
    pos += 2
    size = len(raw)
    if 4 * count > size - pos:
        raise ProtocolViolation(f"insufficient data left in message: {count} values")
    values: list[bytes | None] = []
    append = values.append
    unpack = _I32.unpack_from
    for _ in range(count):
        (length,) = unpack(raw, pos)
        pos += 4
        if length < 0:
            if length != -1:
                raise ProtocolViolation(f"invalid value length {length} in message")
            append(None)
        else:
            end = pos + length
            if end > size:
                raise ProtocolViolation("insufficient data left in message: value")
            append(raw[pos:end])
            pos = end
    return tuple(values), pos


def _type_name(code: int) -> str:
    return f"'{chr(code)}'" if 0x20 < code < 0x7F else f"0x{code:02X}"


def _check_end(raw: bytes, pos: int, name: str) -> None:
    if pos != len(raw):
        raise ProtocolViolation(
            f"invalid message format: {len(raw) - pos} unexpected bytes at the end of {name}"
        )


def _check_format_count(formats: int, values: int, name: str) -> None:
    if formats > 1 and formats != values:
        raise ProtocolViolation(f"{name} message has {formats} formats but {values} values")


# --------------------------------------------------------------------------------------
# Frontend decoders (typed)
# --------------------------------------------------------------------------------------


def _empty(cls: type[M]) -> Callable[[bytes], M]:
    name = cls.__name__

    def decode(raw: bytes) -> M:
        if len(raw) != 5:
            raise ProtocolViolation(f"invalid message format: {name} has a body")
        return cls(raw=raw)

    return decode


def _query(raw: bytes) -> Query:
    query, pos = _read_str(raw, 5)
    _check_end(raw, pos, "Query")
    return Query(query, raw=raw)


def _parse(raw: bytes) -> Parse:
    name, pos = _read_str(raw, 5)
    query, pos = _read_str(raw, pos)
    (count,) = _U16.unpack_from(raw, pos)
    pos += 2
    if pos + 4 * count != len(raw):
        raise ProtocolViolation(f"invalid message format: Parse with {count} parameter types")
    types = struct.unpack_from(f"!{count}I", raw, pos)
    return Parse(name, query, types, raw=raw)


def _bind(raw: bytes) -> Bind:
    portal, pos = _read_str(raw, 5)
    statement, pos = _read_str(raw, pos)
    param_formats, pos = _read_int16s(raw, pos)
    params, pos = _read_values(raw, pos)
    _check_format_count(len(param_formats), len(params), "Bind")
    result_formats, pos = _read_int16s(raw, pos)
    _check_end(raw, pos, "Bind")
    return Bind(portal, statement, param_formats, params, result_formats, raw=raw)


def _describe_or_close(cls: type[Describe] | type[Close]) -> Callable[[bytes], Message]:
    verb = "DESCRIBE" if cls is Describe else "CLOSE"

    def decode(raw: bytes) -> Message:
        if len(raw) < 6:
            raise ProtocolViolation("insufficient data left in message")
        kind = raw[5]
        if kind != 0x53 and kind != 0x50:  # 'S', 'P'
            raise ProtocolViolation(f"invalid {verb} message subtype {kind}")
        name, pos = _read_str(raw, 6)
        _check_end(raw, pos, cls.__name__)
        return cls(chr(kind), name, raw=raw)

    return decode


def _execute(raw: bytes) -> Execute:
    portal, pos = _read_str(raw, 5)
    (max_rows,) = _I32.unpack_from(raw, pos)
    _check_end(raw, pos + 4, "Execute")
    return Execute(portal, max_rows, raw=raw)


def _copy_data(raw: bytes) -> CopyData:
    return CopyData(raw[5:], raw=raw)


def _copy_fail(raw: bytes) -> CopyFail:
    message, pos = _read_str(raw, 5)
    _check_end(raw, pos, "CopyFail")
    return CopyFail(message, raw=raw)


def _function_call(raw: bytes) -> FunctionCall:
    (oid,) = _U32.unpack_from(raw, 5)
    arg_formats, pos = _read_int16s(raw, 9)
    args, pos = _read_values(raw, pos)
    _check_format_count(len(arg_formats), len(args), "FunctionCall")
    (result_format,) = _I16.unpack_from(raw, pos)
    _check_end(raw, pos + 2, "FunctionCall")
    return FunctionCall(oid, arg_formats, args, result_format, raw=raw)


def _password(raw: bytes) -> PasswordMessage:
    return PasswordMessage(raw[5:], raw=raw)


_FRONTEND_DECODERS: dict[int, _Decoder] = {
    ord("Q"): _query,
    ord("P"): _parse,
    ord("B"): _bind,
    ord("D"): _describe_or_close(Describe),
    ord("E"): _execute,
    ord("C"): _describe_or_close(Close),
    ord("S"): _empty(Sync),
    ord("H"): _empty(Flush),
    ord("X"): _empty(Terminate),
    ord("d"): _copy_data,
    ord("c"): _empty(CopyDone),
    ord("f"): _copy_fail,
    ord("F"): _function_call,
    ord("p"): _password,
}

_FRONTEND_NAMES: dict[int, str] = {
    ord("Q"): "Query",
    ord("P"): "Parse",
    ord("B"): "Bind",
    ord("D"): "Describe",
    ord("E"): "Execute",
    ord("C"): "Close",
    ord("S"): "Sync",
    ord("H"): "Flush",
    ord("X"): "Terminate",
    ord("d"): "CopyData",
    ord("c"): "CopyDone",
    ord("f"): "CopyFail",
    ord("F"): "FunctionCall",
    ord("p"): "PasswordMessage",
}

_FRONTEND_LARGE = frozenset(ord(t) for t in "QPBdF")
_FRONTEND_SMALL = frozenset(ord(t) for t in "DECSHXcf")

# --------------------------------------------------------------------------------------
# Startup packets (untyped)
# --------------------------------------------------------------------------------------


def _startup_message(raw: bytes, minor: int) -> StartupMessage:
    layout = "invalid startup packet layout: expected terminator as last byte"
    params: list[tuple[str, str]] = []
    pos = 8
    size = len(raw)
    while True:
        if pos >= size:
            raise ProtocolViolation(layout)
        if raw[pos] == 0:
            pos += 1
            break
        end = raw.find(b"\0", pos)
        end2 = raw.find(b"\0", end + 1) if end >= 0 else -1
        if end2 < 0:
            raise ProtocolViolation(layout)
        params.append(
            (
                raw[pos:end].decode("utf-8", "surrogateescape"),
                raw[end + 1 : end2].decode("utf-8", "surrogateescape"),
            )
        )
        pos = end2 + 1
    if pos != size:
        raise ProtocolViolation(layout)
    return StartupMessage(tuple(params), minor, raw=raw)


def _decode_startup(raw: bytes) -> Message:
    (code,) = _U32.unpack_from(raw, 4)
    size = len(raw)
    if code == SSL_REQUEST_CODE:
        if size != 8:
            raise ProtocolViolation(f"invalid length of SSLRequest packet: {size}")
        return SSLRequest(raw=raw)
    if code == GSSENC_REQUEST_CODE:
        if size != 8:
            raise ProtocolViolation(f"invalid length of GSSENCRequest packet: {size}")
        return GSSENCRequest(raw=raw)
    if code == CANCEL_REQUEST_CODE:
        if not 16 <= size <= 12 + MAX_CANCEL_KEY_LENGTH:
            raise ProtocolViolation(f"invalid length of cancel request packet: {size}")
        (pid,) = _I32.unpack_from(raw, 8)
        return CancelRequest(pid, raw[12:], raw=raw)
    major, minor = code >> 16, code & 0xFFFF
    if major != 3:
        raise ProtocolViolation(
            f"unsupported frontend protocol {major}.{minor}: server supports 3.0 to 3.2",
            FEATURE_NOT_SUPPORTED,
        )
    return _startup_message(raw, minor)


# --------------------------------------------------------------------------------------
# Backend decoders
# --------------------------------------------------------------------------------------

_AUTH_NO_DATA = frozenset((AUTH_OK, AUTH_KERBEROS_V5, AUTH_CLEARTEXT_PASSWORD, AUTH_GSS, AUTH_SSPI))


def _authentication(raw: bytes) -> Authentication:
    (code,) = _I32.unpack_from(raw, 5)
    data = raw[9:]
    if code in _AUTH_NO_DATA:
        if data:
            raise ProtocolViolation(f"invalid message format: authentication request {code}")
    elif code == AUTH_MD5_PASSWORD:
        if len(data) != 4:
            raise ProtocolViolation("invalid message format: MD5 salt is not 4 bytes")
    elif code == AUTH_SASL:
        sasl_mechanisms(data)
    return Authentication(code, data, raw=raw)


def _parameter_status(raw: bytes) -> ParameterStatus:
    name, pos = _read_str(raw, 5)
    value, pos = _read_str(raw, pos)
    _check_end(raw, pos, "ParameterStatus")
    return ParameterStatus(name, value, raw=raw)


def _backend_key_data(raw: bytes) -> BackendKeyData:
    (pid,) = _I32.unpack_from(raw, 5)
    secret = raw[9:]
    if not 4 <= len(secret) <= MAX_CANCEL_KEY_LENGTH:
        raise ProtocolViolation(f"invalid cancel key length {len(secret)} in BackendKeyData")
    return BackendKeyData(pid, secret, raw=raw)


_READY_STATUS = {ord("I"): "I", ord("T"): "T", ord("E"): "E"}


def _ready_for_query(raw: bytes) -> ReadyForQuery:
    if len(raw) != 6:
        raise ProtocolViolation("invalid message format: ReadyForQuery")
    status = _READY_STATUS.get(raw[5])
    if status is None:
        raise ProtocolViolation(f"unexpected transaction status {raw[5]} in ReadyForQuery")
    return ReadyForQuery(status, raw=raw)


def _row_description(raw: bytes) -> RowDescription:
    (count,) = _U16.unpack_from(raw, 5)
    pos = 7
    if 19 * count > len(raw) - pos:
        raise ProtocolViolation(f"insufficient data left in message: {count} fields")
    fields: list[FieldDescription] = []
    unpack = _FIELD.unpack_from
    for _ in range(count):
        end = raw.find(b"\0", pos)
        if end < 0:
            raise ProtocolViolation("invalid string in message: no terminating NUL")
        table_oid, attr, type_oid, size, modifier, fmt = unpack(raw, end + 1)
        fields.append(
            FieldDescription(
                raw[pos:end].decode("utf-8", "surrogateescape"),
                table_oid,
                attr,
                type_oid,
                size,
                modifier,
                fmt,
            )
        )
        pos = end + 19
    _check_end(raw, pos, "RowDescription")
    return RowDescription(tuple(fields), raw=raw)


def _data_row(raw: bytes) -> DataRow:
    values, pos = _read_values(raw, 5)
    _check_end(raw, pos, "DataRow")
    return DataRow(values, raw=raw)


def _command_complete(raw: bytes) -> CommandComplete:
    tag, pos = _read_str(raw, 5)
    _check_end(raw, pos, "CommandComplete")
    return CommandComplete(tag, raw=raw)


def _diagnostic(cls: type[ErrorResponse] | type[NoticeResponse]) -> Callable[[bytes], Message]:
    def decode(raw: bytes) -> Message:
        fields: list[tuple[str, str]] = []
        pos = 5
        size = len(raw)
        while True:
            if pos >= size:
                raise ProtocolViolation(f"invalid message format: {cls.__name__} unterminated")
            code = raw[pos]
            if code == 0:
                break
            end = raw.find(b"\0", pos + 1)
            if end < 0:
                raise ProtocolViolation("invalid string in message: no terminating NUL")
            fields.append((chr(code), raw[pos + 1 : end].decode("utf-8", "surrogateescape")))
            pos = end + 1
        _check_end(raw, pos + 1, cls.__name__)
        return cls(tuple(fields), raw=raw)

    return decode


def _parameter_description(raw: bytes) -> ParameterDescription:
    (count,) = _U16.unpack_from(raw, 5)
    if 7 + 4 * count != len(raw):
        raise ProtocolViolation(f"invalid message format: ParameterDescription of {count}")
    return ParameterDescription(struct.unpack_from(f"!{count}I", raw, 7), raw=raw)


def _copy_response(
    cls: type[CopyInResponse] | type[CopyOutResponse] | type[CopyBothResponse],
) -> Callable[[bytes], Message]:
    def decode(raw: bytes) -> Message:
        if len(raw) < 6:
            raise ProtocolViolation("insufficient data left in message")
        fmt = raw[5] - 256 if raw[5] > 127 else raw[5]
        formats, pos = _read_int16s(raw, 6)
        _check_end(raw, pos, cls.__name__)
        return cls(fmt, formats, raw=raw)

    return decode


def _notification(raw: bytes) -> NotificationResponse:
    (pid,) = _I32.unpack_from(raw, 5)
    channel, pos = _read_str(raw, 9)
    payload, pos = _read_str(raw, pos)
    _check_end(raw, pos, "NotificationResponse")
    return NotificationResponse(pid, channel, payload, raw=raw)


def _negotiate(raw: bytes) -> NegotiateProtocolVersion:
    (version,) = _I32.unpack_from(raw, 5)
    (count,) = _I32.unpack_from(raw, 9)
    pos = 13
    if count < 0 or count > len(raw) - pos:
        raise ProtocolViolation(f"invalid option count {count} in NegotiateProtocolVersion")
    options: list[str] = []
    for _ in range(count):
        option, pos = _read_str(raw, pos)
        options.append(option)
    _check_end(raw, pos, "NegotiateProtocolVersion")
    return NegotiateProtocolVersion(version, tuple(options), raw=raw)


def _function_call_response(raw: bytes) -> FunctionCallResponse:
    (length,) = _I32.unpack_from(raw, 5)
    if length == -1 and len(raw) == 9:
        return FunctionCallResponse(None, raw=raw)
    if length != len(raw) - 9:
        raise ProtocolViolation("invalid message format: FunctionCallResponse length")
    return FunctionCallResponse(raw[9:], raw=raw)


_BACKEND_DECODERS: dict[int, _Decoder] = {
    ord("R"): _authentication,
    ord("S"): _parameter_status,
    ord("K"): _backend_key_data,
    ord("Z"): _ready_for_query,
    ord("T"): _row_description,
    ord("D"): _data_row,
    ord("C"): _command_complete,
    ord("E"): _diagnostic(ErrorResponse),
    ord("N"): _diagnostic(NoticeResponse),
    ord("1"): _empty(ParseComplete),
    ord("2"): _empty(BindComplete),
    ord("3"): _empty(CloseComplete),
    ord("n"): _empty(NoData),
    ord("I"): _empty(EmptyQueryResponse),
    ord("s"): _empty(PortalSuspended),
    ord("t"): _parameter_description,
    ord("G"): _copy_response(CopyInResponse),
    ord("H"): _copy_response(CopyOutResponse),
    ord("W"): _copy_response(CopyBothResponse),
    ord("d"): _copy_data,
    ord("c"): _empty(CopyDone),
    ord("A"): _notification,
    ord("v"): _negotiate,
    ord("V"): _function_call_response,
}

# Backend types whose length is fixed or small: checked from the header alone.
_BACKEND_FIXED_LIMITS: dict[int, int] = {
    **dict.fromkeys((ord(t) for t in "123nIsc"), 4),
    ord("Z"): 5,
    ord("K"): 8 + MAX_CANCEL_KEY_LENGTH,
    ord("R"): MAX_AUTH_MESSAGE_SIZE,
}


def _raw_message(raw: bytes) -> RawMessage:
    return RawMessage(raw[:1], raw[5:], raw=raw)


# --------------------------------------------------------------------------------------
# Parsers
# --------------------------------------------------------------------------------------

MessageT = TypeVar("MessageT", FrontendMessage, BackendMessage)


class _Parser(Generic[MessageT]):
    """Buffering, framing and poisoning shared by both directions."""

    __slots__ = ("_buf", "_decoders", "_error", "_limits", "_pos")

    _buf: bytes | bytearray
    _pos: int
    _error: ProtocolViolation | None
    # type byte -> (length limit, decoder); a type missing here is unknown
    _limits: dict[int, tuple[int, _Decoder]]

    def __init__(self) -> None:
        self._buf = b""
        self._pos = 0
        self._error = None

    # -- public ---------------------------------------------------------------------

    def feed(self, data: bytes | bytearray | memoryview) -> Iterator[MessageT]:
        """Buffer ``data`` and return an iterator of the messages now complete.

        Messages the caller does not take from the iterator stay buffered and come
        out of the next one. Raises :class:`ProtocolViolation` (here or while
        iterating) if the bytes break the protocol, and on every call after that.
        """
        if self._error is not None:
            raise self._poisoned()
        if data:
            buf = self._buf
            pos = self._pos
            if pos >= len(buf):
                self._buf = bytes(data)
                self._pos = 0
            elif isinstance(buf, bytes):
                grown = bytearray(memoryview(buf)[pos:])
                grown += data
                self._buf = grown
                self._pos = 0
            else:
                if pos:
                    del buf[:pos]
                    self._pos = 0
                buf += data
        return self._messages()

    def __iter__(self) -> Iterator[MessageT]:
        return self._messages()

    def next_message(self) -> MessageT | None:
        """The next complete message, or None until more bytes are fed."""
        if self._error is not None:
            raise self._poisoned()
        try:
            return self._next()  # type: ignore[return-value]
        except ProtocolViolation as exc:
            self._poison(exc)
            raise
        except struct.error:
            exc = ProtocolViolation("insufficient data left in message")
            self._poison(exc)
            raise exc from None

    @property
    def pending(self) -> int:
        """How many bytes are buffered and not yet returned as messages."""
        return len(self._buf) - self._pos

    def take_pending(self) -> bytes:
        """Remove and return the buffered bytes not yet returned as messages.

        For a relay that stops framing this direction with the parser (it hands the
        rest of the stream to a lighter reader).
        """
        rest = bytes(memoryview(self._buf)[self._pos :])
        self._buf = b""
        self._pos = 0
        return rest

    @property
    def error(self) -> ProtocolViolation | None:
        """The violation that poisoned this parser, if any."""
        return self._error

    # -- internals ------------------------------------------------------------------

    def _messages(self) -> Iterator[MessageT]:
        if self._error is not None:
            raise self._poisoned()
        next_ = self._next
        try:
            while True:
                message = next_()
                if message is None:
                    return
                yield message  # type: ignore[misc]
        except ProtocolViolation as exc:
            self._poison(exc)
            raise
        except struct.error:
            exc = ProtocolViolation("insufficient data left in message")
            self._poison(exc)
            raise exc from None

    def _poison(self, exc: ProtocolViolation) -> None:
        self._error = exc
        self._buf = b""
        self._pos = 0

    def _poisoned(self) -> ProtocolViolation:
        error = self._error
        assert error is not None
        return ProtocolViolation(
            f"connection already broken by an earlier violation: {error.message}",
            error.sqlstate,
        )

    def _next(self) -> Message | None:
        return self._next_typed()

    def _unknown_type(self, type_code: int) -> tuple[int, _Decoder]:
        raise NotImplementedError

    def _next_typed(self) -> Message | None:
        buf = self._buf
        pos = self._pos
        avail = len(buf) - pos
        if avail <= 0:
            return None
        type_code = buf[pos]
        entry = self._limits.get(type_code)
        if entry is None:
            entry = self._unknown_type(type_code)
        if avail < 5:
            return None
        limit, decode = entry
        (length,) = _I32.unpack_from(buf, pos + 1)
        if length < 4 or length > limit:
            raise ProtocolViolation(
                f"invalid message length {length} for message type {_type_name(type_code)}"
                f" (limit {limit})"
            )
        end = pos + 1 + length
        if end > len(buf):
            return None
        raw = buf[pos:end] if type(buf) is bytes else bytes(buf[pos:end])
        self._pos = end
        return decode(raw)


def _limits_table(
    decoders: dict[int, _Decoder],
    limits: dict[int, int],
    default_limit: int,
    passthrough: Collection[bytes | str],
) -> dict[int, tuple[int, _Decoder]]:
    skip = {t if isinstance(t, int) else ord(t) for t in passthrough}
    return {
        code: (limits.get(code, default_limit), _raw_message if code in skip else decode)
        for code, decode in decoders.items()
    }


_STARTUP, _TYPED, _CLOSED = 0, 1, 2


class FrontendParser(_Parser[FrontendMessage]):
    """Parses the client's side of a connection.

    It starts in the startup phase (``startup=False`` starts with typed messages):
    SSLRequest and GSSENCRequest keep it there (the client sends another startup
    packet, possibly over TLS); a StartupMessage moves it to typed messages; after a
    CancelRequest or a Terminate, any further byte is a violation.

    ``passthrough`` names typed message types (e.g. ``b"d"``) to frame but not
    decode: they come out as :class:`RawMessage`.

    A client that starts TLS directly (PostgreSQL 17's ``sslnegotiation=direct``)
    sends a TLS record (first byte 0x16) where a startup packet belongs; it reads as an
    invalid startup length, so a proxy offering direct TLS must look at the first byte
    before feeding.
    """

    __slots__ = ("_state", "max_startup_packet_size")

    def __init__(
        self,
        *,
        startup: bool = True,
        max_message_size: int = MAX_MESSAGE_SIZE,
        max_small_message_size: int = MAX_SMALL_MESSAGE_SIZE,
        max_auth_message_size: int = MAX_AUTH_MESSAGE_SIZE,
        max_startup_packet_size: int = MAX_STARTUP_PACKET_SIZE,
        passthrough: Collection[bytes | str] = (),
    ) -> None:
        super().__init__()
        self._state = _STARTUP if startup else _TYPED
        self.max_startup_packet_size = max_startup_packet_size
        limits = dict.fromkeys(_FRONTEND_LARGE, max_message_size)
        limits.update(dict.fromkeys(_FRONTEND_SMALL, min(max_small_message_size, max_message_size)))
        limits[ord("p")] = min(max_auth_message_size, max_message_size)
        self._limits = _limits_table(_FRONTEND_DECODERS, limits, max_message_size, passthrough)

    @property
    def in_startup(self) -> bool:
        """True until a StartupMessage has been parsed."""
        return self._state == _STARTUP

    @property
    def closed(self) -> bool:
        """True after a CancelRequest or a Terminate."""
        return self._state == _CLOSED

    def start_encryption(self) -> None:
        """Call before answering 'S'/'G' to SSLRequest/GSSENCRequest.

        Bytes the client sent after its request, before our answer, would be
        plaintext injected into the encrypted session (CVE-2021-23214): refuse them.
        """
        if self._error is not None:
            raise self._poisoned()
        if self.pending:
            exc = ProtocolViolation("received unencrypted data after SSL request")
            self._poison(exc)
            raise exc

    def _next(self) -> Message | None:
        state = self._state
        if state == _TYPED:
            message = self._next_typed()
            if type(message) is Terminate:
                self._state = _CLOSED
            return message
        if state == _STARTUP:
            return self._next_startup()
        if self.pending:
            raise ProtocolViolation("unexpected data after Terminate or CancelRequest")
        return None

    def _unknown_type(self, type_code: int) -> tuple[int, _Decoder]:
        # PostgreSQL's wording, number and all
        raise ProtocolViolation(f"invalid frontend message type {type_code}")

    def _next_startup(self) -> Message | None:
        buf = self._buf
        pos = self._pos
        avail = len(buf) - pos
        if avail < 4:
            return None
        (length,) = _I32.unpack_from(buf, pos)
        if length < 8 or length > self.max_startup_packet_size:
            raise ProtocolViolation(f"invalid length of startup packet: {length}")
        if avail < length:
            return None
        end = pos + length
        raw = buf[pos:end] if type(buf) is bytes else bytes(buf[pos:end])
        self._pos = end
        message = _decode_startup(raw)
        if type(message) is StartupMessage:
            self._state = _TYPED
        elif type(message) is CancelRequest:
            self._state = _CLOSED
        return message


class BackendParser(_Parser[BackendMessage]):
    """Parses the server's side of a connection (typed messages from the first byte).

    Call :meth:`expect_encryption_response` after sending SSLRequest/GSSENCRequest:
    the next byte is then read as the server's one-byte answer. Unknown message types
    come out as :class:`RawMessage`; so do the types named in ``passthrough``.
    """

    __slots__ = ("_awaiting_encryption", "max_message_size")

    def __init__(
        self,
        *,
        max_message_size: int = MAX_MESSAGE_SIZE,
        passthrough: Collection[bytes | str] = (),
    ) -> None:
        super().__init__()
        self._awaiting_encryption = False
        self.max_message_size = max_message_size
        limits = {k: min(v, max_message_size) for k, v in _BACKEND_FIXED_LIMITS.items()}
        self._limits = _limits_table(_BACKEND_DECODERS, limits, max_message_size, passthrough)

    def expect_encryption_response(self) -> None:
        """The next byte answers an SSLRequest or GSSENCRequest: 'S'/'G' or 'N'.

        An 'E' instead is parsed as the ErrorResponse of a server that does not
        understand the request.
        """
        if self._error is not None:
            raise self._poisoned()
        self._awaiting_encryption = True

    def _unknown_type(self, type_code: int) -> tuple[int, _Decoder]:
        return self.max_message_size, _raw_message

    def _next(self) -> Message | None:
        if self._awaiting_encryption:
            return self._next_encryption_response()
        return self._next_typed()

    def _next_encryption_response(self) -> Message | None:
        buf = self._buf
        pos = self._pos
        if pos >= len(buf):
            return None
        code = buf[pos]
        if code == 0x45:  # 'E': an error from a server that does not know the request
            self._awaiting_encryption = False
            return self._next_typed()
        if code not in (0x53, 0x47, 0x4E):  # 'S', 'G', 'N'
            raise ProtocolViolation(f"received invalid response to encryption request: {code}")
        self._awaiting_encryption = False
        self._pos = pos + 1
        if code != 0x4E and self.pending:
            # Bytes after 'S' before the handshake: a man-in-the-middle's (CVE-2021-23222).
            raise ProtocolViolation("received unencrypted data after SSL response")
        return EncryptionResponse(chr(code), raw=bytes((code,)))


def _decode_one(parser: _Parser[MessageT], raw: bytes) -> MessageT:
    messages = list(parser.feed(raw))
    if len(messages) != 1 or parser.pending:
        raise ProtocolViolation(
            f"expected exactly one complete message, got {len(messages)}"
            f" and {parser.pending} bytes",
            PROTOCOL_VIOLATION,
        )
    return messages[0]


def decode_frontend(raw: bytes, *, startup: bool = False) -> FrontendMessage:
    """Decode exactly one complete frontend message (a startup packet if ``startup``)."""
    return _decode_one(FrontendParser(startup=startup), raw)


def decode_backend(raw: bytes) -> BackendMessage:
    """Decode exactly one complete backend message."""
    return _decode_one(BackendParser(), raw)
