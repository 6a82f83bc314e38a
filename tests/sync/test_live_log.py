"""The live sync says what it applied at most once every 10 s, with the count since."""

import logging

import pytest

from stripesync.sync.live import LiveSync

TABLES = ["customer", "event"]


async def test_applied_events_are_logged_at_most_once_per_interval(
    emulator, api, pool, caplog: pytest.LogCaptureFixture
) -> None:
    clock = [1000.0]
    sdk = emulator.stripe()
    live = LiveSync(api, pool)
    live.monotonic = lambda: clock[0]
    caplog.set_level(logging.DEBUG, logger="stripesync.live")

    def infos() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.levelno == logging.INFO
                and r.getMessage().startswith("applied")]  # fmt: skip

    sdk.v1.customers.create(params={"email": "a@example.com"})
    assert (await live.poll_once()).events == 1
    assert len(infos()) == 1 and infos()[0].startswith("applied 1 events (cursor evt_")
    for second in (1, 2, 3):  # three more batches within the interval: debug lines only
        clock[0] += 1
        sdk.v1.customers.create(params={"email": f"b{second}@example.com"})
        assert (await live.poll_once()).events == 1
    assert len(infos()) == 1
    debug = [r for r in caplog.records if r.levelno == logging.DEBUG
             and r.getMessage().startswith("applied 1 events")]  # fmt: skip
    assert len(debug) == 4
    clock[0] += 10  # the next batch after the interval: the count since the last line
    sdk.v1.customers.create(params={"email": "c@example.com"})
    assert (await live.poll_once()).events == 1
    assert len(infos()) == 2 and infos()[1].startswith("applied 4 events in 13 s (cursor evt_")
