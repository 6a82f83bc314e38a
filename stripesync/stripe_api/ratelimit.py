"""One client-side rate limiter per process: a token bucket shared by every task."""

from __future__ import annotations

import asyncio
import time

from stripesync.obs.metrics import RATELIMIT_WAIT


class RateLimiter:
    """Hands out at most `rate` permits per second (bursts up to `burst`).

    `penalize()` is called on a 429: the bucket empties and stays slowed down for a moment,
    so every task backs off together instead of each hammering Stripe on its own.
    """

    def __init__(self, rate: float, burst: float | None = None) -> None:
        if rate <= 0:
            raise ValueError("rate limit must be positive")
        self.rate = float(rate)
        # A small burst keeps the average at `rate` within any one-second window.
        self.burst = float(burst) if burst is not None else max(1.0, self.rate / 10)
        self._tokens = self.burst
        self._last = time.monotonic()
        self._lock = asyncio.Lock()
        self._paused_until = 0.0
        self.acquired = 0
        self.waited_seconds = 0.0

    def _refill(self, now: float) -> None:
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now

    async def acquire(self) -> None:
        started = time.monotonic()
        async with self._lock:
            while True:
                now = time.monotonic()
                if now < self._paused_until:
                    await asyncio.sleep(self._paused_until - now)
                    continue
                self._refill(now)
                if self._tokens >= 1.0:
                    self._tokens -= 1.0
                    break
                await asyncio.sleep((1.0 - self._tokens) / self.rate)
        waited = time.monotonic() - started
        self.acquired += 1
        self.waited_seconds += waited
        RATELIMIT_WAIT.inc(waited)

    def penalize(self, seconds: float = 1.0) -> None:
        self._tokens = 0.0
        self._paused_until = max(self._paused_until, time.monotonic() + seconds)
