"""PostgreSQL v3 wire-protocol messages: dataclasses and their serialization.

Every message is a slotted dataclass. ``encode()`` serializes it from its fields (the
builders the proxy uses to synthesize replies and its own upstream queries);
``raw`` holds the exact bytes a parser received it as, so pass-through forwards
what the peer sent (``wire()`` gives ``raw`` when set, else ``encode()``). ``raw``
takes no part in equality: ``parse(m.encode()) == m``.

Strings are UTF-8, decoded with ``surrogateescape`` so that bytes that are not valid
UTF-8 survive a decode/encode round trip unchanged. Field layouts follow the
"Message Formats" chapter of the PostgreSQL documentation (protocol 3.0 and 3.2).

No I/O here; parsing lives in :mod:`stripesync.proxy.protocol`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import ClassVar, Self

from stripesync.proxy.errors import ProtocolViolation

_I16 = struct.Struct("!h")
_I32 = struct.Struct("!i")
_U32 = struct.Struct("!I")
_HEAD = struct.Struct("!ci")
_I32_I32 = struct.Struct("!ii")

NULL_LENGTH = b"\xff\xff\xff\xff"

SSL_REQUEST_CODE = 80877103
GSSENC_REQUEST_CODE = 80877104
CANCEL_REQUEST_CODE = 80877102
PROTOCOL_3_0 = 3 << 16

# Authentication request codes (the Int32 after 'R').
AUTH_OK = 0
AUTH_KERBEROS_V5 = 2
AUTH_CLEARTEXT_PASSWORD = 3
AUTH_MD5_PASSWORD = 5
AUTH_GSS = 7
AUTH_GSS_CONTINUE = 8
AUTH_SSPI = 9
AUTH_SASL = 10
AUTH_SASL_CONTINUE = 11
AUTH_SASL_FINAL = 12

TEXT_FORMAT = 0
BINARY_FORMAT = 1

# ErrorResponse / NoticeResponse field codes, in the order PostgreSQL sends them.
DIAGNOSTIC_FIELDS: dict[str, str] = {
    "S": "severity_localized",
    "V": "severity",
    "C": "code",
    "M": "message",
    "D": "detail",
    "H": "hint",
    "P": "position",
    "p": "internal_position",
    "q": "internal_query",
    "W": "where",
    "s": "schema_name",
    "t": "table_name",
    "c": "column_name",
    "d": "data_type_name",
    "n": "constraint_name",
    "F": "file",
    "L": "line",
    "R": "routine",
}


def encode_str(value: str) -> bytes:
    """A protocol String: UTF-8 (surrogateescape) and a terminating NUL."""
    data = value.encode("utf-8", "surrogateescape")
    if b"\0" in data:
        raise ValueError(f"a protocol string cannot contain NUL: {value!r}")
    return data + b"\0"


def decode_str(data: bytes) -> str:
    """The inverse of :func:`encode_str` without the NUL (never fails)."""
    return data.decode("utf-8", "surrogateescape")


def sasl_mechanisms(data: bytes) -> tuple[str, ...]:
    """AuthenticationSASL's list: non-empty names, each NUL-terminated, then a NUL."""
    if data == b"\0":
        return ()
    if data[:1] in (b"", b"\0") or not data.endswith(b"\0\0") or b"\0\0" in data[:-1]:
        raise ProtocolViolation("malformed AuthenticationSASL message")
    return tuple(decode_str(m) for m in data[:-2].split(b"\0"))


def frame(type_code: bytes, body: bytes) -> bytes:
    """A typed message: type byte, Int32 length (counting itself), body."""
    return _HEAD.pack(type_code, len(body) + 4) + body


def _startup_frame(body: bytes) -> bytes:
    return _I32.pack(len(body) + 4) + body


def _int16s(values: tuple[int, ...]) -> bytes:
    return struct.pack(f"!H{len(values)}h", len(values), *values)


def _values(values: tuple[bytes | None, ...]) -> bytes:
    parts: list[bytes] = [struct.pack("!H", len(values))]
    append = parts.append
    pack = _I32.pack
    for value in values:
        if value is None:
            append(NULL_LENGTH)
        else:
            append(pack(len(value)))
            append(value)
    return b"".join(parts)


