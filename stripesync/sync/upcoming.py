"""The two upcoming-invoice tables: what Stripe would bill next, per customer and per
subscription.

`upcoming_customer_invoice` (key `customer_id`) and `upcoming_subscription_invoice`
(key `subscription_id`) hold the invoice object Stripe returns for the preview (it has
no id of its own), stored with the customer / subscription id as key and the time of the
fetch as `_stripe_time`.

Where rows come from:

- `fill_all()`, after the backfill: every customer of `customer` (not deleted) and every
  subscription of `subscription` that has not ended (status not `canceled` /
  `incomplete_expired`), plus every key already in the two tables (so a row left from an
  earlier run is checked, and goes if it has no upcoming invoice any more). Done in
  chunks, one transaction each.
- `refresh(customers, subscriptions)`: one fetch per distinct id, `concurrency` at a time
  within the API's rate limiter; the rows of one call are written in one transaction.
  Meant to run once per poll cycle with the ids of `affected(plan)` (`refresh_for`, or
  `after_batch` as the live sync's hook): a burst of events about one customer costs one
  fetch of it.

The fetch: `GET /v1/invoices/upcoming?customer=…` (or `?subscription=…`) with the
pre-2025-03-31 `Stripe-Version` the catalog declares for these tables (the endpoint was
removed in 2025-03-31.basil but is served to requests carrying an older version).
Stripe's "there is none" (`invoice_upcoming_none`, or `resource_missing` for a customer
or subscription that is gone) removes the row without a tombstone: an upcoming invoice
can come back, and `Store.remove` keeps any copy newer than the answer.

The fallback: when Stripe refuses the upcoming endpoint itself (404 without an error code,
i.e. "Unrecognized request URL", or 400 about the API version), every later fetch through
the same `StripeApi` (for the rest of the process) uses `POST /v1/invoices/create_preview`
at the pinned version: `subscription=…` for a subscription; for a customer,
`customer=…&subscription=…` with the customer's live subscription whose period ends first
(the preview can no longer span all of a customer's subscriptions), or `customer=…`
alone when it has none.

Which events can change which rows (`affected`), by the kind of the event's object:

- customer, invoice, invoiceitem, discount without a subscription: that customer's row
  and the rows of all of its live subscriptions (pending invoice items, the customer's
  balance, discount and tax settings go into every one of its previews);
- subscription, subscription_item, subscription_schedule, discount of a subscription:
  that subscription's row and its customer's row;
- price, plan: the live subscriptions with an item on that price / plan (from
  `subscription._raw` items and from `subscription_item`), and their customers;
- tax_rate: the live subscriptions with it as a default tax rate or on an item, and their
  customers;
- coupon: customers and live subscriptions whose stored discount(s) use it (as far as
  the stored objects show the coupon: expanded discounts or the legacy `discount`
  field), and the customers of those subscriptions.

Other events (charges, payment intents, ...) change no preview and are ignored.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson
from psycopg_pool import AsyncConnectionPool

from stripesync.catalog import Catalog, Collection, build_catalog
from stripesync.schema.columns import quote
from stripesync.store import Incoming, Store
from stripesync.store.store import Conn
from stripesync.stripe_api.client import StripeApi, StripeApiError
from stripesync.sync.events import Plan

log = logging.getLogger("stripesync.upcoming")

CUSTOMER_TABLE = "upcoming_customer_invoice"
SUBSCRIPTION_TABLE = "upcoming_subscription_invoice"
PREVIEW_PATH = "/v1/invoices/create_preview"
ENDED = ("canceled", "incomplete_expired")
CHUNK = 500  # ids per transaction in fill_all

Kind = Literal["customer", "subscription"]

# objects whose change reaches every preview of their customer
CUSTOMER_WIDE = frozenset({"customer", "invoice", "invoiceitem"})
# objects that belong to one subscription (and its customer)
SUBSCRIPTION_SCOPED = frozenset({"subscription", "subscription_item", "subscription_schedule"})

# the fallback to create_preview, remembered per API client for the life of the process
_fallback: weakref.WeakKeyDictionary[StripeApi, str] = weakref.WeakKeyDictionary()


@dataclass(slots=True)
class RefreshResult:
    fetched: int = 0  # previews asked of Stripe (one per distinct id)
    upserted: int = 0  # rows written (a copy older than the row's is not)
    removed: int = 0  # rows removed: Stripe said there is no upcoming invoice
    failed: dict[str, str] = field(default_factory=dict)  # id -> the error; row left as is

    def add(self, other: RefreshResult) -> None:
        self.fetched += other.fetched
        self.upserted += other.upserted
        self.removed += other.removed
        self.failed.update(other.failed)


@dataclass(frozen=True, slots=True)
class _Answer:
    kind: Kind
    key: str
    invoice: dict[str, Any] | None  # None: there is no upcoming invoice
    at: float  # when it was asked


def no_upcoming(e: StripeApiError) -> bool:
    """Stripe says there is nothing to preview (or the customer/subscription is gone)."""
    return e.code == "invoice_upcoming_none" or (e.not_found and e.code == "resource_missing")


def endpoint_refused(e: StripeApiError) -> bool:
    """Stripe refuses the upcoming endpoint itself, not this one customer's preview."""
    if e.status == 404 and e.code is None:  # "Unrecognized request URL"
        return True
    return e.status == 400 and e.code is None and "version" in e.message.lower()


