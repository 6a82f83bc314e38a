"""Stripe's clock, read from the ``Date`` header of its responses.

Every copy of an object is dated in Stripe's time (decision 12: the end of the second
before the fetch), because the events it competes with carry Stripe's ``created``. A
local clock ahead of Stripe's would date copies after events that change them, and
those changes would be lost; so the date comes from this clock, not ``time.time()``.

A response's ``Date`` (whole seconds) was written by Stripe at some moment between the
request's sending and the response's arrival, so each response bounds the offset
(Stripe's time minus ours)::

    date - received  <  offset  <  date + 1 - sent

The bounds of the responses of the last ten minutes are intersected, which narrows
the offset to about one round trip. :meth:`StripeClock.now` answers the *earliest*
time Stripe's clock can show: a copy dated a little early is overtaken by the events of
its own second (they are applied again, oldest first), one dated late would hide them.
Before any response, the offset is taken to be zero.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from email.utils import parsedate_to_datetime

from stripesync.obs.metrics import STRIPE_CLOCK_OFFSET

__all__ = ["StripeClock"]

log = logging.getLogger("stripesync.stripe")

WINDOW_S = 600.0  # responses older than this no longer bound the offset (clocks drift)
BUCKET_S = 10.0  # the bounds are kept per 10 s of responses: 60 entries at most
WARN_OFFSET_S = 1.0  # a larger offset is logged (once per change of its whole seconds)


class StripeClock:
    """The offset between Stripe's clock and this machine's, from response dates."""

    def __init__(self) -> None:
        # (bucket, low, high): the tightest bounds of the responses of each 10 s
        self._bounds: deque[tuple[float, float, float]] = deque()
        self._low = 0.0
        self._high = 0.0
        self._known = False
        self._warned: int | None = None

    @property
    def known(self) -> bool:
        """True once a response's date has been read."""
        return self._known

    @property
    def offset(self) -> float:
        """The best estimate of Stripe's time minus this machine's, in seconds."""
        return (self._low + self._high) / 2 if self._known else 0.0

    @property
    def bounds(self) -> tuple[float, float]:
        """The offset lies between these (both 0.0 before any response)."""
        return self._low, self._high

    def now(self) -> float:
        """The earliest time Stripe's clock can show now (this machine's before any reply)."""
        return time.time() + (self._low if self._known else 0.0)

    def observe(self, date_header: str | None, sent: float, received: float) -> None:
        """Take in a response's ``Date``, sent and received by this machine's clock."""
        if not date_header:
            return
        try:
            date = parsedate_to_datetime(date_header).timestamp()
        except (TypeError, ValueError, IndexError, OverflowError):
            return
        low, high = date - received, date + 1 - sent
        bucket = received // BUCKET_S
        bounds = self._bounds
        if bounds and bounds[-1][0] == bucket:
            _, last_low, last_high = bounds.pop()
            low, high = max(low, last_low), min(high, last_high)
        bounds.append((bucket, low, high))
        while bounds[0][0] < bucket - WINDOW_S / BUCKET_S:
            bounds.popleft()
        new_low = max(b[1] for b in bounds)
        new_high = min(b[2] for b in bounds)
        if new_low > new_high:  # a clock moved (NTP step, or Stripe's): start again
            low, high = date - received, date + 1 - sent
            bounds.clear()
            bounds.append((bucket, low, high))
            new_low, new_high = low, high
        self._low, self._high, self._known = new_low, new_high, True
        STRIPE_CLOCK_OFFSET.set(self.offset)
        self._report()

    def _report(self) -> None:
        offset = self.offset
        whole = int(offset)
        if abs(offset) <= WARN_OFFSET_S:
            self._warned = None
            return
        if whole == self._warned:
            return
        self._warned = whole
        direction = "behind" if offset > 0 else "ahead of"
        log.warning(
            "this machine's clock is %.1f s %s Stripe's: copies are dated by Stripe's clock",
            abs(offset),
            direction,
        )