def _kind(kind: str) -> bytes:
    if kind not in ("S", "P"):
        raise ValueError(f"kind must be 'S' (statement) or 'P' (portal), not {kind!r}")
    return kind.encode()


@dataclass(slots=True)
class Message:
    """Base of every message: ``raw`` is the exact bytes received (empty if built)."""

    raw: bytes = field(default=b"", kw_only=True, compare=False, repr=False)

    def encode(self) -> bytes:
        raise NotImplementedError

    def wire(self) -> bytes:
        """The bytes to forward: as received when parsed, else serialized."""
        return self.raw or self.encode()


# --------------------------------------------------------------------------------------
# Untyped startup-phase packets (frontend)
# --------------------------------------------------------------------------------------


@dataclass(slots=True)
class StartupMessage(Message):
    """StartupMessage: protocol 3.minor and the (name, value) parameters in order."""

    type: ClassVar[bytes] = b""
    parameters: tuple[tuple[str, str], ...] = ()
    minor: int = 0

    def get(self, name: str, default: str | None = None) -> str | None:
        """A parameter's value (the last one if a client sent it twice)."""
        value = default
        for key, val in self.parameters:
            if key == name:
                value = val
        return value

    def as_dict(self) -> dict[str, str]:
        return dict(self.parameters)

    def encode(self) -> bytes:
        if not 0 <= self.minor <= 0xFFFF:
            raise ValueError(f"a minor protocol version is 0..65535: {self.minor}")
        parts = [_I32.pack(PROTOCOL_3_0 | self.minor)]
        for name, value in self.parameters:
            parts.append(encode_str(name))
            parts.append(encode_str(value))
        parts.append(b"\0")
        return _startup_frame(b"".join(parts))


@dataclass(slots=True)
class SSLRequest(Message):
    type: ClassVar[bytes] = b""

    def encode(self) -> bytes:
        return _I32_I32.pack(8, SSL_REQUEST_CODE)


@dataclass(slots=True)
class GSSENCRequest(Message):
    type: ClassVar[bytes] = b""

    def encode(self) -> bytes:
        return _I32_I32.pack(8, GSSENC_REQUEST_CODE)


@dataclass(slots=True)
class CancelRequest(Message):
    """CancelRequest: a backend's pid and its secret key (4 bytes in 3.0, ≤256 in 3.2)."""

    type: ClassVar[bytes] = b""
    pid: int
    secret: bytes

    def encode(self) -> bytes:
        return _startup_frame(_I32_I32.pack(CANCEL_REQUEST_CODE, self.pid) + self.secret)


# --------------------------------------------------------------------------------------
# Typed frontend messages
# --------------------------------------------------------------------------------------


@dataclass(slots=True)
class Query(Message):
    type: ClassVar[bytes] = b"Q"
    query: str

    def encode(self) -> bytes:
        return frame(b"Q", encode_str(self.query))


@dataclass(slots=True)
class Parse(Message):
    type: ClassVar[bytes] = b"P"
    name: str
    query: str
    param_types: tuple[int, ...] = ()

    def encode(self) -> bytes:
        n = len(self.param_types)
        return frame(
            b"P",
            encode_str(self.name)
            + encode_str(self.query)
            + struct.pack(f"!H{n}I", n, *self.param_types),
        )


@dataclass(slots=True)
class Bind(Message):
    """Bind: parameter values are raw bytes (text or binary per format) or None."""

    type: ClassVar[bytes] = b"B"
    portal: str = ""
    statement: str = ""
    param_formats: tuple[int, ...] = ()
    params: tuple[bytes | None, ...] = ()
    result_formats: tuple[int, ...] = ()

    def param_format(self, index: int) -> int:
        """The format code of parameter ``index`` (0 text, 1 binary)."""
        formats = self.param_formats
        if not formats:
            return TEXT_FORMAT
        return formats[0] if len(formats) == 1 else formats[index]

    def encode(self) -> bytes:
        return frame(
            b"B",
            encode_str(self.portal)
            + encode_str(self.statement)
            + _int16s(self.param_formats)
            + _values(self.params)
            + _int16s(self.result_formats),
        )


@dataclass(slots=True)
class Describe(Message):
    """Describe: ``kind`` is 'S' (prepared statement) or 'P' (portal)."""

    type: ClassVar[bytes] = b"D"
    kind: str
    name: str = ""

    def encode(self) -> bytes:
        return frame(b"D", _kind(self.kind) + encode_str(self.name))


