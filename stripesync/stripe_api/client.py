"""An async Stripe client on the official SDK: pinned Stripe-Version, one rate limiter
per process, retries with backoff and jitter, idempotency keys, plain-dict results.

Requests go through the SDK's requestor (the path of `StripeClient.raw_request_async`), so
authentication, encoding of parameters, the HTTP layer and error classes are the SDK's
own; the SDK's retries are off because this module retries itself, within the rate
limiter. Successful bodies are decoded with orjson (see `_send`).
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
import uuid
from collections import Counter
from collections.abc import Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

import orjson
import stripe

from stripesync.obs.metrics import endpoint_template, record_stripe_request
from stripesync.obs.redact import redact
from stripesync.stripe_api.clock import StripeClock
from stripesync.stripe_api.ratelimit import RateLimiter

log = logging.getLogger("stripesync.stripe")

PINNED_VERSION: str = stripe.api_version
STRIPE_API_BASE = "https://api.stripe.com"


def key_mode(api_key: str) -> str:
    """'live', 'test' or 'unknown' for a Stripe secret or restricted key."""
    m = re.match(r"^[sr]k_(live|test)_", api_key)
    return m.group(1) if m else "unknown"


def default_max_rps(api_key: str) -> float:
    """Leave the user headroom: Stripe allows 100 req/s live and 25 in test mode."""
    return 50.0 if key_mode(api_key) == "live" else 20.0


@dataclass(slots=True)
class StripeApiError(Exception):
    """Stripe refused a request (or could not be reached after the retries)."""

    status: int  # HTTP status; 0 when Stripe could not be reached
    message: str
    type: str | None = None
    code: str | None = None
    param: str | None = None
    request_id: str | None = None
    method: str = ""
    path: str = ""

    def __post_init__(self) -> None:
        self.message = redact(self.message)

    def __str__(self) -> str:
        where = f"{self.method} {self.path}: " if self.path else ""
        bits = [f"{where}{self.message}"]
        if self.status:
            bits.append(f"(HTTP {self.status}")
            extra = ", ".join(
                f"{k} {v}"
                for k, v in (
                    ("code", self.code),
                    ("param", self.param),
                    ("request", self.request_id),
                )
                if v
            )
            bits[-1] += f", {extra})" if extra else ")"
        return " ".join(bits)

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def permission(self) -> bool:
        return self.status == 403

    @property
    def authentication(self) -> bool:
        return self.status == 401


@dataclass(slots=True)
class ApiStats:
    requests: Counter[tuple[str, int]] = field(default_factory=Counter)  # (endpoint, status)
    retries: int = 0
    rate_limited: int = 0  # 429s received

    def record(self, path: str, status: int, method: str = "GET") -> None:
        self.requests[(_endpoint(path), status)] += 1
        record_stripe_request(method, path, status)


def _endpoint(path: str) -> str:
    """/v1/customers/cus_123/tax_ids -> /v1/customers/{id}/tax_ids (bounded label set)."""
    return endpoint_template(path)


class StripeApi:
    """One account's API, shared by every task of the process."""

    def __init__(
        self,
        api_key: str,
        *,
        api_base: str | None = None,
        max_rps: float | None = None,
        max_retries: int = 8,
        stripe_version: str = PINNED_VERSION,
        limiter: RateLimiter | None = None,
        timeout: float = 80.0,
    ) -> None:
        if not api_key:
            raise ValueError("no Stripe API key given (--api-key or STRIPE_API_KEY)")
        self.api_base = (api_base or STRIPE_API_BASE).rstrip("/")
        self.stripe_version = stripe_version
        self.max_retries = max_retries
        self.limiter = limiter or RateLimiter(max_rps or default_max_rps(api_key))
        self.stats = ApiStats()
        self.latency: float | None = None  # seconds per answer, smoothed over the latest
        self.clock = StripeClock()  # Stripe's time, for dating the copies fetched
        self.mode = key_mode(api_key)
        self._http = stripe.HTTPXClient(timeout=timeout)
        self._client = stripe.StripeClient(
            api_key,
            base_addresses={"api": self.api_base},
            http_client=self._http,
            max_network_retries=0,
            stripe_version=stripe_version,
        )

    async def close(self) -> None:
        await self._http.close_async()

    async def __aenter__(self) -> StripeApi:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def request(
        self,
        method: str,
        path: str,
        params: Mapping[str, Any] | None = None,
        *,
        stripe_version: str | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """One API call, retried on 429, 5xx and network errors; returns the JSON body."""
        method = method.lower()
        params = dict(params or {})
        if method == "post" and idempotency_key is None:
            idempotency_key = f"stripesync-{uuid.uuid4()}"
        options: dict[str, Any] = {}
        if stripe_version and stripe_version != self.stripe_version:
            options["stripe_version"] = stripe_version
        if idempotency_key:
            options["idempotency_key"] = idempotency_key
        attempt = 0
        while True:
            await self.limiter.acquire()
            try:
                status, data = await self._send(method, path, params, options)
            except stripe.StripeError as e:
                status = int(e.http_status or 0)
                self.stats.record(path, status, method)
                if status == 429:
                    self.stats.rate_limited += 1
                    self.limiter.penalize()
                retryable = status == 429 or status >= 500 or status == 0
                if isinstance(e, stripe.APIConnectionError):
                    retryable = True
                if e.headers and e.headers.get("stripe-should-retry") == "false":
                    retryable = False
                if retryable and attempt < self.max_retries:
                    attempt += 1
                    self.stats.retries += 1
                    delay = _backoff(attempt, status)
                    log.info(
                        "retrying %s %s in %.1f s after %s (attempt %d of %d)",
                        method.upper(),
                        endpoint_template(path),
                        delay,
                        status or type(e).__name__,
                        attempt,
                        self.max_retries,
                    )
                    await asyncio.sleep(delay)
                    continue
                raise _api_error(e, method, path) from None
            self.stats.record(path, status, method)
            if not isinstance(data, dict):
                raise StripeApiError(
                    status,
                    "response is not a JSON object",
                    method=method.upper(),
                    path=path,
                )
            return data

    async def _send(
        self, method: str, path: str, params: dict[str, Any], options: dict[str, Any]
    ) -> tuple[int, Any]:
        """One request through the SDK's requestor (authentication, encoding, HTTP).

        A success is decoded here with orjson: the SDK decodes every body into
        OrderedDicts, which was 40% of the backfill's CPU time. Errors go through the
        SDK's own interpretation, so they raise its exception classes."""
        requestor = self._client._requestor
        sent = time.time()
        body, status, headers = await requestor.request_raw_async(
            method,
            path,
            params=params,
            options=options,  # type: ignore[arg-type]
            base_address="api",
            api_mode="V1",
            usage=["raw_request"],
        )
        answered = time.time()
        self.clock.observe(headers.get("date") or headers.get("Date"), sent, answered)
        # how long Stripe takes to answer, smoothed: how many requests to keep in flight
        took = answered - sent
        self.latency = took if self.latency is None else self.latency + (took - self.latency) / 10
        if 200 <= status < 300:
            with suppress(orjson.JSONDecodeError):
                return status, orjson.loads(body)  # type: ignore[arg-type]
        resp = requestor._interpret_response(body, status, headers, "V1")
        return int(resp.code), resp.data

    async def ensure_clock(self) -> None:
        """Read Stripe's clock once if no response has yet (any answer carries its Date)."""
        if self.clock.known:
            return
        with suppress(StripeApiError):
            await self.request("get", "/v1/events", {"limit": 1})

    async def get(
        self, path: str, params: Mapping[str, Any] | None = None, **kw: Any
    ) -> dict[str, Any]:
        return await self.request("get", path, params, **kw)

    async def post(
        self, path: str, params: Mapping[str, Any] | None = None, **kw: Any
    ) -> dict[str, Any]:
        return await self.request("post", path, params, **kw)

    async def delete(
        self, path: str, params: Mapping[str, Any] | None = None, **kw: Any
    ) -> dict[str, Any]:
        return await self.request("delete", path, params, **kw)


def _backoff(attempt: int, status: int) -> float:
    base = 1.0 if status == 429 else 0.5
    return min(20.0, base * 2 ** (attempt - 1)) * (0.5 + random.random() / 2)


def _api_error(e: stripe.StripeError, method: str, path: str) -> StripeApiError:
    err = (e.json_body or {}).get("error", {}) if isinstance(e.json_body, dict) else {}
    status = int(e.http_status or 0)
    message = str(err.get("message") or e.user_message or str(e) or type(e).__name__)
    if status == 0:
        # the SDK's text is a paragraph; the cause is its "(Network error: …)" line
        cause = re.search(r"\(Network error: (.*?)\)", message)
        message = f"could not reach Stripe ({cause.group(1) if cause else type(e).__name__})"
    message = " ".join(message.split())  # one line
    return StripeApiError(
        status=status,
        message=str(message),
        type=err.get("type"),
        code=err.get("code") or e.code,
        param=err.get("param"),
        request_id=e.request_id,
        method=method.upper(),
        path=path,
    )
