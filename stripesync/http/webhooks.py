"""Stripe webhook signatures: verification and a replay guard.

`Stripe-Signature: t=<unix time>,v1=<hex>[,v1=<hex>...][,v0=...]`, where each `v1` is
HMAC-SHA256 of ``"{t}.{raw body}"`` with an endpoint secret. Several `v1` values appear
while Stripe rolls an endpoint's secret, and several secrets may be configured here for
the same reason: a request is genuine when any `v1` matches any secret.

Checks, in order, each with the reason it is rejected for: the header parses and the body
is bounded (`malformed`), a signature matches (`forged`), the timestamp is within the
tolerance of now, in either direction (`stale`), the body is a JSON event (`malformed`),
and — in `WebhookReceiver` — the same signed delivery was not already received within
the tolerance window (`replayed`).

Stripe signs each delivery attempt anew (a retry has a new timestamp and signature), so a
replay of the exact same signed payload is never a genuine retry. The guard therefore
keys on a digest of the signed payload (`t` and the body), which also stops a captured
delivery from being replayed with its header's signatures reordered or trimmed.

Secrets never appear in an exception, a log line or a response.
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

DEFAULT_TOLERANCE = 300
MAX_HEADER_LENGTH = 4096  # a header with ~40 signatures; Stripe sends one or two
MAX_SIGNATURES = 16

Reason = Literal["malformed", "forged", "stale", "replayed"]


class WebhookRejected(Exception):
    """A webhook delivery that must not be trusted; `reason` says why."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason: Reason = reason
        self.message = message


@dataclass(frozen=True, slots=True)
class Verified:
    """A delivery whose signature checked out."""

    event: dict[str, Any]
    timestamp: int
    digest: bytes  # sha256 of the signed payload: identifies this delivery


def parse_header(header: str | None) -> tuple[int, list[str]]:
    """The timestamp and the `v1` signatures of a `Stripe-Signature` header."""
    if not header:
        raise WebhookRejected("malformed", "no Stripe-Signature header")
    if len(header) > MAX_HEADER_LENGTH:
        raise WebhookRejected("malformed", "Stripe-Signature header too long")
    timestamp: int | None = None
    signatures: list[str] = []
    for item in header.split(","):
        key, sep, value = item.strip().partition("=")
        if not sep:
            continue
        if key == "t":
            if timestamp is not None or not value.isascii() or not value.isdigit():
                raise WebhookRejected("malformed", "bad timestamp in Stripe-Signature")
            timestamp = int(value)
        elif key == "v1":
            signatures.append(value)
    if timestamp is None:
        raise WebhookRejected("malformed", "no timestamp in Stripe-Signature")
    if not signatures:
        raise WebhookRejected("malformed", "no v1 signature in Stripe-Signature")
    if len(signatures) > MAX_SIGNATURES:
        raise WebhookRejected("malformed", "too many signatures in Stripe-Signature")
    return timestamp, signatures


def sign(payload: bytes, secret: str, timestamp: int) -> str:
    """The `v1` signature of a payload at a time (hex)."""
    signed = str(timestamp).encode() + b"." + payload
    return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def verify_delivery(
    payload: bytes,
    header: str | None,
    secrets: Sequence[str],
    *,
    tolerance: int = DEFAULT_TOLERANCE,
    now: float | None = None,
) -> Verified:
    """`verify`, also returning what identifies the delivery (for the replay guard)."""
    if not secrets or not all(s.strip() for s in secrets):
        raise ValueError("no webhook signing secret configured")
    timestamp, signatures = parse_header(header)
    given = [s.encode("utf-8", "replace") for s in signatures]
    matched = False
    for secret in secrets:
        expected = sign(payload, secret, timestamp).encode()
        for sig in given:
            # compare every pair: the time taken says nothing about which one matched
            matched |= hmac.compare_digest(expected, sig)
    if not matched:
        raise WebhookRejected("forged", "no signature matches the payload")
    now = time.time() if now is None else now
    if abs(now - timestamp) > tolerance:
        raise WebhookRejected("stale", f"timestamp outside the {tolerance} s tolerance")
    try:
        event = json.loads(payload)
    except (UnicodeDecodeError, ValueError):
        raise WebhookRejected("malformed", "body is not JSON") from None
    if not isinstance(event, dict) or not isinstance(event.get("id"), str):
        raise WebhookRejected("malformed", "body is not an event")
    digest = hashlib.sha256(str(timestamp).encode() + b"." + payload).digest()
    return Verified(event, timestamp, digest)