@dataclass(slots=True)
class Execute(Message):
    type: ClassVar[bytes] = b"E"
    portal: str = ""
    max_rows: int = 0

    def encode(self) -> bytes:
        return frame(b"E", encode_str(self.portal) + _I32.pack(self.max_rows))


@dataclass(slots=True)
class Close(Message):
    """Close: ``kind`` is 'S' (prepared statement) or 'P' (portal)."""

    type: ClassVar[bytes] = b"C"
    kind: str
    name: str = ""

    def encode(self) -> bytes:
        return frame(b"C", _kind(self.kind) + encode_str(self.name))


@dataclass(slots=True)
class Sync(Message):
    type: ClassVar[bytes] = b"S"

    def encode(self) -> bytes:
        return b"S\0\0\0\x04"


@dataclass(slots=True)
class Flush(Message):
    type: ClassVar[bytes] = b"H"

    def encode(self) -> bytes:
        return b"H\0\0\0\x04"


@dataclass(slots=True)
class Terminate(Message):
    type: ClassVar[bytes] = b"X"

    def encode(self) -> bytes:
        return b"X\0\0\0\x04"


@dataclass(slots=True)
class CopyData(Message):
    """CopyData, sent by both sides."""

    type: ClassVar[bytes] = b"d"
    data: bytes

    def encode(self) -> bytes:
        return frame(b"d", self.data)


@dataclass(slots=True)
class CopyDone(Message):
    """CopyDone, sent by both sides."""

    type: ClassVar[bytes] = b"c"

    def encode(self) -> bytes:
        return b"c\0\0\0\x04"


@dataclass(slots=True)
class CopyFail(Message):
    type: ClassVar[bytes] = b"f"
    message: str

    def encode(self) -> bytes:
        return frame(b"f", encode_str(self.message))


@dataclass(slots=True)
class FunctionCall(Message):
    type: ClassVar[bytes] = b"F"
    oid: int
    arg_formats: tuple[int, ...] = ()
    args: tuple[bytes | None, ...] = ()
    result_format: int = TEXT_FORMAT

    def encode(self) -> bytes:
        return frame(
            b"F",
            _U32.pack(self.oid)
            + _int16s(self.arg_formats)
            + _values(self.args)
            + _I16.pack(self.result_format),
        )


@dataclass(slots=True)
class PasswordMessage(Message):
    """'p': PasswordMessage, GSSResponse, SASLInitialResponse or SASLResponse.

    Which one it is depends on the authentication exchange in progress, so the
    parser keeps the payload raw; the ``as_*`` methods interpret it (raising
    :class:`ProtocolViolation` when it does not fit).
    """

    type: ClassVar[bytes] = b"p"
    data: bytes

    @classmethod
    def for_password(cls, password: str) -> PasswordMessage:
        return cls(encode_str(password))

    @classmethod
    def for_sasl_initial(cls, mechanism: str, response: bytes | None) -> PasswordMessage:
        length = NULL_LENGTH if response is None else _I32.pack(len(response))
        return cls(encode_str(mechanism) + length + (response or b""))

    def encode(self) -> bytes:
        return frame(b"p", self.data)

    def as_password(self) -> str:
        """A cleartext or MD5 password: one NUL-terminated string."""
        data = self.data
        if not data or data.find(b"\0") != len(data) - 1:
            raise ProtocolViolation("invalid password packet size")
        return decode_str(data[:-1])

    def as_sasl_initial(self) -> tuple[str, bytes | None]:
        """SASLInitialResponse: the mechanism and the initial response (or None)."""
        data = self.data
        end = data.find(b"\0")
        if end < 0 or len(data) < end + 5:
            raise ProtocolViolation("malformed SASLInitialResponse message")
        (length,) = _I32.unpack_from(data, end + 1)
        rest = data[end + 5 :]
        if length == -1 and not rest:
            return decode_str(data[:end]), None
        if length != len(rest):
            raise ProtocolViolation("malformed SASLInitialResponse message")
        return decode_str(data[:end]), rest

    def as_sasl_response(self) -> bytes:
        """SASLResponse (or GSSResponse): the data as is."""
        return self.data


# --------------------------------------------------------------------------------------
# Backend messages
# --------------------------------------------------------------------------------------


@dataclass(slots=True)
class EncryptionResponse(Message):
    """The single byte a server answers SSLRequest/GSSENCRequest with: 'S', 'G' or 'N'."""

    type: ClassVar[bytes] = b""
    code: str

    @property
    def accepted(self) -> bool:
        return self.code != "N"

    def encode(self) -> bytes:
        if self.code not in ("S", "G", "N"):
            raise ValueError(f"encryption response must be 'S', 'G' or 'N': {self.code!r}")
        return self.code.encode()


@dataclass(slots=True)
class Authentication(Message):
    """AuthenticationXXX: ``code`` (AUTH_*) and the bytes that follow it.

    ``data`` is the salt for MD5, the SASL mechanism list for SASL (see
    :attr:`mechanisms`), the challenge or outcome for the continue/final steps.
    """

    type: ClassVar[bytes] = b"R"
    code: int
    data: bytes = b""

    @classmethod
    def ok(cls) -> Authentication:
        return cls(AUTH_OK)

    @classmethod
    def cleartext_password(cls) -> Authentication:
        return cls(AUTH_CLEARTEXT_PASSWORD)

    @classmethod
    def md5_password(cls, salt: bytes) -> Authentication:
        if len(salt) != 4:
            raise ValueError("an MD5 salt is 4 bytes")
        return cls(AUTH_MD5_PASSWORD, salt)

    @classmethod
    def sasl(cls, mechanisms: tuple[str, ...]) -> Authentication:
        if "" in mechanisms:
            raise ValueError("a SASL mechanism name cannot be empty")
        return cls(AUTH_SASL, b"".join(encode_str(m) for m in mechanisms) + b"\0")

    @classmethod
    def sasl_continue(cls, data: bytes) -> Authentication:
        return cls(AUTH_SASL_CONTINUE, data)

    @classmethod
    def sasl_final(cls, data: bytes) -> Authentication:
        return cls(AUTH_SASL_FINAL, data)

    @property
    def mechanisms(self) -> tuple[str, ...]:
        """The SASL mechanisms offered (AuthenticationSASL only)."""
        return sasl_mechanisms(self.data) if self.code == AUTH_SASL else ()

    def encode(self) -> bytes:
        return frame(b"R", _I32.pack(self.code) + self.data)


@dataclass(slots=True)
class ParameterStatus(Message):
    type: ClassVar[bytes] = b"S"
    name: str
    value: str

    def encode(self) -> bytes:
        return frame(b"S", encode_str(self.name) + encode_str(self.value))


@dataclass(slots=True)
class BackendKeyData(Message):
    """BackendKeyData: pid and secret key (4 bytes in protocol 3.0, ≤256 in 3.2)."""

    type: ClassVar[bytes] = b"K"
    pid: int
    secret: bytes

    def encode(self) -> bytes:
        return frame(b"K", _I32.pack(self.pid) + self.secret)


_READY: dict[str, bytes] = {s: b"Z\0\0\0\x05" + s.encode() for s in "ITE"}


@dataclass(slots=True)
class ReadyForQuery(Message):
    """ReadyForQuery: transaction status 'I' (idle), 'T' (in a block) or 'E' (failed)."""

    type: ClassVar[bytes] = b"Z"
    status: str

    def encode(self) -> bytes:
        try:
            return _READY[self.status]
        except KeyError:
            raise ValueError(f"transaction status must be I, T or E: {self.status!r}") from None


_FIELD = struct.Struct("!IhIhih")


@dataclass(slots=True)
class FieldDescription:
    """One column of a RowDescription, in wire order."""

    name: str
    table_oid: int = 0
    column_attr: int = 0
    type_oid: int = 25
    type_size: int = -1
    type_modifier: int = -1
    format: int = TEXT_FORMAT

    def encode(self) -> bytes:
        return encode_str(self.name) + _FIELD.pack(
            self.table_oid,
            self.column_attr,
            self.type_oid,
            self.type_size,
            self.type_modifier,
            self.format,
        )


@dataclass(slots=True)
class RowDescription(Message):
    type: ClassVar[bytes] = b"T"
    fields: tuple[FieldDescription, ...]

    def encode(self) -> bytes:
        return frame(
            b"T",
            struct.pack("!H", len(self.fields)) + b"".join(f.encode() for f in self.fields),
        )


