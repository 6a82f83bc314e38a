"""The proxy server: PostgreSQL v3 in front of PostgreSQL, relaying every session.

Each client connection is one :class:`_Session`, an asyncio protocol (callbacks, no
streams: the relay is the hot path) with one upstream connection of its own:

1. **Startup.** The client's startup packets are read with the codec's
   :class:`~stripesync.proxy.protocol.FrontendParser`. An SSLRequest is answered ``S``
   and the connection upgraded to TLS when a certificate is configured, ``N``
   otherwise; a GSSENCRequest is answered ``N``; a CancelRequest is matched against the
   keys this proxy handed out and forwarded to the upstream with the upstream's key.
2. **Authentication.** The proxy connects upstream (TLS per ``sslmode``), sends the
   client's StartupMessage unchanged and relays both ways, byte for byte, until the
   server's ReadyForQuery: trust, password, MD5 and SCRAM are the server's business,
   so the proxy grants nothing the server would not. Only BackendKeyData is replaced
   by a key of the proxy's own (the cancel map).
3. **Relay.** Client messages are framed (and checked) by the codec and forwarded in
   one write per read; each goes past the write handler's cheap ``claims`` test when
   one is installed (see :mod:`stripesync.proxy.hooks`). Server bytes are forwarded to
   the client as they arrive, whole chunks at a time, and a
   :class:`~stripesync.proxy.tracking.ResponseTracker` reads only their headers to
   know when the server has answered everything (the moment a handler may speak).

**Workers.** One proxy process relays at most what one core can: with ``workers`` > 1
several processes (see :mod:`stripesync.proxy.workers`) listen on the same port
(``SO_REUSEPORT``: the kernel spreads new connections over them), each a
:class:`ProxyServer` of its own. A cancel request reaches whichever worker the kernel
picks, so each issued key names its worker (``pid % workers``) and a worker hands a key
it does not own to its owner over the owner's Unix socket in ``peer_dir``, as
PgBouncer's peers do.

A client that breaks the protocol gets PostgreSQL's ErrorResponse (SQLSTATE 08P01)
at the next message boundary of the server's stream, and its session closes; the
server keeps serving the others. Passwords and startup packets are never logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import secrets
import ssl
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from stripesync.proxy.errors import CONNECTION_FAILURE, ProtocolViolation
from stripesync.proxy.hooks import ExtendedCall, WriteHandler
from stripesync.proxy.messages import (
    BackendKeyData,
    BackendMessage,
    Bind,
    CancelRequest,
    Close,
    DataRow,
    ErrorResponse,
    Execute,
    Flush,
    FrontendMessage,
    GSSENCRequest,
    Message,
    ParameterStatus,
    Parse,
    PasswordMessage,
    PortalSuspended,
    Query,
    ReadyForQuery,
    SSLRequest,
    StartupMessage,
    Terminate,
)
from stripesync.proxy.protocol import BackendParser, FrontendParser
from stripesync.proxy.tracking import ResponseTracker
from stripesync.proxy.upstream import UpstreamConfig, UpstreamError, open_upstream

__all__ = ["DEFAULT_LISTEN_HOST", "DEFAULT_LISTEN_PORT", "ProxyServer", "peer_socket"]

log = logging.getLogger("stripesync.proxy")

DEFAULT_LISTEN_HOST = "127.0.0.1"
DEFAULT_LISTEN_PORT = 6543
STARTUP_TIMEOUT_S = 60.0  # PostgreSQL's authentication_timeout
FATAL_FLUSH_TIMEOUT_S = 5.0  # how long an error waits for a message boundary
CANCEL_TIMEOUT_S = 5.0
INTERNAL_ERROR = "XX000"

_STARTUP, _CONNECTING, _AUTH, _RELAY, _CLOSED = range(5)

_FLUSH = Flush().encode()
_TERMINATE = Terminate().encode()

# Frontend type codes the relay looks at.
_Q, _P, _B, _E, _C, _X = (ord(c) for c in "QPBECX")
_HOOKED = frozenset((_Q, _P, _B, _E, _C))
# What reject() runs on the server to fail the statement there too.
_REJECT_SQL = "DO $$BEGIN RAISE EXCEPTION 'stripesync proxy: the write was refused'; END$$"
# Backend messages an exchange passes on to the client rather than returning.
_ASYNC_TYPES = frozenset((ord("A"), ord("S")))


class _Closed(ConnectionError):
    """The session ended while a step waited."""


def _internal_error() -> ErrorResponse:
    return ErrorResponse.create(
        INTERNAL_ERROR, "stripesync proxy: internal error in the write handler", severity="FATAL"
    )


def server_ssl_context(cert: str | Path, key: str | Path) -> ssl.SSLContext:
    """The TLS context the proxy offers its clients."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(cert), str(key))
    ctx.set_alpn_protocols(["postgresql"])
    return ctx


