"""Webhook delivery, as Stripe does it: every event is POSTed to each enabled webhook
endpoint whose `enabled_events` name its type (or `*`), signed with the endpoint's
secret, and retried with backoff when the endpoint fails.

The engine is synchronous: `Emulator.emit` calls `Webhooks.offer`, which only appends
to a queue (and does nothing at all when no endpoint matches). Deliveries go out from
tasks on the event loop that serves the ASGI app (`start()` binds it: the app's
lifespan startup, or its first request; `stop()` at lifespan shutdown), one ordered
lane per endpoint, so a slow or failing endpoint never holds up the API requests nor
the other endpoints. A failed attempt (non-2xx, connection error, timeout) is retried
outside its lane after `webhook_retry_seconds`, doubling up to
`webhook_retry_max_seconds`, until `webhook_max_attempts` attempts were made.

Each attempt carries `Stripe-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "{t}.{body}">`
with the wall clock's `t` (receivers check it against their own clock, so the
emulator's movable clock would make it stale), and the body is the event as
`GET /v1/events/{id}` returns it. A 2xx decrements the event's `pending_webhooks`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx

    from stripesync.emulator.engine import Emulator
    from stripesync.emulator.store import Record

log = logging.getLogger("stripesync.emulator.webhooks")

USER_AGENT = "Stripe/1.0 (+https://stripe.com/docs/webhooks)"
CONTENT_TYPE = "application/json; charset=utf-8"
LANE_LIMIT = 100_000  # queued deliveries per endpoint; beyond it they are dropped
BACKLOG_LIMIT = 100_000  # offered before a loop was bound (in-process use)
_PENDING = b'"pending_webhooks":'
COUNTERS = ("attempted", "delivered", "failed", "retried", "abandoned", "dropped")


@dataclass(slots=True)
class Delivery:
    """One event for one endpoint, across its attempts."""

    event_id: str
    endpoint_id: str
    generation: int
    attempts: int = 0


def signature_header(secret: str, body: bytes, timestamp: int) -> str:
    """Stripe's `Stripe-Signature` value for `body` signed at `timestamp`."""
    mac = hmac.new(secret.encode(), b"%d." % timestamp + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def matches(endpoint: dict[str, Any], event_type: str) -> bool:
    """Whether an endpoint receives events of this type (enabled, and `*` or named)."""
    if endpoint.get("status") != "enabled":
        return False
    wanted = endpoint.get("enabled_events") or ()
    return "*" in wanted or event_type in wanted


class Webhooks:
    """The delivery queue and its workers for one `Emulator` (`em.webhooks`)."""

    def __init__(self, em: Emulator) -> None:
        self.em = em
        self.generation = 0  # bumped by reset(): older deliveries are dropped
        self.counts: dict[str, int] = dict.fromkeys(COUNTERS, 0)
        self.last_error: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._client: asyncio.Task[httpx.AsyncClient] | None = None
        self._lanes: dict[str, tuple[asyncio.Queue[Delivery], asyncio.Task[None]]] = {}
        self._retries: set[asyncio.Task[None]] = set()
        self._timers: dict[int, tuple[asyncio.TimerHandle, Delivery]] = {}
        self._in_flight = 0
        self._backlog: deque[Delivery] = deque()

    # ---- the engine's side (synchronous, any thread) ---------------------------------

    @property
    def running(self) -> bool:
        return self._loop is not None

    def offer(self, event: Record, endpoints: Sequence[Record]) -> None:
        """Queue `event` for each of `endpoints` (already matched); never blocks."""
        gen = self.generation
        batch = [Delivery(event.id, ep.id, gen) for ep in endpoints]
        loop = self._loop
        if loop is not None:
            if threading.get_ident() == self._loop_thread:
                self._enqueue(batch)
                return
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(self._enqueue, batch)
                return
        room = BACKLOG_LIMIT - len(self._backlog)
        self._backlog.extend(batch[: max(room, 0)])
        if len(batch) > room:
            self.counts["dropped"] += len(batch) - max(room, 0)

    def reset(self) -> None:
        """Forget queued deliveries, scheduled retries and the counts."""
        self.generation += 1
        self.counts = dict.fromkeys(COUNTERS, 0)
        self.last_error = None
        self._backlog.clear()
        loop = self._loop
        if loop is None:
            return
        if threading.get_ident() == self._loop_thread:
            self._cancel_all()
        else:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._cancel_all)

    def stats(self) -> dict[str, Any]:
        pending = (
            len(self._backlog)
            + sum(q.qsize() for q, _ in self._lanes.values())
            + len(self._timers)
            + self._in_flight  # lanes' current attempts
            + len(self._retries)
        )
        return {
            "enabled": bool(self.em.config.webhooks),
            "running": self.running,
            **self.counts,
            "pending": pending,
            "last_error": self.last_error,
        }

    # ---- the loop's side -------------------------------------------------------------

    async def start(self) -> None:
        """Deliver from the running loop (idempotent)."""
        loop = asyncio.get_running_loop()
        if self._loop is loop:
            return
        self._loop = loop
        self._loop_thread = threading.get_ident()
        # building the client's TLS context takes ~30-60 ms: off the loop, at once, so
        # that neither the start nor the first delivery pays for it
        self._client = loop.create_task(asyncio.to_thread(_new_client))
        if self._backlog:
            batch = list(self._backlog)
            self._backlog.clear()
            self._enqueue(batch)

    async def stop(self) -> None:
        """Cancel every lane, retry and timer; close the HTTP client."""
        if self._loop is None:
            return
        tasks = self._cancel_all()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        client, self._client = self._client, None
        if client is not None:
            if client.done() and not client.cancelled() and client.exception() is None:
                await client.result().aclose()
            else:
                client.cancel()
        self._loop = None
        self._loop_thread = None

    def _cancel_all(self) -> list[asyncio.Task[None]]:
        tasks = [task for _, task in self._lanes.values()] + list(self._retries)
        for task in tasks:
            task.cancel()
        for handle, _ in self._timers.values():
            handle.cancel()
        self._lanes.clear()
        self._retries.clear()
        self._timers.clear()
        return tasks

    def _enqueue(self, batch: list[Delivery]) -> None:
        loop = self._loop
        if loop is None:  # stopped in between: keep them for the next start
            self._backlog.extend(batch)
            return
        for d in batch:
            if d.generation != self.generation:
                continue
            lane = self._lanes.get(d.endpoint_id)
            if lane is None:
                q: asyncio.Queue[Delivery] = asyncio.Queue(LANE_LIMIT)
                task = loop.create_task(self._run_lane(q), name=f"webhooks:{d.endpoint_id}")
                lane = self._lanes[d.endpoint_id] = (q, task)
            try:
                lane[0].put_nowait(d)
            except asyncio.QueueFull:
                self.counts["dropped"] += 1

    async def _run_lane(self, q: asyncio.Queue[Delivery]) -> None:
        while True:
            d = await q.get()
            self._in_flight += 1
            try:
                await self._attempt(d)
            finally:
                self._in_flight -= 1

    def _schedule_retry(self, d: Delivery) -> None:
        cfg = self.em.config
        base = max(float(cfg.webhook_retry_seconds), 0.0)
        cap = max(float(cfg.webhook_retry_max_seconds), base)
        delay = min(base * 2 ** (d.attempts - 1), cap)
        assert self._loop is not None
        key = id(d)
        handle = self._loop.call_later(delay, self._retry_now, key)
        self._timers[key] = (handle, d)
        self.counts["retried"] += 1

    def _retry_now(self, key: int) -> None:
        entry = self._timers.pop(key, None)
        if entry is None or self._loop is None:
            return
        task = self._loop.create_task(self._attempt(entry[1]))
        self._retries.add(task)
        task.add_done_callback(self._retries.discard)

    async def _attempt(self, d: Delivery) -> None:
        """One attempt; never raises (but for cancellation)."""
        em = self.em
        cfg = em.config
        endpoint = em.store.get("webhook_endpoint", d.endpoint_id)
        event = em.store.get("event", d.event_id)
        if (
            d.generation != self.generation
            or not cfg.webhooks
            or endpoint is None
            or event is None
            or endpoint.obj.get("status") != "enabled"
        ):
            if d.generation == self.generation:
                self.counts["dropped"] += 1
            return
        url = str(endpoint.obj.get("url") or "")
        secret = str(endpoint.obj.get("secret") or "")
        body = event.to_bytes()
        headers = {
            "Content-Type": CONTENT_TYPE,
            "User-Agent": USER_AGENT,
            "Accept": "*/*; q=0.5, application/xml",
            "Cache-Control": "no-cache",
            "Stripe-Signature": signature_header(secret, body, int(time.time())),
        }
        d.attempts += 1
        self.counts["attempted"] += 1
        error: str | None = None
        try:
            assert self._client is not None
            client = await asyncio.shield(self._client)
            r = await client.post(
                url, content=body, headers=headers, timeout=float(cfg.webhook_timeout_seconds)
            )
            if not 200 <= r.status_code < 300:
                error = f"HTTP {r.status_code}"
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # connection refused, timeout, a bad URL
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        if d.generation != self.generation:
            return  # reset while in flight
        if error is None:
            self.counts["delivered"] += 1
            self._delivered(d.event_id)
            return
        self.counts["failed"] += 1
        self.last_error = f"{d.endpoint_id} {d.event_id} attempt {d.attempts}: {error}"
        log.debug("webhook %s", self.last_error)
        if d.attempts >= max(int(cfg.webhook_max_attempts), 1):
            self.counts["abandoned"] += 1
        else:
            self._schedule_retry(d)

    def _delivered(self, event_id: str) -> None:
        """One endpoint fewer to deliver to: `pending_webhooks` - 1, in the event's bytes
        (events stay unparsed in memory; the top-level field is the last one, after
        `data`, and a nested object has no integer field of that name)."""
        event = self.em.store.get("event", event_id)
        if event is None:
            return
        raw = event.to_bytes()
        at = raw.rfind(_PENDING)
        if at < 0:
            return
        start = at + len(_PENDING)
        end = start
        while end < len(raw) and 48 <= raw[end] <= 57:  # digits
            end += 1
        if end > start and int(raw[start:end]) > 0:
            event.replace_bytes(b"%s%d%s" % (raw[:start], int(raw[start:end]) - 1, raw[end:]))


def _new_client() -> httpx.AsyncClient:
    import httpx

    # trust_env=False: a proxy from the environment must not see local receivers
    return httpx.AsyncClient(
        trust_env=False,
        follow_redirects=False,
        limits=httpx.Limits(max_connections=200, max_keepalive_connections=50),
    )