@dataclass(slots=True)
class DataRow(Message):
    type: ClassVar[bytes] = b"D"
    values: tuple[bytes | None, ...]

    def encode(self) -> bytes:
        return frame(b"D", _values(self.values))


@dataclass(slots=True)
class CommandComplete(Message):
    type: ClassVar[bytes] = b"C"
    tag: str

    def encode(self) -> bytes:
        return frame(b"C", encode_str(self.tag))


@dataclass(slots=True)
class _Diagnostic(Message):
    """The body of ErrorResponse and NoticeResponse: (code, value) pairs in order."""

    type: ClassVar[bytes] = b""
    fields: tuple[tuple[str, str], ...]

    @classmethod
    def create(
        cls,
        code: str,
        message: str,
        *,
        severity: str = "ERROR",
        detail: str | None = None,
        hint: str | None = None,
        position: int | None = None,
        internal_position: int | None = None,
        internal_query: str | None = None,
        where: str | None = None,
        schema_name: str | None = None,
        table_name: str | None = None,
        column_name: str | None = None,
        data_type_name: str | None = None,
        constraint_name: str | None = None,
        file: str | None = None,
        line: int | None = None,
        routine: str | None = None,
    ) -> Self:
        """Fields in PostgreSQL's order; ``code`` is the SQLSTATE (5 characters)."""
        if len(code) != 5 or not code.isascii() or not code.isalnum():
            raise ValueError(f"a SQLSTATE is 5 ASCII letters or digits: {code!r}")
        optional: tuple[tuple[str, str | int | None], ...] = (
            ("D", detail),
            ("H", hint),
            ("P", position),
            ("p", internal_position),
            ("q", internal_query),
            ("W", where),
            ("s", schema_name),
            ("t", table_name),
            ("c", column_name),
            ("d", data_type_name),
            ("n", constraint_name),
            ("F", file),
            ("L", line),
            ("R", routine),
        )
        fields = [("S", severity), ("V", severity), ("C", code), ("M", message)]
        fields.extend((key, str(value)) for key, value in optional if value is not None)
        return cls(tuple(fields))

    def get(self, key: str, default: str | None = None) -> str | None:
        """The value of field ``key`` (one character, e.g. 'C'); the last if repeated."""
        value = default
        for k, v in self.fields:
            if k == key:
                value = v
        return value

    def as_dict(self) -> dict[str, str]:
        return dict(self.fields)

    @property
    def severity(self) -> str | None:
        return self.get("V") or self.get("S")

    @property
    def code(self) -> str | None:
        return self.get("C")

    @property
    def message(self) -> str | None:
        return self.get("M")

    @property
    def detail(self) -> str | None:
        return self.get("D")

    @property
    def hint(self) -> str | None:
        return self.get("H")

    @property
    def position(self) -> int | None:
        value = self.get("P")
        return int(value) if value is not None and value.isdigit() else None

    def encode(self) -> bytes:
        parts: list[bytes] = []
        for key, value in self.fields:
            code = key.encode("latin-1")
            if len(code) != 1 or code == b"\0":
                raise ValueError(f"a field code is one non-NUL byte: {key!r}")
            parts.append(code)
            parts.append(encode_str(value))
        parts.append(b"\0")
        return frame(self.type, b"".join(parts))


@dataclass(slots=True)
class ErrorResponse(_Diagnostic):
    type: ClassVar[bytes] = b"E"


@dataclass(slots=True)
class NoticeResponse(_Diagnostic):
    type: ClassVar[bytes] = b"N"


@dataclass(slots=True)
class ParseComplete(Message):
    type: ClassVar[bytes] = b"1"

    def encode(self) -> bytes:
        return b"1\0\0\0\x04"


@dataclass(slots=True)
class BindComplete(Message):
    type: ClassVar[bytes] = b"2"

    def encode(self) -> bytes:
        return b"2\0\0\0\x04"


@dataclass(slots=True)
class CloseComplete(Message):
    type: ClassVar[bytes] = b"3"

    def encode(self) -> bytes:
        return b"3\0\0\0\x04"


