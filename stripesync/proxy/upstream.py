"""Where the proxy's upstream PostgreSQL is, and how a connection to it is opened.

The proxy takes from the database URL only the address and the TLS settings: each
session relays its client's own StartupMessage and authentication, so the URL's user,
password and database are not used for relayed sessions (and never logged).

TLS follows libpq's ``sslmode``: ``disable`` and ``allow`` never ask for it (``allow``
would only fall back to TLS when the server demands it, which a relayed session cannot
tell apart from a refused login); ``prefer`` (the default) asks and goes on in plain
text when the server answers ``N``; ``require`` insists; ``verify-ca`` checks the
chain against ``sslrootcert`` (default ``~/.postgresql/root.crt``, ``system`` for the
system's CAs) and ``verify-full`` the host name too. ``require`` with an explicit
``sslrootcert`` verifies the chain, as libpq does. ``sslcert``/``sslkey`` give the
proxy a client certificate. A Unix-socket host never uses TLS.
"""

from __future__ import annotations

import asyncio
import os
import ssl
from dataclasses import dataclass
from pathlib import Path

from psycopg.conninfo import conninfo_to_dict

from stripesync.proxy.messages import SSLRequest

__all__ = ["SSLMODES", "UpstreamConfig", "UpstreamError", "open_upstream"]

SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
DEFAULT_PORT = 5432
DEFAULT_CONNECT_TIMEOUT = 10.0


class UpstreamError(Exception):
    """The upstream database cannot be reached or refused TLS (one line, no secrets)."""


@dataclass(frozen=True, slots=True)
class UpstreamConfig:
    """The upstream's address and TLS settings, from a PostgreSQL URL or conninfo."""

    host: str = "localhost"  # a host name or IP, or a Unix socket directory
    port: int = DEFAULT_PORT
    hostaddr: str | None = None  # connect here; ``host`` stays the TLS name
    sslmode: str = "prefer"
    sslrootcert: str | None = None
    sslcert: str | None = None
    sslkey: str | None = None
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT

    @classmethod
    def from_url(cls, url: str) -> UpstreamConfig:
        """Parse a ``postgresql://`` URL or a ``key=value`` conninfo string.

        With several hosts (``host=a,b``) the first is used.
        """
        try:
            params = conninfo_to_dict(url)
        except Exception:  # psycopg's message may quote the URL, password and all
            raise UpstreamError("invalid database URL") from None
        host = _first(params.get("host")) or "localhost"
        port_text = _first(params.get("port")) or str(DEFAULT_PORT)
        try:
            port = int(port_text)
        except ValueError:
            raise UpstreamError(f"invalid port in the database URL: {port_text!r}") from None
        if not 0 < port < 65536:
            raise UpstreamError(f"invalid port in the database URL: {port}")
        sslmode = str(params.get("sslmode") or "prefer")
        if sslmode not in SSLMODES:
            raise UpstreamError(f"invalid sslmode in the database URL: {sslmode!r}")
        timeout_text = str(params.get("connect_timeout") or "")
        try:
            timeout = float(timeout_text) if timeout_text else DEFAULT_CONNECT_TIMEOUT
        except ValueError:
            raise UpstreamError(f"invalid connect_timeout: {timeout_text!r}") from None
        return cls(
            host=host,
            port=port,
            hostaddr=_first(params.get("hostaddr")),
            sslmode=sslmode,
            sslrootcert=_opt(params.get("sslrootcert")),
            sslcert=_opt(params.get("sslcert")),
            sslkey=_opt(params.get("sslkey")),
            connect_timeout=timeout if timeout > 0 else DEFAULT_CONNECT_TIMEOUT,
        )

    @property
    def unix_path(self) -> str | None:
        """The socket file when the host is a Unix socket directory."""
        if self.hostaddr is None and self.host.startswith("/"):
            return f"{self.host.rstrip('/') or '/'}/.s.PGSQL.{self.port}"
        return None

    @property
    def uses_tls(self) -> bool:
        """Whether the proxy asks the upstream for TLS at all."""
        return self.unix_path is None and self.sslmode not in ("disable", "allow")

    def describe(self) -> str:
        """Where the upstream is, for messages and logs (no credentials)."""
        path = self.unix_path
        if path is not None:
            return path
        host = self.hostaddr or self.host
        return f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"

    def ssl_context(self) -> ssl.SSLContext:
        """The client-side TLS context for this sslmode."""
        verify = self.sslmode in ("verify-ca", "verify-full") or (
            self.sslmode == "require" and self.sslrootcert is not None
        )
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if verify:
            root = self.sslrootcert or str(Path("~/.postgresql/root.crt").expanduser())
            try:
                if root == "system":
                    ctx.load_default_certs()
                else:
                    ctx.load_verify_locations(cafile=root)
            except (OSError, ssl.SSLError) as exc:
                raise UpstreamError(f"cannot load the root certificate {root}: {exc}") from None
            ctx.check_hostname = self.sslmode == "verify-full"
            ctx.verify_mode = ssl.CERT_REQUIRED
        else:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if self.sslcert:
            try:
                ctx.load_cert_chain(self.sslcert, self.sslkey)
            except (OSError, ssl.SSLError) as exc:
                raise UpstreamError(f"cannot load the client certificate: {exc}") from None
        ctx.set_alpn_protocols(["postgresql"])
        return ctx


def _first(value: object) -> str | None:
    if value is None or value == "":
        return None
    return str(value).split(",", 1)[0] or None


def _opt(value: object) -> str | None:
    return None if value is None or value == "" else os.path.expanduser(str(value))


class _Negotiator(asyncio.Protocol):
    """Holds a fresh connection while the proxy asks it for TLS."""

    def __init__(self) -> None:
        self.answer: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self.extra = b""

    def data_received(self, data: bytes) -> None:
        if not self.answer.done():
            self.answer.set_result(data[:1])
            self.extra = data[1:]
        else:
            self.extra += data

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.answer.done():
            self.answer.set_exception(
                UpstreamError("the server closed the connection during TLS negotiation")
            )


async def open_upstream(config: UpstreamConfig, protocol: asyncio.Protocol) -> asyncio.Transport:
    """Connect to the upstream (TCP or Unix socket), negotiate TLS per ``sslmode``, and
    hand the connection to ``protocol`` (its ``connection_made`` is called).

    Raises :class:`UpstreamError` on failure, with a one-line reason.
    """
    loop = asyncio.get_running_loop()
    negotiator = _Negotiator()
    where = config.describe()
    transport: asyncio.BaseTransport | None = None
    try:
        context = config.ssl_context() if config.uses_tls else None
        async with asyncio.timeout(config.connect_timeout):
            path = config.unix_path
            if path is not None:
                transport, _ = await loop.create_unix_connection(lambda: negotiator, path)
            else:
                transport, _ = await loop.create_connection(
                    lambda: negotiator, config.hostaddr or config.host, config.port
                )
            if context is not None:
                assert isinstance(transport, asyncio.Transport)
                transport.write(SSLRequest().encode())
                answer = await negotiator.answer
                if answer == b"S":
                    if negotiator.extra:
                        raise UpstreamError("received unencrypted data after SSL response")
                    transport = await loop.start_tls(
                        transport,
                        negotiator,
                        context,
                        server_hostname=config.host if context.check_hostname else None,
                    )
                elif answer == b"N":
                    if config.sslmode != "prefer":
                        raise UpstreamError(
                            f"the server at {where} does not support SSL, but SSL was required"
                        )
                else:
                    raise UpstreamError(
                        f"the server at {where} answered the SSL request with {answer!r}"
                    )
    except BaseException as exc:
        if transport is not None:
            transport.close()
        if isinstance(exc, UpstreamError):
            raise
        if isinstance(exc, TimeoutError):
            raise UpstreamError(f"timeout connecting to {where}") from None
        if isinstance(exc, ssl.SSLError):
            raise UpstreamError(f"TLS with {where} failed: {exc.reason or exc}") from None
        if isinstance(exc, OSError):
            raise UpstreamError(f"cannot connect to {where}: {exc.strerror or exc}") from None
        raise
    assert isinstance(transport, asyncio.Transport)
    transport.set_protocol(protocol)
    protocol.connection_made(transport)
    return transport
