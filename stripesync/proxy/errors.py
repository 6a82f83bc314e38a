"""Errors of the wire-protocol layer: each one carries a SQLSTATE.

A :class:`ProtocolViolation` is the only exception the parsers in
:mod:`stripesync.proxy.protocol` raise for bytes received from a peer, however
malformed or hostile. It converts to the ``ErrorResponse`` PostgreSQL itself would
send before closing the connection (severity ``FATAL``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from stripesync.proxy.messages import ErrorResponse

# SQLSTATE codes used by the protocol layer (PostgreSQL's errcodes.txt).
PROTOCOL_VIOLATION = "08P01"
FEATURE_NOT_SUPPORTED = "0A000"
CONNECTION_FAILURE = "08006"


class ProtocolViolation(Exception):
    """Bytes from a peer that break the PostgreSQL v3 protocol.

    ``sqlstate`` is the SQLSTATE PostgreSQL reports for the same fault (``08P01``
    protocol_violation, ``0A000`` for an unsupported protocol version); ``message``
    is the primary message, worded like PostgreSQL's where it has one.
    """

    sqlstate: str
    message: str
    severity: str

    def __init__(
        self, message: str, sqlstate: str = PROTOCOL_VIOLATION, *, severity: str = "FATAL"
    ) -> None:
        super().__init__(message)
        self.message = message
        self.sqlstate = sqlstate
        self.severity = severity

    def __str__(self) -> str:
        return f"{self.message} (SQLSTATE {self.sqlstate})"

    def __repr__(self) -> str:
        return f"ProtocolViolation({self.message!r}, {self.sqlstate!r})"

    def to_error_response(self) -> ErrorResponse:
        """The ErrorResponse to send to the peer before closing the connection."""
        from stripesync.proxy.messages import ErrorResponse

        return ErrorResponse.create(self.sqlstate, self.message, severity=self.severity)