def verify(
    payload: bytes,
    header: str | None,
    secrets: Sequence[str],
    *,
    tolerance: int = DEFAULT_TOLERANCE,
    now: float | None = None,
) -> dict[str, Any]:
    """The event of a genuine, recent delivery; raises `WebhookRejected` otherwise
    (reason 'malformed', 'forged' or 'stale'). Signatures and past timestamps are judged
    as the SDK's `stripe.WebhookSignature.verify_header` judges them; unlike the SDK, a
    timestamp more than `tolerance` seconds in the future is stale too, and the body must
    be a JSON object with an `id`."""
    return verify_delivery(payload, header, secrets, tolerance=tolerance, now=now).event


class ReplayGuard:
    """The deliveries seen within the tolerance window, bounded in memory.

    A delivery older than the window is rejected as stale before it gets here, so an
    entry can be forgotten once its timestamp leaves the window. Only verified deliveries
    are recorded, so the set can grow only as fast as Stripe sends; beyond `max_entries`
    the oldest entries are forgotten first.
    """

    def __init__(self, tolerance: int = DEFAULT_TOLERANCE, max_entries: int = 100_000) -> None:
        self.tolerance = tolerance
        self.max_entries = max_entries
        self._seen: set[bytes] = set()
        self._by_time: list[tuple[int, bytes]] = []  # heap of (timestamp, digest)

    def __len__(self) -> int:
        return len(self._seen)

    def check(self, digest: bytes, timestamp: int, *, now: float | None = None) -> None:
        """Record a delivery; raises `WebhookRejected('replayed')` if it was seen."""
        now = time.time() if now is None else now
        while self._by_time and self._by_time[0][0] < now - self.tolerance:
            self._forget_oldest()
        if digest in self._seen:
            raise WebhookRejected("replayed", "this delivery was already received")
        while len(self._by_time) >= self.max_entries:
            self._forget_oldest()
        self._seen.add(digest)
        heapq.heappush(self._by_time, (timestamp, digest))

    def _forget_oldest(self) -> None:
        _, old = heapq.heappop(self._by_time)
        self._seen.discard(old)


class WebhookReceiver:
    """Verification with the configured secrets, then the replay guard."""

    def __init__(
        self,
        secrets: Sequence[str],
        *,
        tolerance: int = DEFAULT_TOLERANCE,
        guard: ReplayGuard | None = None,
    ) -> None:
        if not secrets or not all(s.strip() for s in secrets):
            raise ValueError("no webhook signing secret configured")
        self._secrets = tuple(secrets)
        self.tolerance = tolerance
        self.guard = guard or ReplayGuard(tolerance)

    def __repr__(self) -> str:  # never show the secrets
        return f"WebhookReceiver({len(self._secrets)} secret(s), tolerance={self.tolerance})"

    def receive(
        self, payload: bytes, header: str | None, *, now: float | None = None
    ) -> dict[str, Any]:
        """The event of a genuine, recent, first-seen delivery; else `WebhookRejected`."""
        now = time.time() if now is None else now
        delivery = verify_delivery(
            payload, header, self._secrets, tolerance=self.tolerance, now=now
        )
        self.guard.check(delivery.digest, delivery.timestamp, now=now)
        return delivery.event