class UpcomingInvoices:
    def __init__(
        self,
        api: StripeApi,
        pool: AsyncConnectionPool,  # type: ignore[type-arg]
        *,
        schema: str = "stripe",
        catalog: Catalog | None = None,
        concurrency: int = 8,
        upcoming_version: str | None = None,
    ) -> None:
        self.api = api
        self.pool = pool
        self.schema = schema
        self.catalog = catalog or build_catalog()
        self.store = Store(schema)
        self.concurrency = max(1, concurrency)
        self.tables: dict[Kind, Collection] = {
            "customer": self.catalog[CUSTOMER_TABLE],
            "subscription": self.catalog[SUBSCRIPTION_TABLE],
        }
        read = self.tables["customer"].read
        self.upcoming_path = read.path or "/v1/invoices/upcoming"
        # the Stripe-Version that still serves GET /v1/invoices/upcoming (catalog's)
        self.upcoming_version = upcoming_version or read.api_version

    # ---- the fallback ----------------------------------------------------------------

    @property
    def fallback(self) -> bool:
        """True once Stripe refused the upcoming endpoint: create_preview from then on."""
        return self.api in _fallback

    @property
    def fallback_reason(self) -> str | None:
        return _fallback.get(self.api)

    def _fall_back(self, e: StripeApiError) -> None:
        if self.api not in _fallback:
            log.warning(
                "Stripe refuses GET %s at Stripe-Version %s (%s): using POST %s from now on",
                self.upcoming_path,
                self.upcoming_version,
                e,
                PREVIEW_PATH,
            )
            _fallback[self.api] = str(e)

    # ---- filling and refreshing -----------------------------------------------------

    async def fill_all(self) -> RefreshResult:
        """After the backfill: a preview for every customer and live subscription."""
        s = quote(self.schema)
        cus = quote(self.catalog["customer"].table)
        sub = quote(self.catalog["subscription"].table)
        ct, st = (quote(self.tables[k].table) for k in ("customer", "subscription"))
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                f"SELECT id FROM {s}.{cus} WHERE deleted IS NOT TRUE "  # type: ignore[arg-type]
                f"UNION SELECT customer_id FROM {s}.{ct} ORDER BY 1"
            )
            customers = [r[0] for r in await cur.fetchall() if r[0]]
            cur = await conn.execute(
                f"SELECT id FROM {s}.{sub} "  # type: ignore[arg-type]
                "WHERE coalesce(status, '') <> ALL(%s) "
                f"UNION SELECT subscription_id FROM {s}.{st} ORDER BY 1",
                (list(ENDED),),
            )
            subscriptions = [r[0] for r in await cur.fetchall() if r[0]]
        total = RefreshResult()
        for i in range(0, len(customers), CHUNK):
            total.add(await self.refresh(customers[i : i + CHUNK], ()))
        for i in range(0, len(subscriptions), CHUNK):
            total.add(await self.refresh((), subscriptions[i : i + CHUNK]))
        log.info(
            "upcoming invoices: %d customers and %d subscriptions asked, %d rows written, "
            "%d removed, %d failed",
            len(customers),
            len(subscriptions),
            total.upserted,
            total.removed,
            len(total.failed),
        )
        return total

    async def refresh(
        self, customers: Iterable[str], subscriptions: Iterable[str]
    ) -> RefreshResult:
        """One fetch per distinct customer and subscription; the rows in one transaction."""
        targets: list[tuple[Kind, str]] = [
            *(("customer", c) for c in dict.fromkeys(customers) if c),
            *(("subscription", x) for x in dict.fromkeys(subscriptions) if x),
        ]
        result = RefreshResult()
        if not targets:
            return result
        soonest: dict[str, str | None] = {}
        if self.fallback:
            soonest = await self._soonest_subscriptions([k for t, k in targets if t == "customer"])
        gate = asyncio.Semaphore(self.concurrency)

        async def one(kind: Kind, key: str) -> _Answer | None:
            async with gate:
                try:
                    return await self._fetch(kind, key, soonest)
                except StripeApiError as e:
                    result.failed[key] = str(e)
                    return None

        answers = [a for a in await asyncio.gather(*(one(*t) for t in targets)) if a]
        result.fetched = len(targets)
        if result.failed:
            log.warning(
                "upcoming invoices: %d of %d previews failed (first: %s)",
                len(result.failed),
                len(targets),
                next(iter(result.failed.values())),
            )
        async with self.pool.connection() as conn, conn.transaction():
            for kind, coll in self.tables.items():
                mine = [a for a in answers if a.kind == kind]
                items = [
                    Incoming(a.invoice, stripe_time=a.at, key=a.key)
                    for a in mine
                    if a.invoice is not None
                ]
                if items:
                    result.upserted += (await self.store.upsert(conn, coll, items)).written
                gone = {a.key: a.at for a in mine if a.invoice is None}
                result.removed += await self.store.remove(conn, coll, gone)
        return result

    async def _fetch(self, kind: Kind, key: str, soonest: dict[str, str | None]) -> _Answer:
        at = self.api.clock.now()
        if not self.fallback:
            try:
                inv = await self.api.get(
                    self.upcoming_path, {kind: key}, stripe_version=self.upcoming_version
                )
                return _Answer(kind, key, inv, at)
            except StripeApiError as e:
                if no_upcoming(e):
                    return _Answer(kind, key, None, at)
                if not endpoint_refused(e):
                    raise
                self._fall_back(e)
            at = self.api.clock.now()
        params: dict[str, str] = {kind: key}
        if kind == "customer":
            if key not in soonest:
                soonest.update(await self._soonest_subscriptions([key]))
            sub = soonest.get(key)
            if sub:
                params["subscription"] = sub
        try:
            return _Answer(kind, key, await self.api.post(PREVIEW_PATH, params), at)
        except StripeApiError as e:
            if no_upcoming(e):
                return _Answer(kind, key, None, at)
            raise

    async def _soonest_subscriptions(self, customers: Sequence[str]) -> dict[str, str | None]:
        """Each customer's live subscription whose current period ends first."""
        out: dict[str, str | None] = dict.fromkeys(customers)
        if not customers:
            return out
        sub = f"{quote(self.schema)}.{quote(self.catalog['subscription'].table)}"
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                f"SELECT DISTINCT ON (customer_id) customer_id, id FROM {sub} s "  # type: ignore[arg-type]
                "WHERE customer_id = ANY(%s) AND coalesce(status, '') <> ALL(%s) "
                "ORDER BY customer_id, coalesce("
                "  (SELECT min((it->>'current_period_end')::bigint) "
                "   FROM jsonb_array_elements(coalesce(s._raw->'items'->'data', '[]')) it),"
                "  (s._raw->>'current_period_end')::bigint), id",
                (list(customers), list(ENDED)),
            )
            for cus, sid in await cur.fetchall():
                out[cus] = sid
        return out

    # ---- which rows a batch of events can change -------------------------------------

    async def affected(
        self, source: Plan | Iterable[Mapping[str, Any]]
    ) -> tuple[set[str], set[str]]:
        """The customers and subscriptions whose upcoming invoice a batch of events (or a
        live-sync plan) may have changed; the rules are in the module's docstring."""
        wide: set[str] = set()  # customers: their row and all their live subscriptions'
        customers: set[str] = set()
        subscriptions: set[str] = set()
        prices: set[str] = set()
        coupons: set[str] = set()
        tax_rates: set[str] = set()
        for ev in _events_of(source):
            data = ev.get("data")
            obj = data.get("object") if isinstance(data, Mapping) else None
            if not isinstance(obj, Mapping):
                continue
            kind = obj.get("object")
            oid = obj.get("id") if isinstance(obj.get("id"), str) else None
            cus = _ref(obj.get("customer"))
            sub = _subscription_of(obj)
            if kind == "customer":
                wide.add(oid or "")
            elif kind in CUSTOMER_WIDE or (kind == "discount" and not sub):
                wide.add(cus or "")
            elif kind in SUBSCRIPTION_SCOPED or kind == "discount":
                subscriptions.add((oid if kind == "subscription" else sub) or "")
                customers.add(cus or "")
            elif kind in ("price", "plan"):
                prices.add(oid or "")
            elif kind == "coupon":
                coupons.add(oid or "")
            elif kind == "tax_rate":
                tax_rates.add(oid or "")
        for ids in (wide, customers, subscriptions, prices, coupons, tax_rates):
            ids.discard("")
        async with self.pool.connection() as conn:
            q = _Queries(self.schema, self.catalog)
            if prices or coupons or tax_rates:
                for sid, cid in await q.subscriptions_using(conn, prices, coupons, tax_rates):
                    subscriptions.add(sid)
                    if cid:
                        customers.add(cid)
            if coupons:
                wide.update(await q.customers_with_coupons(conn, coupons))
            if subscriptions:
                customers.update(await q.customers_of(conn, subscriptions))
            if wide:
                subscriptions.update(await q.live_subscriptions_of(conn, wide))
        return customers | wide, subscriptions

    async def refresh_for(self, source: Plan | Iterable[Mapping[str, Any]]) -> RefreshResult:
        """`affected` then `refresh`: what to run once per poll cycle."""
        customers, subscriptions = await self.affected(source)
        return await self.refresh(customers, subscriptions)

    async def after_batch(self, plan: Plan) -> None:
        """A `LiveSync(after_batch=...)` hook."""
        await self.refresh_for(plan)


