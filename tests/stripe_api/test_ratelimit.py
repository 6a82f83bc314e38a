import asyncio
import time

import pytest

from stripesync.stripe_api.ratelimit import RateLimiter


async def test_limiter_holds_the_average_rate():
    limiter = RateLimiter(50)
    started = time.monotonic()
    await asyncio.gather(*(limiter.acquire() for _ in range(60)))
    elapsed = time.monotonic() - started
    # 60 permits at 50/s with a burst of 5: at least (60 - 5) / 50 s
    assert elapsed >= (60 - limiter.burst) / 50 * 0.95
    assert elapsed < 2.5
    assert limiter.acquired == 60


async def test_penalty_pauses_every_task():
    limiter = RateLimiter(1000)
    limiter.penalize(0.3)
    started = time.monotonic()
    await limiter.acquire()
    assert time.monotonic() - started >= 0.29


def test_rate_must_be_positive():
    with pytest.raises(ValueError):
        RateLimiter(0)
