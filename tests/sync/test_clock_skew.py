"""Copies are dated by Stripe's clock, so a change lands whatever this machine's clock says."""

import pytest

from stripesync.sync.backfill import Backfill
from stripesync.sync.live import LiveSync

TABLES = ["customer", "event"]


async def _row(pool, customer_id):
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT email, extract(epoch FROM _stripe_time)::float8 FROM stripe.customer "
            "WHERE id = %s",
            (customer_id,),
        )
        return await cur.fetchone()


@pytest.mark.parametrize("skew", [-30.0, 30.0], ids=["ours-ahead", "ours-behind"])
async def test_a_change_after_the_backfill_lands_whatever_the_clocks(emulator, api, pool, skew):
    stripe_now = emulator.controls.skew(skew)
    sdk = emulator.stripe()
    customer = sdk.v1.customers.create(params={"email": "before@example.com"})
    await Backfill(api, pool, collections=["customer"]).run()
    assert api.clock.known and abs(api.clock.offset - skew) < 1.5
    email, dated = await _row(pool, customer.id)
    # dated by Stripe's clock: never after the moment Stripe answered
    assert email == "before@example.com" and stripe_now - 3 <= dated <= emulator.controls.now()

    # a change right after: its event's `created` is Stripe's time, `skew` off ours
    sdk.v1.customers.update(customer.id, params={"email": "after@example.com"})
    live = LiveSync(api, pool)
    result = await live.poll_once()
    assert result.events == 1
    assert (await _row(pool, customer.id))[0] == "after@example.com"
    # the lag is measured on Stripe's clock too
    assert result.lag_seconds is not None and 0 <= result.lag_seconds < 5
    lag = live.lag_seconds()
    assert lag is not None and lag < 5
