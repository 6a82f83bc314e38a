"""Which upstream responses a session still waits for, read from headers only (sans-I/O).

The relay forwards the server's bytes to the client in whole chunks, as they arrive,
and only walks the message headers to keep its bookkeeping: :class:`ResponseTracker`
learns each frontend message the relay sent upstream (:meth:`~ResponseTracker.sent`)
and reads the server's stream (:meth:`~ResponseTracker.feed`), so that it knows

- when the server has answered everything sent so far (:attr:`~ResponseTracker.idle`):
  the moment the proxy may speak for itself (a write interceptor's reply) or run its
  own statements on the session;
- the transaction status of the last ReadyForQuery (``I``, ``T``, ``E``);
- whether the server is discarding extended-protocol messages until the next Sync
  after an error (:attr:`~ResponseTracker.ignoring_till_sync`);
- whether an Execute went upstream since the last ReadyForQuery
  (:attr:`~ResponseTracker.executed`): then the transaction status may have changed;
- whether the stream is at a message boundary (where the proxy may insert a message);
- the ParameterStatus values the server reported.

A DataRow costs one header read; only ReadyForQuery and ParameterStatus bodies are
looked at. The rules are PostgreSQL's (``postgres.c``): a simple Query, a Sync and a
FunctionCall end with ReadyForQuery; each extended-protocol message ends with its own
completion message (ParseComplete, BindComplete, CloseComplete, RowDescription or
NoData for Describe, CommandComplete / EmptyQueryResponse / PortalSuspended for
Execute) or with an ErrorResponse, after which the server ignores every message up to
the next Sync.
"""

from __future__ import annotations

import struct
from collections import deque

from stripesync.proxy.errors import ProtocolViolation

__all__ = ["ResponseTracker"]

_I32 = struct.Struct("!i")

# Frontend message types that get an answer (the others: Flush, CopyData, CopyDone,
# CopyFail, Terminate, PasswordMessage).
F_QUERY = ord("Q")
F_PARSE = ord("P")
F_BIND = ord("B")
F_DESCRIBE = ord("D")
F_EXECUTE = ord("E")
F_CLOSE = ord("C")
F_SYNC = ord("S")
F_FUNCTION_CALL = ord("F")
_ANSWERED = frozenset(
    (F_QUERY, F_PARSE, F_BIND, F_DESCRIBE, F_EXECUTE, F_CLOSE, F_SYNC, F_FUNCTION_CALL)
)
_ENDS_WITH_READY = frozenset((F_QUERY, F_SYNC, F_FUNCTION_CALL))

# Backend message types.
B_READY = ord("Z")
B_ERROR = ord("E")
B_PARAMETER_STATUS = ord("S")
B_DATA_ROW = ord("D")
_NEED_BODY = frozenset((B_READY, B_PARAMETER_STATUS))

# The backend message that completes each extended-protocol frontend message.
_COMPLETES: dict[int, frozenset[int]] = {
    F_PARSE: frozenset(b"1"),
    F_BIND: frozenset(b"2"),
    F_CLOSE: frozenset(b"3"),
    F_DESCRIBE: frozenset(b"Tn"),
    F_EXECUTE: frozenset(b"CIs"),
}
_NONE: frozenset[int] = frozenset()