@dataclass(slots=True)
class NoData(Message):
    type: ClassVar[bytes] = b"n"

    def encode(self) -> bytes:
        return b"n\0\0\0\x04"


@dataclass(slots=True)
class EmptyQueryResponse(Message):
    type: ClassVar[bytes] = b"I"

    def encode(self) -> bytes:
        return b"I\0\0\0\x04"


@dataclass(slots=True)
class PortalSuspended(Message):
    type: ClassVar[bytes] = b"s"

    def encode(self) -> bytes:
        return b"s\0\0\0\x04"


@dataclass(slots=True)
class ParameterDescription(Message):
    type: ClassVar[bytes] = b"t"
    type_oids: tuple[int, ...]

    def encode(self) -> bytes:
        n = len(self.type_oids)
        return frame(b"t", struct.pack(f"!H{n}I", n, *self.type_oids))


@dataclass(slots=True)
class _CopyResponse(Message):
    """CopyIn/Out/BothResponse: overall format (0 text, 1 binary), per-column formats."""

    type: ClassVar[bytes] = b""
    format: int
    column_formats: tuple[int, ...] = ()

    def encode(self) -> bytes:
        return frame(self.type, struct.pack("!b", self.format) + _int16s(self.column_formats))


@dataclass(slots=True)
class CopyInResponse(_CopyResponse):
    type: ClassVar[bytes] = b"G"


@dataclass(slots=True)
class CopyOutResponse(_CopyResponse):
    type: ClassVar[bytes] = b"H"


@dataclass(slots=True)
class CopyBothResponse(_CopyResponse):
    type: ClassVar[bytes] = b"W"


@dataclass(slots=True)
class NotificationResponse(Message):
    type: ClassVar[bytes] = b"A"
    pid: int
    channel: str
    payload: str = ""

    def encode(self) -> bytes:
        return frame(
            b"A", _I32.pack(self.pid) + encode_str(self.channel) + encode_str(self.payload)
        )


@dataclass(slots=True)
class NegotiateProtocolVersion(Message):
    """The newest protocol version the server supports (PostgreSQL sends the whole
    version word, e.g. 196610 for 3.2) and the ``_pq_.`` options it does not know."""

    type: ClassVar[bytes] = b"v"
    newest_version: int
    unsupported_options: tuple[str, ...] = ()

    @property
    def newest_minor(self) -> int:
        return self.newest_version & 0xFFFF

    def encode(self) -> bytes:
        return frame(
            b"v",
            _I32_I32.pack(self.newest_version, len(self.unsupported_options))
            + b"".join(encode_str(o) for o in self.unsupported_options),
        )


@dataclass(slots=True)
class FunctionCallResponse(Message):
    type: ClassVar[bytes] = b"V"
    value: bytes | None

    def encode(self) -> bytes:
        if self.value is None:
            return frame(b"V", NULL_LENGTH)
        return frame(b"V", _I32.pack(len(self.value)) + self.value)


@dataclass(slots=True)
class RawMessage(Message):
    """A typed message kept undecoded: unknown backend types, or pass-through types."""

    type: bytes
    body: bytes

    def encode(self) -> bytes:
        if len(self.type) != 1:
            raise ValueError(f"a message type is one byte: {self.type!r}")
        return frame(self.type, self.body)


FrontendMessage = (
    StartupMessage
    | SSLRequest
    | GSSENCRequest
    | CancelRequest
    | Query
    | Parse
    | Bind
    | Describe
    | Execute
    | Close
    | Sync
    | Flush
    | Terminate
    | CopyData
    | CopyDone
    | CopyFail
    | FunctionCall
    | PasswordMessage
    | RawMessage
)

BackendMessage = (
    EncryptionResponse
    | Authentication
    | ParameterStatus
    | BackendKeyData
    | ReadyForQuery
    | RowDescription
    | DataRow
    | CommandComplete
    | ErrorResponse
    | NoticeResponse
    | ParseComplete
    | BindComplete
    | CloseComplete
    | NoData
    | EmptyQueryResponse
    | PortalSuspended
    | ParameterDescription
    | CopyInResponse
    | CopyOutResponse
    | CopyBothResponse
    | CopyData
    | CopyDone
    | NotificationResponse
    | NegotiateProtocolVersion
    | FunctionCallResponse
    | RawMessage
)