class ProxyServer:
    """Listens for PostgreSQL clients and relays each to the upstream database.

    ``upstream_url`` gives the upstream's address and TLS settings (see
    :mod:`stripesync.proxy.upstream`); ``listen_port=0`` picks a free port (read it
    from :attr:`port` after :meth:`start`). With ``tls_cert`` and ``tls_key`` an
    SSLRequest is answered with TLS. ``write_handler`` may take over claimed writes;
    without one every message passes through. ``worker`` of ``workers`` (with their
    shared ``peer_dir``) makes this server one of several on the same port (see the
    module doc).
    """

    def __init__(
        self,
        upstream_url: str,
        *,
        listen_host: str = DEFAULT_LISTEN_HOST,
        listen_port: int = DEFAULT_LISTEN_PORT,
        tls_cert: str | Path | None = None,
        tls_key: str | Path | None = None,
        write_handler: WriteHandler | None = None,
        startup_timeout: float = STARTUP_TIMEOUT_S,
        worker: int = 0,
        workers: int = 1,
        peer_dir: str | Path | None = None,
    ) -> None:
        if (tls_cert is None) != (tls_key is None):
            raise ValueError("a TLS certificate needs its key, and a key its certificate")
        if not 0 <= worker < workers:
            raise ValueError(f"worker {worker} of {workers} does not exist")
        if workers > 1 and peer_dir is None:
            raise ValueError("several workers need a peer directory for cancel requests")
        self.upstream = UpstreamConfig.from_url(upstream_url)
        self.listen_host = listen_host
        self.listen_port = listen_port
        self.write_handler = write_handler
        self.startup_timeout = startup_timeout
        self.tls: ssl.SSLContext | None = (
            server_ssl_context(tls_cert, tls_key)
            if tls_cert is not None and tls_key is not None
            else None
        )
        self.worker = worker
        self.workers = workers
        self.peer_dir = Path(peer_dir) if peer_dir is not None else None
        self._server: asyncio.Server | None = None
        self._peer_server: asyncio.Server | None = None
        self._sessions: set[_Session] = set()
        self._by_pid: dict[int, _Session] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    # -- lifecycle --------------------------------------------------------------------

    async def start(self) -> None:
        """Bind and start accepting clients."""
        if self._server is not None:
            raise RuntimeError("the proxy is already started")
        loop = asyncio.get_running_loop()
        if self.peer_dir is not None:
            self._peer_server = await loop.create_unix_server(
                lambda: _PeerCancel(self), peer_socket(self.peer_dir, self.worker)
            )
        self._server = await loop.create_server(
            lambda: _Session(self),
            self.listen_host,
            self.listen_port,
            reuse_address=True,
            reuse_port=self.workers > 1 or None,
        )
        log.info(
            "proxy listening on %s:%d, upstream %s", self.host, self.port, self.upstream.describe()
        )

    @property
    def port(self) -> int:
        """The port the proxy listens on (the one picked when started with 0)."""
        if self._server is None or not self._server.sockets:
            raise RuntimeError("the proxy is not started")
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def host(self) -> str:
        return self.listen_host

    @property
    def sessions(self) -> int:
        """How many client sessions are open."""
        return len(self._sessions)

    async def stop(self) -> None:
        """Stop accepting and close every session (their upstream connections too)."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        peer_server, self._peer_server = self._peer_server, None
        if peer_server is not None:
            peer_server.close()
        sessions = list(self._sessions)
        for session in sessions:
            session.close()
        for task in list(self._tasks):
            task.cancel()
        waits = [s.closed for s in sessions] + list(self._tasks)
        if waits:
            await asyncio.wait(waits, timeout=5)
        if server is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(server.wait_closed(), 5)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- sessions and cancel keys -----------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _issue_key(self, session: _Session, upstream: BackendKeyData) -> BackendKeyData:
        """Our own key for a session, standing for the upstream's (same secret length).

        Its pid names this worker: ``pid % workers == worker``.
        """
        workers = self.workers
        while True:
            pid = (secrets.randbelow(0x7FFFFFFE // workers - 1) + 1) * workers + self.worker
            if pid not in self._by_pid:
                break
        self._by_pid[pid] = session
        return BackendKeyData(pid, secrets.token_bytes(len(upstream.secret)))

    def _forget_key(self, pid: int) -> None:
        self._by_pid.pop(pid, None)

    def _cancel(
        self, request: CancelRequest, *, from_peer: bool = False
    ) -> asyncio.Task[None] | None:
        """Forward a client's cancel request to the upstream, with the upstream's key.

        A key another worker issued goes to that worker (once: never from a peer).
        """
        owner = request.pid % self.workers
        if owner != self.worker and not from_peer and self.peer_dir is not None:
            return self._spawn(self._send_to_peer(owner, request))
        session = self._by_pid.get(request.pid)
        if (
            session is None
            or session.proxy_key is None
            or session.upstream_key is None
            or not hmac.compare_digest(session.proxy_key.secret, request.secret)
        ):
            log.info("cancel request with an unknown key ignored")
            return None
        upstream = session.upstream_key
        return self._spawn(self._send_cancel(CancelRequest(upstream.pid, upstream.secret)))

    async def _send_cancel(self, request: CancelRequest) -> None:
        side = _CancelSide()
        try:
            transport = await open_upstream(self.upstream, side)
        except UpstreamError as exc:
            log.warning("could not forward a cancel request: %s", exc)
            return
        try:
            transport.write(request.encode())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(side.done, CANCEL_TIMEOUT_S)  # the server hangs up
        finally:
            transport.close()

    async def _send_to_peer(self, owner: int, request: CancelRequest) -> None:
        assert self.peer_dir is not None
        try:
            async with asyncio.timeout(CANCEL_TIMEOUT_S):
                reader, writer = await asyncio.open_unix_connection(
                    peer_socket(self.peer_dir, owner)
                )
                writer.write(request.encode())
                await reader.read()  # the owner hangs up once it has forwarded it
                writer.close()
        except (OSError, TimeoutError) as exc:
            log.warning("could not hand a cancel request to proxy worker %d: %s", owner, exc)


def _has_row(messages: deque[Message]) -> bool:
    return any(isinstance(m, DataRow) for m in messages)


def peer_socket(peer_dir: Path, worker: int) -> str:
    """The Unix socket on which ``worker`` takes cancel requests from its peers."""
    return str(peer_dir / f"worker-{worker}.sock")


class _PeerCancel(asyncio.Protocol):
    """A peer worker's connection: one CancelRequest for a key this worker issued."""

    def __init__(self, server: ProxyServer) -> None:
        self.server = server
        self.parser = FrontendParser()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        transport = self.transport
        assert transport is not None
        try:
            self.parser.feed(data)
            request = self.parser.next_message()
        except ProtocolViolation:
            transport.close()
            return
        if request is None:
            return  # not all of it yet
        if isinstance(request, CancelRequest):
            forwarding = self.server._cancel(request, from_peer=True)
            if forwarding is not None:
                forwarding.add_done_callback(lambda _: transport.close())
                return
        transport.close()