def _events_of(source: Plan | Iterable[Mapping[str, Any]]) -> Iterable[Mapping[str, Any]]:
    if not isinstance(source, Plan):
        return source
    out: list[Mapping[str, Any]] = []
    for inc in source.events:
        ev = orjson.loads(inc.obj) if isinstance(inc.obj, str) else inc.obj
        if isinstance(ev, Mapping):
            out.append(ev)
    return out


def _ref(v: Any) -> str | None:
    """The id of an expandable reference, expanded or not."""
    if isinstance(v, str) and v:
        return v
    if isinstance(v, Mapping) and isinstance(v.get("id"), str):
        return str(v["id"])
    return None


def _subscription_of(obj: Mapping[str, Any]) -> str | None:
    """The subscription an invoice, invoice item, item, schedule or discount belongs to
    (a top-level field before 2025-03-31, under `parent` since)."""
    sub = _ref(obj.get("subscription"))
    if sub:
        return sub
    parent = obj.get("parent")
    if isinstance(parent, Mapping):
        for details in ("subscription_details", "subscription_item_details"):
            d = parent.get(details)
            if isinstance(d, Mapping) and _ref(d.get("subscription")):
                return _ref(d.get("subscription"))
    return None


def _json_list(values: Iterable[object]) -> list[str]:
    return [orjson.dumps(v).decode() for v in values]


