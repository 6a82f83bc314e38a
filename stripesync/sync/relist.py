"""Re-list what events miss, on a schedule, and repair the copy.

Stripe announces some collections through no event, or not reliably (connected accounts,
their persons and external accounts, country specs, report types, the balance): the
catalog marks them `relist`. Every `interval` seconds each of them is listed again and
its table repaired (decisions.md, "Scheduled re-list"):

- every object listed is upserted with `_stripe_time` = when its page was fetched
  (`fetch_time()`, as the backfill does), so the newest-wins guard keeps whatever state
  an event applied after that;
- rows of objects Stripe no longer lists are removed, with their children's rows, but
  only rows whose `_stripe_time` is older than the moment the re-list started, less a
  margin of REMOVAL_MARGIN seconds (a row an event wrote meanwhile stays; events' times
  are whole seconds). The removal leaves a tombstone at that cutoff: a copy from before
  it (a late event) does not bring the row back; a later listing does.

What is read of a collection: its top-level lists and singletons, and its nested lists
under parents that are re-listed themselves (an account's persons and external accounts;
not customers' bank accounts, which `customer.source.*` events announce, and which would
cost one request per customer every hour). Rows are removed only in the scope that was
read in full: rows without a parent when every top-level read was re-listed, and rows of
the parents whose children were listed. A created-filterable list of a collection no
event announces (balance transactions: a ledger Stripe appends to) is re-listed from a
week before its newest row, and nothing of it is removed.

The schedule is kept in `_relist_state` (when each re-list started and what it found): a
restart re-lists only what is due. Collections never re-listed are spread over the first
interval, and collections are re-listed one at a time, so the rate limiter sees one
stream. A refusal (403, 404, 400) skips a collection for the round; the others go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from psycopg_pool import AsyncConnectionPool

from stripesync.catalog import Catalog, Collection, Read, ReadKind, build_catalog
from stripesync.schema.columns import quote
from stripesync.store import Incoming, Store
from stripesync.store.store import Conn, fetch_time
from stripesync.stripe_api.client import StripeApi, StripeApiError
from stripesync.sync.events import Plan
from stripesync.sync.paging import PAGE, ParentGone, Skip, accepts, get_page

log = logging.getLogger("stripesync.relist")

DEFAULT_INTERVAL = 3600.0
PARENT_WORKERS = 4  # parents whose children are listed at once
INCREMENTAL_OVERLAP = 7 * 24 * 3600  # an append-only list is re-read from this far back
RETRY_SECONDS = 60.0  # after a failure that is not a refusal (network, 5xx)
# Rows written less than this before a re-list started are not removed by it: an event's
# `created` is whole seconds of Stripe's clock, so an event applied just after the start
# can carry an earlier time; and Stripe's clock is known to about a round trip.
REMOVAL_MARGIN = 5.0


@dataclass(frozen=True, slots=True)
class RelistResult:
    """What one re-list of one collection found."""

    collection: str
    listed: int  # objects Stripe listed
    repaired: int  # rows inserted or changed (new objects, drifted rows)
    removed: int  # rows of objects Stripe no longer lists
    requests: int
    seconds: float
    skipped: str | None = None  # why Stripe refused the collection this round

    @property
    def ok(self) -> bool:
        return self.skipped is None


@dataclass(frozen=True, slots=True)
class _Plan:
    """How one collection is re-listed."""

    reads: tuple[Read, ...]
    incremental: frozenset[int]  # indexes into reads of lists re-read from a window
    top_scope: bool  # rows without a parent are proved absent by the reads
    children: tuple[Collection, ...]  # whose rows go with a removed row


@dataclass(slots=True)
class _Round:
    c: Collection
    started: float  # this machine's clock: when the next round is due
    stripe_started: float  # Stripe's (StripeClock.now()): what the removal compares
    seen: set[str] = field(default_factory=set)
    parents: set[str] = field(default_factory=set)  # parents whose children were listed
    listed: int = 0
    repaired: int = 0
    requests: int = 0


class Relister:
    def __init__(
        self,
        api: StripeApi,
        pool: AsyncConnectionPool,  # type: ignore[type-arg]
        *,
        schema: str = "stripe",
        catalog: Catalog | None = None,
        interval: float = DEFAULT_INTERVAL,
        collections: Sequence[str] | None = None,
    ) -> None:
        if interval <= 0:
            raise ValueError("the re-list interval must be positive")
        self.api = api
        self.pool = pool
        self.schema = schema
        self.catalog = catalog or build_catalog()
        self.interval = interval
        self.store = Store(schema)
        selected = self.catalog.select(list(collections) if collections else None)
        self._plans: dict[str, _Plan] = {}
        for c in sorted(selected, key=self._depth):
            if not c.relist:
                continue
            plan = self._plan(c)
            if plan is None:
                log.debug("%s is marked relist but has no list to read", c.name)
                continue
            self._plans[c.name] = plan
        # the collections re-listed, parents before their children
        self.collections: list[str] = list(self._plans)
        self.results: dict[str, RelistResult] = {}  # the last re-list of each
        self._last: dict[str, float] = {}  # when each last re-list started (Unix seconds)
        self._locks = {name: asyncio.Lock() for name in self.collections}

    # ---- what is read ----------------------------------------------------------------

    def _depth(self, c: Collection) -> int:
        depth, parent = 0, c.read.parent
        while parent and parent in self.catalog and depth < 8:
            depth += 1
            parent = self.catalog[parent].read.parent
        return depth

    def _plan(self, c: Collection) -> _Plan | None:
        reads: list[Read] = []
        incremental: set[int] = set()
        top_level_complete = True
        for read in c.reads:
            nested = bool(read.parent) and read.kind in (ReadKind.NESTED, ReadKind.LEGACY)
            if nested:
                assert read.parent is not None
                known = read.parent in self.catalog
                if read.path and known and self.catalog[read.parent].relist:
                    reads.append(read)
                continue
            listable = read.kind in (ReadKind.LIST, ReadKind.LEGACY, ReadKind.SINGLETON)
            if not (listable and read.path):
                top_level_complete = False  # references, events: rows we cannot prove gone
                continue
            if read.kind is not ReadKind.SINGLETON and read.created_filter and not c.events:
                incremental.add(len(reads))
                top_level_complete = False
            reads.append(read)
        if not reads:
            return None
        has_top = any(not r.parent for r in reads)
        children = tuple(
            x for x in self.catalog if x.name != c.name and any(r.parent == c.name for r in x.reads)
        )
        return _Plan(tuple(reads), frozenset(incremental), has_top and top_level_complete, children)

    # ---- one re-list -----------------------------------------------------------------

    async def relist(self, name: str) -> RelistResult:
        """List one collection again and repair its table."""
        plan = self._plans.get(name)
        if plan is None:
            raise ValueError(
                f"{name!r} is not re-listed here; re-listed: {', '.join(self.collections)}"
            )
        c = self.catalog[name]
        await self.api.ensure_clock()  # the removal compares Stripe's times
        async with self._locks[name]:
            r = _Round(c, time.time(), self.api.clock.now())
            t0 = time.monotonic()
            skipped: str | None = None
            removed = 0
            try:
                for i, read in enumerate(plan.reads):
                    await self._read(r, read, incremental=i in plan.incremental)
                removed = await self._remove(r, plan)
            except Skip as s:
                skipped = str(s)
            result = RelistResult(
                name, r.listed, r.repaired, removed, r.requests, time.monotonic() - t0, skipped
            )
            self._last[name] = r.started
            self.results[name] = result
            await self._record(result, r.started)
        if skipped:
            log.warning("re-list %s: skipped this round: %s", name, skipped)
        else:
            log.info(
                "re-list %s: %d listed, %d repaired, %d removed (%d requests, %.2fs)",
                name,
                result.listed,
                result.repaired,
                result.removed,
                result.requests,
                result.seconds,
            )
        return result

    async def refresh_balance(self) -> RelistResult | None:
        """GET /v1/balance into the `balance` row (the live sync calls this on
        `balance.available`); None when the balance is not synced."""
        if "balance" not in self._plans:
            return None
        return await self.relist("balance")

    async def after_batch(self, plan: Plan) -> None:
        """A live-sync hook: refresh the balance when a batch had `balance.available`."""
        for ev in plan.events:
            obj = ev.obj if isinstance(ev.obj, dict) else orjson.loads(ev.obj)
            if obj.get("type") == "balance.available":
                await self.refresh_balance()
                return

    async def _read(self, r: _Round, read: Read, *, incremental: bool) -> None:
        assert read.path
        if read.kind is ReadKind.SINGLETON:
            fetched = fetch_time(self.api.clock.now())
            obj = await self._get(r, read, read.path, {})
            await self._write(r, [obj] if accepts(r.c, obj) else [], fetched, None)
        elif read.parent:
            await self._nested(r, read)
        else:
            params: dict[str, Any] = {**read.params, "limit": PAGE}
            if incremental:
                newest = await self._newest_created(r.c)
                if newest is not None:
                    params["created[gte]"] = newest - INCREMENTAL_OVERLAP
            await self._page(r, read, read.path, params, None)

    async def _nested(self, r: _Round, read: Read) -> None:
        assert read.path and read.parent
        parent = self.catalog[read.parent]
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                f"SELECT {quote(parent.key)} FROM {quote(self.schema)}.{quote(parent.table)}"
            )
            queue = deque(str(row[0]) for row in await cur.fetchall())
        path_template = read.path
        param = str(read.parent_param)

        async def worker() -> None:
            while queue:
                pid = queue.popleft()
                if "{" in path_template:
                    path = path_template.replace("{" + param + "}", pid)
                    params: dict[str, Any] = {**read.params, "limit": PAGE}
                else:
                    path = path_template
                    params = {**read.params, "limit": PAGE, param: pid}
                # a parent gone at Stripe: its children are gone too
                with contextlib.suppress(ParentGone):
                    await self._page(r, read, path, params, pid, child=True)
                r.parents.add(pid)

        await _gather([worker() for _ in range(min(PARENT_WORKERS, len(queue)))])

    async def _page(
        self,
        r: _Round,
        read: Read,
        path: str,
        params: dict[str, Any],
        parent_id: str | None,
        *,
        child: bool = False,
    ) -> None:
        while True:
            fetched = fetch_time(self.api.clock.now())
            page = await self._get(r, read, path, params, child=child)
            data = page.get("data", [])
            await self._write(r, [o for o in data if accepts(r.c, o)], fetched, parent_id)
            if not (page.get("has_more") and data):
                return
            params["starting_after"] = data[-1]["id"]

    async def _get(
        self, r: _Round, read: Read, path: str, params: dict[str, Any], *, child: bool = False
    ) -> dict[str, Any]:
        r.requests += 1
        return await get_page(self.api, read, path, params, child=child)

    # ---- repair ----------------------------------------------------------------------

    async def _write(
        self, r: _Round, objects: list[dict[str, Any]], fetched: float, parent_id: str | None
    ) -> None:
        """Upsert one page as of `fetched`, counting the rows it repairs."""
        r.listed += len(objects)
        keyed = [(str(o[r.c.key]), orjson.dumps(o).decode()) for o in objects if o.get(r.c.key)]
        r.seen.update(k for k, _ in keyed)
        if not keyed:
            return
        t = f"{quote(self.schema)}.{quote(r.c.table)}"
        key = quote(r.c.key)
        async with self.pool.connection() as conn, conn.transaction():
            cur = await conn.execute(
                "SELECT count(*) FROM unnest(%s::text[], %s::text[]) AS x(k, raw) "  # type: ignore[arg-type]
                f"LEFT JOIN {t} t ON t.{key} = x.k "
                f"WHERE (t.{key} IS NULL OR t._raw IS DISTINCT FROM x.raw::jsonb "
                "OR t._parent_id IS DISTINCT FROM %s::text) "
                f"AND (t.{key} IS NULL OR t._stripe_time <= to_timestamp(%s)) "
                f"AND NOT EXISTS (SELECT 1 FROM {quote(self.schema)}._deletions d "
                "WHERE d.collection = %s AND d.id = x.k AND d.deleted_at >= to_timestamp(%s))",
                (
                    [k for k, _ in keyed],
                    [j for _, j in keyed],
                    parent_id,
                    fetched,
                    r.c.name,
                    fetched,
                ),
            )
            row = await cur.fetchone()
            r.repaired += int(row[0]) if row else 0
            await self.store.upsert(
                conn,
                r.c,
                [Incoming(j, stripe_time=fetched, parent_id=parent_id) for _, j in keyed],
            )

    async def _remove(self, r: _Round, plan: _Plan) -> int:
        """Rows of objects the re-list did not see, in the scope it read in full, that
        no copy newer than its start (less the margin) has touched."""
        scope = []
        if plan.top_scope:
            scope.append("_parent_id IS NULL")
        if r.parents:
            scope.append("_parent_id = ANY(%(parents)s::text[])")
        if not scope:
            return 0
        t = f"{quote(self.schema)}.{quote(r.c.table)}"
        key = quote(r.c.key)
        cutoff = r.stripe_started - REMOVAL_MARGIN
        async with self.pool.connection() as conn, conn.transaction():
            # locked: an event's upsert of one of them waits, then finds it gone or not
            cur = await conn.execute(
                f"SELECT {key} FROM {t} WHERE ({' OR '.join(scope)}) "  # type: ignore[arg-type]
                "AND _stripe_time < to_timestamp(%(cutoff)s) "
                f"AND NOT ({key} = ANY(%(seen)s::text[])) FOR UPDATE",
                {"parents": list(r.parents), "cutoff": cutoff, "seen": list(r.seen)},
            )
            gone = [str(row[0]) for row in await cur.fetchall()]
            if not gone:
                return 0
            return await self.store.delete(
                conn, r.c, gone, deleted_at=cutoff, children=plan.children
            )

    async def _newest_created(self, c: Collection) -> int | None:
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT extract(epoch FROM max(created))::bigint "  # type: ignore[arg-type]
                f"FROM {quote(self.schema)}.{quote(c.table)} WHERE _parent_id IS NULL"
            )
            row = await cur.fetchone()
        return int(row[0]) if row and row[0] is not None else None

    # ---- the schedule ----------------------------------------------------------------

    async def last_relisted(self) -> dict[str, float]:
        """When each collection's last re-list started (Unix seconds), from the database."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT collection, extract(epoch FROM relisted_at)::float8 "
                f"FROM {quote(self.schema)}._relist_state"
            )
            return {str(n): float(t) for n, t in await cur.fetchall()}

    async def _record(self, result: RelistResult, started: float) -> None:
        async with self.pool.connection() as conn:
            await _upsert_state(conn, self.schema, result, started)

    async def run(self, stop: asyncio.Event) -> None:
        """Re-list each collection every `interval` seconds until `stop` is set."""
        stored = await self.last_relisted()
        for name, t in stored.items():
            if name in self._plans and t > self._last.get(name, 0.0):
                self._last[name] = t
        start = time.time()
        n = max(1, len(self.collections))
        never = [name for name in self.collections if name not in self._last]
        # first re-lists spread over one interval, in the order parents first
        due = {name: start + i * self.interval / n for i, name in enumerate(never)}
        due.update({name: self._last[name] + self.interval for name in self._last})
        while not stop.is_set():
            for name, t in self._last.items():  # refresh_balance() re-lists too
                due[name] = max(due.get(name, 0.0), t + self.interval)
            now = time.time()
            ready = sorted((t, self.collections.index(name), name) for name, t in due.items())
            ready = [x for x in ready if x[0] <= now]
            for _, _, name in ready:
                if stop.is_set():
                    return
                due[name] = await self._scheduled(name, stop)
            if ready:
                continue
            wait = min(due.values(), default=now + self.interval) - now
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=max(0.0, wait))

    async def _scheduled(self, name: str, stop: asyncio.Event) -> float:
        """One re-list from the schedule, cut short by `stop`; returns the next due time.
        A refusal waits a whole interval, any other failure RETRY_SECONDS at most."""
        task = asyncio.ensure_future(self.relist(name))
        stopper = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait([task, stopper], return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
            if not task.done():  # stopped (or cancelled) mid-way: pages written stay
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        if task.cancelled():
            return time.time() + self.interval
        try:
            task.result()
        except StripeApiError as e:
            if e.authentication:
                raise
            log.error("re-list %s failed, retrying later: %s", name, e)
            return time.time() + min(self.interval, RETRY_SECONDS)
        return self._last[name] + self.interval


async def _upsert_state(conn: Conn, schema: str, result: RelistResult, started: float) -> None:
    await conn.execute(
        f"INSERT INTO {quote(schema)}._relist_state "  # type: ignore[arg-type]
        "(collection, relisted_at, listed, repaired, removed, skipped_reason) "
        "VALUES (%s, to_timestamp(%s), %s, %s, %s, %s) "
        "ON CONFLICT (collection) DO UPDATE SET relisted_at = excluded.relisted_at, "
        "listed = excluded.listed, repaired = excluded.repaired, removed = excluded.removed, "
        "skipped_reason = excluded.skipped_reason, updated_at = now()",
        (
            result.collection,
            started,
            result.listed,
            result.repaired,
            result.removed,
            result.skipped,
        ),
    )


async def _gather(coros: list[Coroutine[Any, Any, None]]) -> None:
    """Run coroutines at once; the first failure cancels the others and is raised."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
