"""The seam between the relay and a write interceptor.

The relay passes every message through unchanged unless a :class:`WriteHandler` is
installed and claims a statement. A handler is asked, for each simple ``Query`` and
each ``Parse``, whether it ``claims`` the SQL text: a cheap, synchronous test (a
keyword scan, say) that must answer False for everything it will never take over, so
that reads stay on the fast path.

- A claimed simple **Query** is held back. Once the server has answered everything
  sent before it, :meth:`WriteHandler.handle_query` runs; the client's later messages
  wait meanwhile. Returning True means the handler answered the whole Query itself
  (its results, then ``ReadyForQuery``) through :meth:`ProxySession.send`; False
  forwards the Query unchanged. The Query is the client's whole string, which may hold
  several statements.
- A claimed **Parse** is held back too, until the server has answered everything
  before it: :meth:`WriteHandler.handle_parse` may refuse a statement that could never
  be written (True, after :meth:`ProxySession.reject`); False sends the Parse on.
  It and the Binds and Describes of its statement go to the server as usual (so it
  checks the SQL, and describes parameters and result columns). Each
  ``Execute`` of a portal bound to a claimed statement is held back; once the server
  has answered everything before it (the relay sends a ``Flush``),
  :meth:`WriteHandler.handle_execute` runs with the statement's ``Parse``, the portal's
  ``Bind`` and the ``Execute``. Returning True means it answered that Execute (rows,
  then ``CommandComplete``); the client's ``Sync`` still goes to the server, which
  answers ``ReadyForQuery``.

The handler is not asked while the server ignores messages until Sync (after an
extended-protocol error): the claimed message goes to the server, which drops it.
In a failed transaction (``transaction_status`` ``E``) a handler should return False:
the server then refuses the statement itself, as PostgreSQL does.

During a handler call the session is quiet: nothing is in flight upstream, so
:meth:`ProxySession.exchange` can run statements on the client's own server session
(inside its transaction) and read their answers, which do not reach the client.
To refuse the statement, :meth:`ProxySession.reject` sends the client an
``ErrorResponse`` and makes the server fail a statement of its own at that point, so
that the transaction (aborted), the rest of an extended-protocol batch (skipped up to
Sync) and the next ``ReadyForQuery`` are what PostgreSQL gives after an error.
A handler that raises ends its session (the client gets FATAL ``XX000``, the
traceback goes to the log); the other sessions go on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from stripesync.proxy.messages import (
    BackendMessage,
    Bind,
    ErrorResponse,
    Execute,
    FrontendMessage,
    Message,
    Parse,
    Query,
)

__all__ = ["ExtendedCall", "ProxySession", "WriteHandler"]


@dataclass(frozen=True, slots=True)
class ExtendedCall:
    """An Execute of a portal whose statement the handler claimed."""

    parse: Parse  # the statement: SQL text and declared parameter types
    bind: Bind  # the portal: parameter values and formats, result formats
    execute: Execute  # the portal name and the row limit (0: all)


class ProxySession(Protocol):
    """What a handler may do with the session it was called for."""

    @property
    def startup_parameters(self) -> Mapping[str, str]:
        """The client's StartupMessage parameters (user, database, application_name...)."""
        ...

    @property
    def server_parameters(self) -> Mapping[str, str]:
        """The server's ParameterStatus values (client_encoding, DateStyle, TimeZone...)."""
        ...

    @property
    def transaction_status(self) -> str:
        """The last ReadyForQuery status from the server: 'I', 'T' or 'E'.

        Inside an extended-protocol batch (before its Sync) it is the status before the
        batch: statements of the batch may have changed it since.
        """
        ...

    @property
    def executed_in_batch(self) -> bool:
        """True when the client's extended-protocol batch executed statements before the
        claimed message (since the last ReadyForQuery): ``transaction_status`` may be out
        of date, and the server may be inside the batch's implicit transaction."""
        ...

    @property
    def ignoring_till_sync(self) -> bool:
        """True when the server discards extended-protocol messages until Sync."""
        ...

    def send(self, *messages: Message) -> None:
        """Write messages to the client (their ``wire()`` bytes), in order."""
        ...

    def reply(self, *messages: Message) -> None:
        """Send the answer to the claimed statement, as PostgreSQL would send it.

        For an Execute with a row limit, the DataRows beyond it wait for the portal's
        next Executes (``PortalSuspended`` in between); like PostgreSQL with a
        ``RETURNING`` statement, the whole write is done before the first row goes.
        """
        ...

    async def exchange(self, *messages: FrontendMessage) -> list[BackendMessage]:
        """Send messages to the server and return its answers to them.

        Ends when every message is answered (a ``Flush`` is added when the last one
        is not a Sync or a Query). Notifications and ParameterStatus the server sends
        meanwhile still go to the client; everything else is returned, not relayed.
        Use named statements and portals of your own: the unnamed ones are the client's.
        """
        ...

    async def reject(self, error: ErrorResponse) -> None:
        """Answer the claimed statement with ``error``, the server failing along.

        For a Query the client gets ``error`` and ``ReadyForQuery`` (status ``E`` inside
        a transaction block, ``I`` outside); for a Parse or an Execute, ``error``, and the
        server skips the client's messages up to Sync. Return True from the handler after it.
        """
        ...


class WriteHandler(Protocol):
    """A write interceptor (see the module documentation for when each method runs)."""

    def claims(self, sql: str) -> bool:
        """Might this statement text be a write the handler takes over? Must be cheap."""
        ...

    async def handle_query(self, session: ProxySession, query: Query) -> bool:
        """Answer a claimed simple Query (through ReadyForQuery) or return False."""
        ...

    async def handle_execute(self, session: ProxySession, call: ExtendedCall) -> bool:
        """Answer a claimed Execute (up to CommandComplete or an error) or return False."""
        ...

    async def handle_parse(self, session: ProxySession, parse: Parse) -> bool:
        """Refuse a claimed Parse through ``session.reject`` (True) or return False."""
        ...
