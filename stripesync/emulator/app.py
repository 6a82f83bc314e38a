"""The ASGI application: HTTP in, `Emulator.handle` (or a control) out, plus what needs
time or sockets: latency, injected failures (500, 503, 429, connection reset,
timeout) and body-size limits. Controls live under `/_emulator/` (JSON, no auth).

Webhook delivery (webhooks.py) runs on the app's event loop: it starts at lifespan
startup (or with the first request, under a server without lifespan) and stops at
lifespan shutdown."""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Awaitable, Callable
from email.utils import formatdate
from typing import Any

from stripesync.emulator.engine import Emulator, Request, Response
from stripesync.emulator.errors import StripeError

log = logging.getLogger("stripesync.emulator")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

_JSON = (b"content-type", b"application/json")
CONTROL_PREFIX = "/_emulator/"
MAX_CONTROL_BODY = 4 << 30


class _TooLarge(Exception):
    pass


class EmulatorApp:
    """`EmulatorApp(Emulator())` is an ASGI 3 application."""

    def __init__(self, emulator: Emulator | None = None) -> None:
        self.em = emulator or Emulator()
        self.rng = random.Random()
        from stripesync.emulator.control import Controls

        self.controls = Controls(self.em)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self._lifespan(receive, send)
            return
        if kind != "http":
            return
        if not self.em.webhooks.running:
            await self.em.webhooks.start()
        path: str = scope["path"]
        method: str = scope["method"]
        if path.startswith(CONTROL_PREFIX):
            try:
                body = await _read_body(receive, MAX_CONTROL_BODY)
            except _TooLarge:
                await self._send(send, 413, b'{"error":"too large"}', [])
                return
            status, payload = self.controls.handle(method, path, scope["query_string"], body)
            await self._send(send, status, payload, [])
            return
        em = self.em
        cfg = em.config
        if cfg.latency_ms or cfg.latency_jitter_ms:
            delay = cfg.latency_ms + self.rng.uniform(-cfg.latency_jitter_ms, cfg.latency_jitter_ms)
            if delay > 0:
                await asyncio.sleep(delay / 1000.0)
        fault = em.faults.check(method, path) if em.faults.rules else None
        if fault is not None:
            await self._fault(fault, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        try:
            body = await _read_body(receive, cfg.max_body_bytes)
        except _TooLarge:
            err = StripeError(
                413,
                f"Request body too large: the limit is {cfg.max_body_bytes} bytes.",
            )
            resp = Response(err.status, err.to_bytes(), [("request-id", em.ids.request_id())])
        else:
            resp = em.handle(Request(method, path, scope["query_string"], headers, body))
        await self._send(send, resp.status, resp.body, resp.headers)

    async def _send(
        self, send: Send, status: int, body: bytes, headers: list[tuple[str, str]]
    ) -> None:
        """A whole response, dated by the emulator's clock as Stripe dates by its own."""
        date = formatdate(self.em.clock.now(), usegmt=True)
        await _send(send, status, body, [*headers, ("date", date)])

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                await self.em.webhooks.start()
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await self.em.webhooks.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _fault(self, kind: str, receive: Receive, send: Send) -> None:
        em = self.em
        rid = em.ids.request_id()
        if kind in ("500", "503"):
            err = StripeError.api_error(int(kind))
            await self._send(send, err.status, err.to_bytes(), [("request-id", rid)])
        elif kind == "429":
            err = StripeError(
                429,
                "Request rate limit exceeded. Learn more about rate limits here "
                "https://stripe.com/docs/rate-limits.",
                code="rate_limit",
            )
            await self._send(send, 429, err.to_bytes(), [("request-id", rid)])
        elif kind == "reset":
            # headers promised a body that never comes: the server closes the connection
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [_JSON, (b"content-length", b"1000")],
                }
            )
            await send({"type": "http.response.body", "body": b"{", "more_body": True})
            # returning now leaves the response incomplete: the server drops the connection
        else:  # timeout: hold the request until the client gives up (or hang_seconds)
            try:
                await asyncio.wait_for(_until_disconnect(receive), em.config.hang_seconds)
            except TimeoutError:
                err = StripeError.api_error(503)
                await self._send(send, 503, err.to_bytes(), [("request-id", rid)])


async def _until_disconnect(receive: Receive) -> None:
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            return


async def _read_body(receive: Receive, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            break
        chunk = msg.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                raise _TooLarge
            chunks.append(chunk)
        if not msg.get("more_body"):
            break
    return b"".join(chunks) if len(chunks) != 1 else chunks[0]


async def _send(send: Send, status: int, body: bytes, headers: list[tuple[str, str]]) -> None:
    raw = [_JSON, (b"content-length", str(len(body)).encode())]
    raw.extend((k.encode("latin-1"), v.encode("latin-1")) for k, v in headers)
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


def json_bytes(obj: Any) -> bytes:
    return json.dumps(obj).encode()
