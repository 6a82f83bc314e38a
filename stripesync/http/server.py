"""The HTTP server of `stripesync run`: /health, /metrics and the Stripe webhook receiver.

`create_app` builds the Starlette application from callbacks, so it knows nothing of how
the sync runs: `health()` says whether the process is healthy and why, `on_webhook(event)`
is called for every genuine delivery (the live sync polls at once; the events API stays
the source of order and truth). More pages (the status page at `/`) join the same app
through `routes`. `HttpServer` runs an app with uvicorn inside the running event loop.

Nothing secret is ever in a response: rejected webhooks get the reason, never the secret
or the expected signature; a failing health check reports its exception's type only.

With an ``auth_token`` every page but ``/health`` (for load balancers) and the webhook
receiver (signed by Stripe) asks for it: ``Authorization: Bearer TOKEN`` (Prometheus'
``authorization`` setting), or HTTP Basic with any user name and the token as password
(what a browser prompts for).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hmac
import ipaddress
import json
import logging
import socket
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from typing import Any

import uvicorn
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from stripesync.http.webhooks import DEFAULT_TOLERANCE, WebhookReceiver, WebhookRejected
from stripesync.obs.metrics import REGISTRY, WEBHOOKS

log = logging.getLogger("stripesync.http")

DEFAULT_LISTEN = "127.0.0.1:8484"
WEBHOOK_PATH = "/webhooks/stripe"
MAX_WEBHOOK_BODY = 2 * 1024 * 1024  # Stripe's events are far smaller

HealthCheck = Callable[[], Awaitable[tuple[bool, Mapping[str, Any]]]]
"""`async () -> (ok, details)`: details (JSON-able) say why not when not ok."""
WebhookCallback = Callable[[dict[str, Any]], Awaitable[None]]
"""`async (event) -> None`, called for every verified, first-seen delivery."""


def json_response(body: Any, status: int = 200) -> Response:
    text = json.dumps(body, default=str, separators=(",", ":"))
    return Response(text, status_code=status, media_type="application/json")


def create_app(
    *,
    health: HealthCheck,
    webhook_secrets: Sequence[str] = (),
    on_webhook: WebhookCallback | None = None,
    webhook_tolerance: int = DEFAULT_TOLERANCE,
    health_timeout: float = 5.0,
    registry: CollectorRegistry = REGISTRY,
    routes: Sequence[BaseRoute] = (),
    auth_token: str | None = None,
) -> ASGIApp:
    """The application: `GET /health`, `GET /metrics`, `POST /webhooks/stripe`, plus
    `routes` (the status page, later); with `auth_token`, wrapped in `TokenAuth`.

    Without `webhook_secrets` the webhook endpoint answers 404: an unsigned delivery can
    never be trusted. `app.state.webhooks` is the `WebhookReceiver` (or None).
    """
    receiver = (
        WebhookReceiver(webhook_secrets, tolerance=webhook_tolerance) if webhook_secrets else None
    )

    async def health_endpoint(request: Request) -> Response:
        try:
            async with asyncio.timeout(health_timeout):
                ok, details = await health()
        except TimeoutError:
            ok, details = False, {"error": f"health check timed out after {health_timeout:g} s"}
        except Exception as e:  # the reason without its text: it could carry a URL
            log.warning("health check failed: %s", type(e).__name__)
            ok, details = False, {"error": f"health check failed ({type(e).__name__})"}
        return json_response({**details, "ok": bool(ok)}, 200 if ok else 503)

    async def metrics_endpoint(request: Request) -> Response:
        encoder, content_type = choose_encoder(request.headers.get("accept", ""))
        return Response(encoder(registry), headers={"Content-Type": content_type})

    async def webhook_endpoint(request: Request) -> Response:
        if receiver is None:
            return json_response(
                {"error": {"message": "webhooks are not enabled: no signing secret configured"}},
                404,
            )
        try:
            payload = await _read_body(request, MAX_WEBHOOK_BODY)
            event = receiver.receive(payload, request.headers.get("stripe-signature"))
        except WebhookRejected as e:
            WEBHOOKS.labels(e.reason).inc()
            log.info("webhook rejected: %s", e)
            return json_response({"error": {"reason": e.reason, "message": e.message}}, 400)
        WEBHOOKS.labels("accepted").inc()
        if on_webhook is not None:
            try:
                await on_webhook(event)
            except Exception as e:
                log.warning("webhook callback failed: %s", type(e).__name__)
                return json_response({"error": {"message": "internal error"}}, 500)
        return json_response({"received": True})

    app = Starlette(
        routes=[
            Route("/health", health_endpoint, methods=["GET"]),
            Route("/metrics", metrics_endpoint, methods=["GET"]),
            Route(WEBHOOK_PATH, webhook_endpoint, methods=["POST"]),
            *routes,
        ]
    )
    app.state.webhooks = receiver
    return TokenAuth(app, auth_token) if auth_token else app


class TokenAuth:
    """Ask for the token on every path but `/health` and the webhook receiver."""

    OPEN = frozenset(("/health", WEBHOOK_PATH))

    def __init__(self, app: Starlette, token: str) -> None:
        self.app = app
        self.state = app.state
        self._token = token.encode()

    def authorized(self, header: str | None) -> bool:
        if not header:
            return False
        scheme, _, value = header.strip().partition(" ")
        value = value.strip()
        if scheme.lower() == "bearer":
            given = value.encode()
        elif scheme.lower() == "basic":
            try:
                decoded = base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                return False
            given = decoded.partition(b":")[2]
        else:
            return False
        return hmac.compare_digest(given, self._token)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.OPEN:
            await self.app(scope, receive, send)
            return
        header = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                header = value.decode("latin-1")
                break
        if self.authorized(header):
            await self.app(scope, receive, send)
            return
        response = json_response({"error": {"message": "authentication required"}}, 401)
        response.headers["WWW-Authenticate"] = 'Basic realm="stripesync", charset="UTF-8"'
        await response(scope, receive, send)


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise WebhookRejected("malformed", "body too large")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise WebhookRejected("malformed", "body too large")
        chunks.append(chunk)
    return b"".join(chunks)


# ---- serving ---------------------------------------------------------------------------------


def is_loopback(host: str | None) -> bool:
    """True for an address only this machine reaches (127.0.0.0/8, ::1, localhost)."""
    if host in (None, "localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_listen(value: str) -> tuple[str, int]:
    """`HOST:PORT` (`[::1]:8484` for IPv6) → (host, port)."""
    host, sep, port = value.strip().rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"expected HOST:PORT (such as {DEFAULT_LISTEN}), got {value!r}")
    return host, int(port)


class _EmbeddedServer(uvicorn.Server):
    """uvicorn inside someone else's loop: the application owns the signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class HttpServer:
    """Serve an ASGI app on `host:port` in the running event loop.

    >>> server = HttpServer(app, "127.0.0.1", 0)
    >>> await server.start()   # server.port is the bound port
    >>> await server.stop()
    """

    def __init__(self, app: ASGIApp, host: str = "127.0.0.1", port: int = 8484) -> None:
        self.app = app
        self.host = host
        self.port = port
        self._server: _EmbeddedServer | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def start(self) -> None:
        """Bind (OSError when the address is taken) and serve; returns once listening."""
        if self._task is not None:
            raise RuntimeError("the HTTP server is already running")
        sock = _bind(self.host, self.port)
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            lifespan="off",
            log_config=None,  # leave the application's logging alone
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=2,
        )
        server = _EmbeddedServer(config)
        self._server = server
        self._task = asyncio.create_task(server.serve(sockets=[sock]), name="stripesync-http")
        while not server.started:
            if self._task.done():
                sock.close()
                self._task.result()  # raise what stopped it
                raise RuntimeError("the HTTP server stopped while starting")
            await asyncio.sleep(0.005)

    async def stop(self) -> None:
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout=5)
        except TimeoutError:
            self._server.force_exit = True
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        finally:
            self._server = None
            self._task = None

    async def __aenter__(self) -> HttpServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((host, port))
        sock.listen(512)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock
