"""StripeClock: Stripe's time from the Date headers of its responses."""

from __future__ import annotations

import logging
import time
from email.utils import formatdate

import pytest

from stripesync.emulator import EmulatorServer
from stripesync.stripe_api.client import StripeApi, StripeApiError
from stripesync.stripe_api.clock import WINDOW_S, StripeClock


def date(t: float) -> str:
    return formatdate(t, usegmt=True)


def test_before_any_response_it_is_this_machines_clock() -> None:
    clock = StripeClock()
    assert not clock.known and clock.offset == 0.0
    assert abs(clock.now() - time.time()) < 0.5


def test_each_response_narrows_the_offset() -> None:
    clock = StripeClock()
    # Stripe's clock is 30.0 s ahead; a response written at Stripe's 1030.25
    clock.observe(date(1030.25), sent=1000.2, received=1000.3)
    assert clock.bounds == pytest.approx((29.7, 30.8))
    # another, written at Stripe's 1031.95: its whole second is 1031
    clock.observe(date(1031.95), sent=1001.9, received=1002.0)
    assert clock.bounds == pytest.approx((29.7, 30.1))
    assert clock.offset == pytest.approx(29.9)
    # now() is the earliest time Stripe's clock can show
    assert clock.now() - time.time() == pytest.approx(29.7, abs=0.05)


def test_a_moved_clock_starts_again_and_old_responses_expire() -> None:
    clock = StripeClock()
    clock.observe(date(1030.5), sent=1000.4, received=1000.6)
    # Stripe's clock is now 10 s behind: no overlap with what was known
    clock.observe(date(2000.5), sent=2010.4, received=2010.6)
    low, high = clock.bounds
    assert low <= -10 <= high and high - low < 1.5
    # a response from long after: the old bounds no longer hold it back
    later = 2010.6 + WINDOW_S + 20
    clock.observe(date(later - 2.5), sent=later - 0.1, received=later)
    low, high = clock.bounds
    assert low <= -2.5 <= high and high - low < 1.5


def test_unreadable_dates_are_ignored() -> None:
    clock = StripeClock()
    for bad in (None, "", "yesterday", "Thu, 99 Foo 2026 25:61:61 GMT"):
        clock.observe(bad, sent=1.0, received=2.0)
    assert not clock.known


def test_a_large_offset_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    clock = StripeClock()
    with caplog.at_level(logging.WARNING, logger="stripesync.stripe"):
        for i in range(5):
            t = 1000.0 + i
            clock.observe(date(t - 30 + 0.5), sent=t + 0.4, received=t + 0.6)
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1
    assert "clock is 30.0 s ahead of Stripe's" in warnings[0]


async def test_the_api_reads_the_emulators_clock(emulator_server: EmulatorServer) -> None:
    controls = emulator_server.client()
    try:
        controls.skew(-45)
        async with StripeApi("sk_test_emulator", api_base=emulator_server.url) as api:
            await api.ensure_clock()
            assert api.clock.known
            assert -46.5 < api.clock.offset < -43.5
            assert api.clock.bounds[1] - api.clock.bounds[0] < 1.5
            # any answer carries the date, a refusal too
            controls.skew(20)
            with pytest.raises(StripeApiError):
                await api.get("/v1/customers/cus_missing")
            assert 18.5 < api.clock.offset < 21.5
    finally:
        controls.reset()
        controls.close()