class ResponseTracker:
    """Bookkeeping of one upstream connection in the relay phase (see module doc)."""

    __slots__ = (
        "_carry",
        "_expected",
        "_ignoring",
        "_skip",
        "executed",
        "parameters",
        "status",
    )

    def __init__(self, status: str = "I", parameters: dict[str, str] | None = None) -> None:
        self._expected: deque[int] = deque()
        self._ignoring = False
        self._skip = 0  # bytes of the current message still to come
        self._carry = b""  # the start of a message whose header or needed body is split
        self.status = status
        self.executed = False  # an Execute went upstream since the last ReadyForQuery
        self.parameters: dict[str, str] = parameters if parameters is not None else {}

    # -- state ------------------------------------------------------------------------

    @property
    def idle(self) -> bool:
        """True when every message sent upstream has been answered."""
        return not self._expected

    @property
    def pending(self) -> int:
        """How many sent messages still wait for their answer."""
        return len(self._expected)

    @property
    def ignoring_till_sync(self) -> bool:
        """True when the server discards messages until a Sync (after an error)."""
        return self._ignoring

    @property
    def at_boundary(self) -> bool:
        """True when the bytes fed so far end exactly at a message boundary."""
        return not self._skip and not self._carry

    # -- frontend side ----------------------------------------------------------------

    def sent(self, type_code: int) -> None:
        """A frontend message of this type (its first byte) went upstream."""
        if type_code not in _ANSWERED:
            return
        if type_code == F_EXECUTE:
            self.executed = True
        if self._ignoring:
            if type_code == F_SYNC:
                self._ignoring = False
                self._expected.append(type_code)
            return  # the server drops it unanswered
        self._expected.append(type_code)

    # -- backend side -----------------------------------------------------------------

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Read the next bytes the server sent (any chunking)."""
        n = len(data)
        pos = 0
        if self._carry:
            pos = self._complete_carry(data)
            if pos < 0:
                return
        elif self._skip:
            skip = self._skip
            if skip >= n:
                self._skip = skip - n
                return
            pos = skip
            self._skip = 0
        unpack = _I32.unpack_from
        expected = self._expected
        while pos + 5 <= n:
            type_code = data[pos]
            (length,) = unpack(data, pos + 1)
            end = pos + 1 + length
            if type_code == B_DATA_ROW and length >= 4:
                pos = end
                continue
            if length < 4 or (type_code == B_READY and length != 5):
                raise ProtocolViolation(f"invalid message length {length} from the server")
            if end > n and type_code in _NEED_BODY:
                self._carry = bytes(data[pos:])
                return
            if type_code == B_READY:
                self._ready(chr(data[pos + 5]))
            elif type_code == B_PARAMETER_STATUS:
                self._parameter_status(bytes(data[pos + 5 : end]))
            elif expected:
                self._answer(type_code)
            pos = end
        if pos < n:
            self._carry = bytes(data[pos:])
        elif pos > n:
            self._skip = pos - n

    def _complete_carry(self, data: bytes | bytearray | memoryview) -> int:
        """Finish the split message in ``_carry``; its end in ``data``, or -1 if not yet."""
        carry = self._carry
        have = len(carry)
        n = len(data)
        if have < 5:
            need = 5 - have
            if n < need:
                self._carry = carry + bytes(data)
                return -1
            carry = carry + bytes(data[:need])
            have = 5
            used = need
        else:
            used = 0
        type_code = carry[0]
        (length,) = _I32.unpack_from(carry, 1)
        if length < 4 or (type_code == B_READY and length != 5):
            raise ProtocolViolation(f"invalid message length {length} from the server")
        total = 1 + length
        if type_code in _NEED_BODY:
            need = total - have
            if n - used < need:
                self._carry = carry + bytes(data[used:])
                return -1
            whole = carry + bytes(data[used : used + need])
            self._carry = b""
            if type_code == B_READY:
                self._ready(chr(whole[5]))
            else:
                self._parameter_status(whole[5:])
            return used + need
        self._carry = b""
        if type_code != B_DATA_ROW and self._expected:
            self._answer(type_code)
        end = used + total - have
        if end > n:
            self._skip = end - n
            return -1
        return end

    def _ready(self, status: str) -> None:
        self.status = status
        self.executed = False
        self._ignoring = False
        expected = self._expected
        while expected:  # normally one entry: the Query, Sync or FunctionCall answered
            if expected.popleft() in _ENDS_WITH_READY:
                break

    def _answer(self, type_code: int) -> None:
        expected = self._expected
        head = expected[0]
        if type_code == B_ERROR:
            if head in _COMPLETES:  # extended protocol: everything up to Sync is dropped
                while expected and expected[0] != F_SYNC:
                    expected.popleft()
                if not expected:
                    self._ignoring = True
            return
        if type_code in _COMPLETES.get(head, _NONE):
            expected.popleft()

    def _parameter_status(self, body: bytes) -> None:
        name, _, rest = body.partition(b"\0")
        value = rest.split(b"\0", 1)[0]
        self.parameters[name.decode("utf-8", "replace")] = value.decode("utf-8", "replace")