class _Queries:
    """The database look-ups of `affected`."""

    def __init__(self, schema: str, catalog: Catalog) -> None:
        s = quote(schema)
        self.subscription = f"{s}.{quote(catalog['subscription'].table)}"
        self.item = f"{s}.{quote(catalog['subscription_item'].table)}"
        self.customer = f"{s}.{quote(catalog['customer'].table)}"

    async def subscriptions_using(
        self, conn: Conn, prices: set[str], coupons: set[str], tax_rates: set[str]
    ) -> list[tuple[str, str | None]]:
        """Live subscriptions with an item on one of the prices / plans, one of the tax
        rates (default or on an item), or a discount from one of the coupons."""
        items = _json_list(
            [
                *([{"price": {"id": p}}] for p in prices),
                *([{"plan": {"id": p}}] for p in prices),
                *([{"tax_rates": [{"id": t}]}] for t in tax_rates),
            ]
        )
        whole = _json_list(
            [
                *({"default_tax_rates": [{"id": t}]} for t in tax_rates),
                *(pattern for c in coupons for pattern in _coupon_patterns(c)),
            ]
        )
        item_ids = sorted(prices)
        cur = await conn.execute(
            f"SELECT s.id, s.customer_id FROM {self.subscription} s "
            "WHERE coalesce(s.status, '') <> ALL(%(ended)s) AND ("
            "  coalesce(s._raw->'items'->'data', '[]') @> ANY(%(items)s::text[]::jsonb[])"
            "  OR s._raw @> ANY(%(whole)s::text[]::jsonb[])"
            "  OR s.id IN ("
            f"    SELECT coalesce(i.subscription, i._parent_id) FROM {self.item} i"
            "     WHERE i.price->>'id' = ANY(%(ids)s) OR i.plan->>'id' = ANY(%(ids)s)"
            "        OR coalesce(i.tax_rates, '[]') @> ANY(%(rates)s::text[]::jsonb[])))",
            {
                "ended": list(ENDED),
                "items": items,
                "whole": whole,
                "ids": item_ids,
                "rates": _json_list([{"id": t}] for t in tax_rates),
            },
        )
        return [(r[0], r[1]) for r in await cur.fetchall()]

    async def customers_with_coupons(self, conn: Conn, coupons: set[str]) -> set[str]:
        patterns = _json_list(p for c in coupons for p in _coupon_patterns(c))
        cur = await conn.execute(
            f"SELECT id FROM {self.customer} WHERE _raw @> ANY(%s::text[]::jsonb[])",
            (patterns,),
        )
        return {r[0] for r in await cur.fetchall()}

    async def customers_of(self, conn: Conn, subscriptions: set[str]) -> set[str]:
        cur = await conn.execute(
            f"SELECT customer_id FROM {self.subscription} "
            "WHERE id = ANY(%s) AND customer_id IS NOT NULL",
            (sorted(subscriptions),),
        )
        return {r[0] for r in await cur.fetchall()}

    async def live_subscriptions_of(self, conn: Conn, customers: set[str]) -> set[str]:
        cur = await conn.execute(
            f"SELECT id FROM {self.subscription} "
            "WHERE customer_id = ANY(%s) AND coalesce(status, '') <> ALL(%s)",
            (sorted(customers), list(ENDED)),
        )
        return {r[0] for r in await cur.fetchall()}


def _coupon_patterns(coupon: str) -> list[dict[str, Any]]:
    """jsonb containment patterns for an object (customer, subscription) whose discount
    uses the coupon: the legacy `discount` field or expanded `discounts`, with the coupon
    at `coupon` (before 2025-03-31) or `source.coupon` (since), expanded or not."""
    shapes: list[dict[str, Any]] = [
        {"coupon": {"id": coupon}},
        {"source": {"coupon": coupon}},
        {"source": {"coupon": {"id": coupon}}},
    ]
    return [*({"discount": d} for d in shapes), *({"discounts": [d]} for d in shapes)]