class _CancelSide(asyncio.Protocol):
    def __init__(self) -> None:
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(None)


class _UpstreamSide(asyncio.Protocol):
    """The upstream connection's callbacks, handed to its session."""

    def __init__(self, session: _Session) -> None:
        self.session = session
        # the hot path: the transport calls the session directly
        self.data_received = session._upstream_data  # type: ignore[method-assign]

    def data_received(self, data: bytes) -> None:
        self.session._upstream_data(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.session._upstream_lost(exc)

    def pause_writing(self) -> None:
        self.session._pause_client_reading("upstream-full")

    def resume_writing(self) -> None:
        self.session._resume_client_reading("upstream-full")


class _Session(asyncio.Protocol):
    """One client connection and its upstream connection (see the module doc)."""

    def __init__(self, server: ProxyServer) -> None:
        self.server = server
        self.handler = server.write_handler
        self.loop = asyncio.get_running_loop()
        self.closed: asyncio.Future[None] = self.loop.create_future()
        self._state = _STARTUP
        self._client: asyncio.Transport | None = None
        self._upstream: asyncio.Transport | None = None
        self._fparser = FrontendParser()
        self._bparser: BackendParser | None = None
        self._tracker = ResponseTracker()
        self._client_event = asyncio.Event()
        self._client_eof = False
        self._tls = False
        self._startup: StartupMessage | None = None
        self._startup_task: asyncio.Task[None] | None = None
        self._relay_started: asyncio.Future[None] = self.loop.create_future()
        self._backlog: deque[FrontendMessage] = deque()  # parsed, not yet relayed
        self._client_pauses: set[str] = set()
        self._upstream_pauses: set[str] = set()
        # the write handler's seam
        self._suspended = False
        self._in_handler = False
        self._answering: FrontendMessage | None = None  # the claimed Query or Execute
        self._executed_in_batch = False  # the client's batch ran Executes before it
        self._watch = False  # the upstream path must check _idle_waiter / _fatal
        self._idle_waiter: asyncio.Future[None] | None = None
        self._fatal: bytes | None = None
        self._fatal_timer: asyncio.TimerHandle | None = None
        # while a handler runs, the server's bytes are read whole messages at a time
        self._slow: BackendParser | None = None
        self._collected: list[BackendMessage] | None = None  # an exchange's answers
        self._exchange_done: asyncio.Future[None] | None = None
        self._statements: dict[str, Parse] = {}  # claimed prepared statements
        self._portals: dict[str, tuple[Parse, Bind]] = {}  # portals of those
        # rows of a handled Execute beyond its row limit, for the portal's next Executes
        self._held: dict[str, deque[Message]] = {}
        self.proxy_key: BackendKeyData | None = None
        self.upstream_key: BackendKeyData | None = None

    # -- ProxySession (what a write handler sees) -------------------------------------

    @property
    def startup_parameters(self) -> Mapping[str, str]:
        return self._startup.as_dict() if self._startup is not None else {}

    @property
    def server_parameters(self) -> Mapping[str, str]:
        return self._tracker.parameters

    @property
    def transaction_status(self) -> str:
        return self._tracker.status

    @property
    def executed_in_batch(self) -> bool:
        return self._executed_in_batch

    @property
    def ignoring_till_sync(self) -> bool:
        return self._tracker.ignoring_till_sync

    def send(self, *messages: Message) -> None:
        if self._state == _CLOSED or self._client is None:
            raise ConnectionError("the client connection is closed")
        self._client.write(b"".join(message.wire() for message in messages))

    def reply(self, *messages: Message) -> None:
        """The handler's answer to the claimed statement (see ProxySession.reply)."""
        answering = self._answering
        limit = answering.max_rows if isinstance(answering, Execute) else 0
        if limit > 0:
            rows = 0
            for i, message in enumerate(messages):
                if isinstance(message, DataRow):
                    rows += 1
                    if rows == limit:
                        rest = messages[i + 1 :]
                        if any(isinstance(m, DataRow) for m in rest):
                            assert isinstance(answering, Execute)
                            self.send(*messages[: i + 1], PortalSuspended())
                            self._held[answering.portal] = deque(rest)
                            return
                        break
        self.send(*messages)

    async def exchange(self, *messages: FrontendMessage) -> list[BackendMessage]:
        if not self._in_handler:
            raise RuntimeError("exchange() is for write handlers, during their call")
        if self._exchange_done is not None:
            raise RuntimeError("one exchange at a time")
        upstream = self._upstream
        if upstream is None or self._state != _RELAY:
            raise ConnectionError("the upstream connection is closed")
        wire = [message.wire() for message in messages]
        if not wire or wire[-1][:1] not in (b"S", b"Q"):
            wire.append(_FLUSH)
        tracker = self._tracker
        for raw in wire:
            tracker.sent(raw[0])
        if tracker.idle:  # nothing the server will answer (after an error, say)
            upstream.write(b"".join(wire))
            return []
        collected: list[BackendMessage] = []
        self._collected = collected
        done = self._exchange_done = self.loop.create_future()
        upstream.write(b"".join(wire))
        try:
            await done
        finally:
            self._exchange_done = None
            self._collected = None
        return collected

    async def reject(self, error: ErrorResponse) -> None:
        if not self._in_handler or self._answering is None:
            raise RuntimeError("reject() is for write handlers, during their call")
        if isinstance(self._answering, Query):
            await self.exchange(Query(_REJECT_SQL))
            self.send(error, ReadyForQuery(self._tracker.status))
        else:
            self._statements.pop("", None)  # replaced on the server
            self._portals.pop("", None)
            await self.exchange(Parse("", _REJECT_SQL), Bind(), Execute())
            self.send(error)

    # -- client callbacks -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        if self._client is not None:  # start_tls hands us the TLS transport
            return
        self._client = transport
        self.server._sessions.add(self)
        self._startup_task = self.loop.create_task(self._run_startup())

    def data_received(self, data: bytes) -> None:
        state = self._state
        if state == _RELAY:
            if self._fatal is not None:
                return  # the session is ending: the rest is not read
            self._fparser.feed(data)
            if not self._suspended:
                self._drain_client()
        elif state == _AUTH:
            self._fparser.feed(data)
            self._drain_auth_client()
        elif state != _CLOSED:
            self._fparser.feed(data)
            self._client_event.set()

    def eof_received(self) -> bool | None:
        self._client_eof = True
        self._client_event.set()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._client_eof = True
        self._client_event.set()
        self.close()

    def pause_writing(self) -> None:
        self._pause_upstream_reading("client-full")

    def resume_writing(self) -> None:
        self._resume_upstream_reading("client-full")

    # -- startup and authentication ---------------------------------------------------

    async def _run_startup(self) -> None:
        try:
            async with asyncio.timeout(self.server.startup_timeout):
                startup = await self._read_startup()
                if startup is None:
                    return
                await self._connect(startup)
                await self._relay_started
        except ProtocolViolation as exc:
            log.info("client broke the protocol during startup: %s", exc.message)
            self._fail(exc.to_error_response())
        except TimeoutError:
            self._fail(
                ErrorResponse.create(
                    CONNECTION_FAILURE, "canceling authentication due to timeout", severity="FATAL"
                )
            )
        except (ConnectionError, ssl.SSLError):
            self.close()
        except Exception:
            log.exception("proxy session failed during startup")
            self._fail(
                ErrorResponse.create(
                    INTERNAL_ERROR, "stripesync proxy: internal error", severity="FATAL"
                )
            )

    async def _next_client_message(self) -> FrontendMessage:
        while True:
            message = self._fparser.next_message()
            if message is not None:
                return message
            if self._client_eof or self._state == _CLOSED:
                raise _Closed
            self._client_event.clear()
            await self._client_event.wait()

    async def _read_startup(self) -> StartupMessage | None:
        while True:
            message = await self._next_client_message()
            client = self._client
            assert client is not None
            if isinstance(message, SSLRequest):
                tls = self.server.tls
                if tls is None or self._tls:
                    client.write(b"N")
                    continue
                self._fparser.start_encryption()
                client.write(b"S")
                self._tls = True
                upgraded = await self.loop.start_tls(client, self, tls, server_side=True)
                if upgraded is None:
                    raise _Closed
                self._client = upgraded
            elif isinstance(message, GSSENCRequest):
                client.write(b"N")
            elif isinstance(message, CancelRequest):
                forwarding = self.server._cancel(message)
                if forwarding is not None:  # close once it is delivered, as PostgreSQL does
                    await asyncio.wait([forwarding], timeout=CANCEL_TIMEOUT_S)
                self.close()
                return None
            elif isinstance(message, StartupMessage):
                return message
            else:  # the parser only yields startup packets here
                raise ProtocolViolation(f"unexpected {type(message).__name__} during startup")

    async def _connect(self, startup: StartupMessage) -> None:
        self._startup = startup
        self._state = _CONNECTING
        side = _UpstreamSide(self)
        try:
            upstream = await open_upstream(self.server.upstream, side)
        except UpstreamError as exc:
            log.warning("upstream unavailable: %s", exc)
            self._fail(
                ErrorResponse.create(
                    CONNECTION_FAILURE, f"stripesync proxy: {exc}", severity="FATAL"
                )
            )
            raise _Closed from None
        if self._state == _CLOSED:
            upstream.close()
            raise _Closed
        self._upstream = upstream
        self._bparser = BackendParser()
        self._state = _AUTH
        upstream.write(startup.raw or startup.encode())
        self._drain_auth_client()

    def _drain_auth_client(self) -> None:
        """Client messages before ReadyForQuery: passwords go up, the rest waits."""
        upstream = self._upstream
        try:
            for message in self._fparser:
                if isinstance(message, PasswordMessage | Terminate) and not self._backlog:
                    if upstream is not None:
                        upstream.write(message.raw)
                else:
                    self._backlog.append(message)
        except ProtocolViolation as exc:
            log.info("client broke the protocol during authentication: %s", exc.message)
            self._fail(exc.to_error_response())

    def _auth_upstream_data(self, data: bytes) -> None:
        parser = self._bparser
        client = self._client
        assert parser is not None and client is not None
        out: list[bytes] = []
        try:
            for message in parser.feed(data):
                if isinstance(message, BackendKeyData):
                    self.upstream_key = message
                    self.proxy_key = self.server._issue_key(self, message)
                    out.append(self.proxy_key.encode())
                    continue
                out.append(message.raw)
                if isinstance(message, ParameterStatus):
                    self._tracker.parameters[message.name] = message.value
                elif isinstance(message, ReadyForQuery):
                    client.write(b"".join(out))
                    self._start_relay(message.status, parser.take_pending())
                    return
        except ProtocolViolation as exc:
            log.warning("upstream broke the protocol during authentication: %s", exc.message)
            self._fail(
                ErrorResponse.create(
                    CONNECTION_FAILURE,
                    "stripesync proxy: invalid data from the server",
                    severity="FATAL",
                )
            )
            return
        if out:
            client.write(b"".join(out))

    def _start_relay(self, status: str, rest: bytes) -> None:
        self._bparser = None
        self._tracker.status = status
        self._state = _RELAY
        if not self._relay_started.done():
            self._relay_started.set_result(None)
        if rest:
            self._upstream_data(rest)
        self._drain_client()

    # -- relay: client to server ------------------------------------------------------

    def _drain_client(self) -> None:
        """Forward every complete client message, stopping at one a handler claims."""
        parser = self._fparser
        backlog = self._backlog
        tracker = self._tracker
        handler = self.handler
        out: list[bytes] = []
        try:
            while not self._suspended:
                if backlog:
                    message = backlog.popleft()
                else:
                    message = parser.next_message()
                    if message is None:
                        break
                raw = message.raw
                code = raw[0]
                if handler is not None and code in _HOOKED and self._hook(message, out):
                    return
                if code == _X:
                    out.append(raw)
                    break
                tracker.sent(code)
                out.append(raw)
        except ProtocolViolation as exc:
            self._write_upstream(out)
            log.info("client broke the protocol: %s", exc.message)
            self._abort(exc.to_error_response())
            return
        except Exception:  # a handler's claims() failed
            log.exception("the write handler failed")
            self._abort(_internal_error())
            return
        self._write_upstream(out)

    def _write_upstream(self, out: list[bytes]) -> None:
        if out and self._upstream is not None:
            self._upstream.write(out[0] if len(out) == 1 else b"".join(out))

    def _hook(self, message: FrontendMessage, out: list[bytes]) -> bool:
        """Track claimed statements; True when ``message`` was taken for a handler."""
        handler = self.handler
        assert handler is not None
        if isinstance(message, Query):
            self._statements.pop("", None)  # a simple Query drops the unnamed ones
            self._portals.pop("", None)
            if handler.claims(message.query):
                self._write_upstream(out)
                self._take(self._intercept_query(message))
                return True
        elif isinstance(message, Parse):
            self._statements.pop(message.name, None)
            if handler.claims(message.query):
                self._write_upstream(out)
                self._take(self._intercept_parse(message))
                return True
        elif isinstance(message, Bind):
            self._held.pop(message.portal, None)
            parse = self._statements.get(message.statement)
            if parse is not None:
                self._portals[message.portal] = (parse, message)
            else:
                self._portals.pop(message.portal, None)
        elif isinstance(message, Execute):
            held = self._held.get(message.portal)
            if held is not None:  # the rest of a handled Execute's rows
                self._write_upstream(out)
                self._take(self._intercept_held(message, held))
                return True
            claimed = self._portals.get(message.portal)
            if claimed is not None:
                self._write_upstream(out)
                self._take(self._intercept_execute(ExtendedCall(*claimed, message)))
                return True
        elif isinstance(message, Close):
            (self._statements if message.kind == "S" else self._portals).pop(message.name, None)
            if message.kind != "S":
                self._held.pop(message.name, None)
        return False

    def _take(self, coro: Coroutine[Any, Any, None]) -> None:
        """Hold the client's messages while a handler runs."""
        self._suspended = True
        self._pause_client_reading("handler")
        self.server._spawn(coro)

    async def _intercept_query(self, query: Query) -> None:
        async def run() -> bool:
            assert self.handler is not None
            return await self.handler.handle_query(self, query)

        await self._intercept(query, run)

    async def _intercept_held(self, execute: Execute, held: deque[Message]) -> None:
        async def run() -> bool:
            out: list[Message] = []
            limit = execute.max_rows
            rows = 0
            while held and not (limit > 0 and rows == limit and _has_row(held)):
                message = held.popleft()
                rows += isinstance(message, DataRow)
                out.append(message)
            if held:
                out.append(PortalSuspended())
            else:
                self._held.pop(execute.portal, None)
            self.send(*out)
            return True

        await self._intercept(execute, run)

    async def _intercept_parse(self, parse: Parse) -> None:
        async def run() -> bool:
            assert self.handler is not None
            if await self.handler.handle_parse(self, parse):
                return True  # refused: the server skips the batch up to Sync
            self._statements[parse.name] = parse
            return False

        await self._intercept(parse, run)

    async def _intercept_execute(self, call: ExtendedCall) -> None:
        async def run() -> bool:
            assert self.handler is not None
            return await self.handler.handle_execute(self, call)

        await self._intercept(call.execute, run)

    async def _intercept(
        self, message: FrontendMessage, run: Callable[[], Awaitable[bool]]
    ) -> None:
        try:
            await self._wait_idle()
            handled = False
            # while the server ignores messages until Sync it drops this one too: the
            # handler is not asked
            if not self._tracker.ignoring_till_sync:
                self._executed_in_batch = self._tracker.executed
                self._answering = message
                self._in_handler = True
                self._slow = BackendParser()
                try:
                    handled = await run()
                finally:
                    self._in_handler = False
                    self._answering = None
                    self._end_slow()
            if not handled:
                self._tracker.sent(message.raw[0])
                self._write_upstream([message.raw])
        except ConnectionError:
            self.close()
            return
        except Exception:
            log.exception("the write handler failed")
            self._fail(_internal_error())
            return
        if self._state != _RELAY:
            return
        self._suspended = False
        self._resume_client_reading("handler")
        self._drain_client()

    async def _wait_idle(self) -> None:
        """Until the server has answered everything sent (a Flush makes it say so)."""
        tracker = self._tracker
        if tracker.idle and tracker.at_boundary:
            return
        if self._state != _RELAY or self._upstream is None:
            raise _Closed
        if not tracker.idle:
            self._upstream.write(_FLUSH)
        waiter = self._idle_waiter = self.loop.create_future()
        self._watch = True
        await waiter

    # -- relay: server to client ------------------------------------------------------

    def _upstream_data(self, data: bytes) -> None:
        if self._state == _RELAY and self._slow is None:
            client = self._client
            assert client is not None
            client.write(data)
            try:
                self._tracker.feed(data)
            except ProtocolViolation as exc:
                log.warning("upstream broke the protocol: %s", exc.message)
                self.close()
                return
            if self._watch:
                self._check_watch()
        elif self._state == _RELAY:
            self._slow_data(data)
        elif self._state == _AUTH:
            self._auth_upstream_data(data)

    def _check_watch(self) -> None:
        tracker = self._tracker
        if not tracker.at_boundary:
            return
        if self._fatal is not None:
            self._finish_fatal()
            return
        waiter = self._idle_waiter
        if waiter is not None and tracker.idle:
            self._idle_waiter = None
            self._watch = False
            if not waiter.done():
                waiter.set_result(None)

    def _slow_data(self, data: bytes) -> None:
        """The server's bytes while a handler runs: whole messages only.

        The handler writes to the client too, so nothing may reach the client half
        sent; an exchange's answers are collected instead of relayed.
        """
        parser = self._slow
        client = self._client
        assert parser is not None and client is not None
        tracker = self._tracker
        try:
            for message in parser.feed(data):
                raw = message.raw
                tracker.feed(raw)
                collected = self._collected
                if collected is None or raw[0] in _ASYNC_TYPES:
                    client.write(raw)
                    continue
                collected.append(message)
                if tracker.idle:
                    self._collected = None
                    done = self._exchange_done
                    if done is not None and not done.done():
                        done.set_result(None)
        except ProtocolViolation as exc:
            log.warning("upstream broke the protocol: %s", exc.message)
            self.close()

    def _end_slow(self) -> None:
        """Back to whole chunks, once the handler is done."""
        parser, self._slow = self._slow, None
        if parser is not None and self._state == _RELAY:
            rest = parser.take_pending()
            if rest:
                self._upstream_data(rest)

    def _upstream_lost(self, exc: Exception | None) -> None:
        if self._state != _CLOSED:
            log.debug("upstream closed the connection")
        self.close()

    # -- flow control -----------------------------------------------------------------

    def _pause_client_reading(self, reason: str) -> None:
        if not self._client_pauses and self._client is not None:
            with contextlib.suppress(RuntimeError, AttributeError):
                self._client.pause_reading()
        self._client_pauses.add(reason)

    def _resume_client_reading(self, reason: str) -> None:
        if reason not in self._client_pauses:
            return
        self._client_pauses.discard(reason)
        if not self._client_pauses and self._client is not None and self._state != _CLOSED:
            with contextlib.suppress(RuntimeError, AttributeError):
                self._client.resume_reading()

    def _pause_upstream_reading(self, reason: str) -> None:
        if not self._upstream_pauses and self._upstream is not None:
            with contextlib.suppress(RuntimeError, AttributeError):
                self._upstream.pause_reading()
        self._upstream_pauses.add(reason)

    def _resume_upstream_reading(self, reason: str) -> None:
        if reason not in self._upstream_pauses:
            return
        self._upstream_pauses.discard(reason)
        if not self._upstream_pauses and self._upstream is not None and self._state != _CLOSED:
            with contextlib.suppress(RuntimeError, AttributeError):
                self._upstream.resume_reading()

    # -- errors and closing -----------------------------------------------------------

    def _abort(self, error: ErrorResponse) -> None:
        """Send ``error`` at the next message boundary of the server's stream, then close.

        Whatever the server is sending may have been forwarded in part: the error waits
        for the end of that message (at most FATAL_FLUSH_TIMEOUT_S).
        """
        self._pause_client_reading("fatal")
        self._fatal = error.encode()
        tracker = self._tracker
        if self._slow is None and tracker.at_boundary:
            self._finish_fatal()
            return
        self._watch = True
        self._fatal_timer = self.loop.call_later(FATAL_FLUSH_TIMEOUT_S, self.close)

    def _finish_fatal(self) -> None:
        fatal, self._fatal = self._fatal, None
        if fatal is not None and self._client is not None and self._state != _CLOSED:
            self._client.write(fatal)
        self.close()

    def _fail(self, error: ErrorResponse) -> None:
        """Send a FATAL error to the client (before the relay or between messages), close."""
        if self._client is not None and self._state != _CLOSED:
            with contextlib.suppress(RuntimeError):
                self._client.write(error.encode())
        self.close()

    def close(self) -> None:
        """End the session: both connections are closed (pending writes flushed first)."""
        if self._state == _CLOSED:
            return
        state, self._state = self._state, _CLOSED
        if self._fatal_timer is not None:
            self._fatal_timer.cancel()
        if self._upstream is not None:
            if state == _RELAY:
                with contextlib.suppress(RuntimeError):
                    self._upstream.write(_TERMINATE)
            self._upstream.close()
        if self._client is not None:
            self._client.close()
        if self.proxy_key is not None:
            self.server._forget_key(self.proxy_key.pid)
        self.server._sessions.discard(self)
        for future in (self._idle_waiter, self._exchange_done, self._relay_started):
            if future is not None and not future.done():
                future.set_exception(_Closed())
                future.exception()  # retrieved: nobody may be waiting
        self._client_event.set()
        task = self._startup_task
        if task is not None and not task.done() and task is not asyncio.current_task():
            task.cancel()
        if not self.closed.done():
            self.closed.set_result(None)
