"""Every write of Stripe objects to the database goes through here.

Backfill, live sync and proxy hand objects to `Store.upsert` / `Store.delete` on a
connection whose transaction they control, so progress cursors commit together with the
rows they cover.

How a batch is written: the objects' JSON is COPYed into a temporary table, then one
``INSERT ... SELECT ... ON CONFLICT DO UPDATE`` computes the typed columns from the JSON
(PostgreSQL does the extraction, in C) and applies the newest-wins guard:

- a row is replaced only by a copy whose ``_stripe_time`` (the Stripe-side time the copy
  reflects: the event's ``created``, or when a page was fetched) is not older;
- within one batch, the newest copy of each object wins (ties: the later one);
- an object with a tombstone at or after the copy's time is not brought back.

Fields the catalog marks as credentials (`Collection.masked`: a webhook endpoint's
`secret`) are set to null in the stored `_raw` before anything else reads it, so neither
their columns nor the raw object ever hold them, whichever path the copy came by.
"""

from __future__ import annotations

import math
import time
import weakref
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache

import orjson
import psycopg
from psycopg import sql
from psycopg.pq import TransactionStatus

from stripesync.catalog import Collection
from stripesync.obs.metrics import record_store_batch
from stripesync.schema.columns import SYSTEM_COLUMNS, columns_for, masked_raw, quote

Conn = psycopg.AsyncConnection  # type: ignore[type-arg]


def fetch_time(now: float | None = None) -> float:
    """The Stripe-side time of a copy fetched now: the end of the previous second.

    Stripe's events carry whole seconds, so an event stamped with the current second may
    describe a change made after this fetch. Dating the fetch just before that second
    lets every such event win over it; an event of the second that the fetch already
    reflects then writes the same state again, or a later event of that second follows
    it (events are applied oldest first, and several of one object in one second are
    fetched again)."""
    return float(math.floor(time.time() if now is None else now) - 1)


@dataclass(frozen=True, slots=True)
class Incoming:
    """One copy of a Stripe object to store."""

    obj: dict[str, object] | str  # the object, or its JSON text
    stripe_time: float  # Unix seconds: the Stripe-side time this copy reflects
    parent_id: str | None = None
    key: str | None = None  # for key columns not found in the object (upcoming invoices)
    event_id: str | None = None

    def json(self) -> str:
        return self.obj if isinstance(self.obj, str) else orjson.dumps(self.obj).decode()


@dataclass(frozen=True, slots=True)
class WriteResult:
    received: int
    written: int  # rows inserted or replaced (older copies and tombstoned ones are not)


_STAGING = """CREATE TEMP TABLE IF NOT EXISTS _stripesync_incoming (
    ord integer NOT NULL,
    raw jsonb NOT NULL,
    parent_id text,
    key text,
    stripe_time double precision NOT NULL,
    event_id text
) ON COMMIT DELETE ROWS"""


# connections (by backend) that already have the staging table
_staged: weakref.WeakKeyDictionary[Conn, set[int]] = weakref.WeakKeyDictionary()


class Store:
    def __init__(self, schema: str = "stripe") -> None:
        self.schema = schema
        self.batches = 0
        self.objects = 0
        self.seconds = 0.0

    # ---- writes ----------------------------------------------------------------------

    async def upsert(
        self, conn: Conn, collection: Collection, items: Sequence[Incoming]
    ) -> WriteResult:
        """Write a batch of objects of one collection, newest copy winning."""
        if not items:
            return WriteResult(0, 0)
        if conn.info.transaction_status == TransactionStatus.IDLE:
            # the staging table empties at commit: COPY and INSERT need one transaction
            async with conn.transaction():
                return await self.upsert(conn, collection, items)
        started = time.perf_counter()
        if conn.info.backend_pid not in _staged.get(conn, ()):
            await conn.execute(_STAGING)
            _staged.setdefault(conn, set()).add(conn.info.backend_pid)
        async with conn.cursor() as cur:
            async with cur.copy(
                "COPY _stripesync_incoming (ord, raw, parent_id, key, stripe_time, event_id) "
                "FROM STDIN"
            ) as copy:
                for i, it in enumerate(items):
                    await copy.write_row(
                        (i, it.json(), it.parent_id, it.key, it.stripe_time, it.event_id)
                    )
            await cur.execute(_upsert_sql(self.schema, collection.name), (collection.name,))
            written = cur.rowcount
            # cheaper than TRUNCATE for one page; needed when the caller's transaction
            # writes more than one batch
            await cur.execute("DELETE FROM _stripesync_incoming")
        elapsed = time.perf_counter() - started
        self.batches += 1
        self.objects += len(items)
        self.seconds += elapsed
        record_store_batch(len(items), elapsed)
        return WriteResult(len(items), max(written, 0))

    async def delete(
        self,
        conn: Conn,
        collection: Collection,
        ids: Sequence[str],
        *,
        deleted_at: float,
        event_id: str | None = None,
        children: Sequence[Collection] = (),
    ) -> int:
        """Remove rows (and their children's rows, where their tables exist) and record
        tombstones."""
        if not ids:
            return 0
        t = f"{quote(self.schema)}.{quote(collection.table)}"
        key = quote(collection.key)
        cur = await conn.execute(
            f"DELETE FROM {t} WHERE {key} = ANY(%s) "  # type: ignore[arg-type]
            "AND _stripe_time <= to_timestamp(%s)",
            (list(ids), deleted_at),
        )
        removed = cur.rowcount
        for child in await self.present(conn, children):
            ct = f"{quote(self.schema)}.{quote(child.table)}"
            await conn.execute(
                f"DELETE FROM {ct} WHERE _parent_id = ANY(%s)",  # type: ignore[arg-type]
                (list(ids),),
            )
        await conn.execute(
            f"INSERT INTO {quote(self.schema)}._deletions "  # type: ignore[arg-type]
            "(collection, id, deleted_at, event_id) "
            "SELECT %s, unnest(%s::text[]), to_timestamp(%s), %s "
            "ON CONFLICT (collection, id) DO UPDATE SET deleted_at = excluded.deleted_at, "
            "event_id = excluded.event_id "
            f"WHERE {quote(self.schema)}._deletions.deleted_at <= excluded.deleted_at",
            (collection.name, list(ids), deleted_at, event_id),
        )
        return removed

    async def present(self, conn: Conn, collections: Sequence[Collection]) -> list[Collection]:
        """Those of `collections` whose table is in the schema (a run may sync only some)."""
        if not collections:
            return []
        cur = await conn.execute(
            "SELECT t FROM unnest(%s::text[]) AS t WHERE pg_catalog.to_regclass("
            "pg_catalog.quote_ident(%s) || '.' || pg_catalog.quote_ident(t)) IS NOT NULL",
            ([c.table for c in collections], self.schema),
        )
        tables = {str(row[0]) for row in await cur.fetchall()}
        return [c for c in collections if c.table in tables]

    async def remove(self, conn: Conn, collection: Collection, as_of: Mapping[str, float]) -> int:
        """Remove rows that may come back, leaving no tombstone (an upcoming invoice that
        is no more): `as_of` maps each key to when Stripe said it was gone; a row whose
        copy is newer than that stays."""
        if not as_of:
            return 0
        t = f"{quote(self.schema)}.{quote(collection.table)}"
        key = quote(collection.key)
        cur = await conn.execute(
            f"DELETE FROM {t} USING unnest(%s::text[], %s::float8[]) AS g(k, at) "  # type: ignore[arg-type]
            f"WHERE {t}.{key} = g.k AND {t}._stripe_time <= to_timestamp(g.at)",
            (list(as_of), list(as_of.values())),
        )
        return cur.rowcount

    async def delete_unlisted_children(
        self,
        conn: Conn,
        collection: Collection,
        parent_id: str,
        listed: Iterable[str],
        *,
        as_of: float,
        event_id: str | None = None,
        children: Sequence[Collection] = (),
    ) -> int:
        """A parent's complete list of its children as of `as_of` (a subscription's
        `items` in an event): remove the rows of its children the list leaves out that
        no newer copy has touched, with a tombstone at `as_of` (an item removed from a
        subscription is deleted at Stripe)."""
        if await self.present(conn, [collection]) != [collection]:
            return 0
        t = f"{quote(self.schema)}.{quote(collection.table)}"
        key = quote(collection.key)
        cur = await conn.execute(
            f"SELECT {key} FROM {t} WHERE _parent_id = %s "  # type: ignore[arg-type]
            f"AND NOT ({key} = ANY(%s)) AND _stripe_time <= to_timestamp(%s) FOR UPDATE",
            (parent_id, list(listed), as_of),
        )
        gone = [str(row[0]) for row in await cur.fetchall()]
        if not gone:
            return 0
        return await self.delete(
            conn, collection, gone, deleted_at=as_of, event_id=event_id, children=children
        )

    async def delete_missing_children(
        self, conn: Conn, collection: Collection, parent_id: str, keep_ids: Sequence[str]
    ) -> int:
        """After a full re-list of one parent's children: drop the rows Stripe no longer
        lists (an invoice line removed from a draft)."""
        t = f"{quote(self.schema)}.{quote(collection.table)}"
        cur = await conn.execute(
            f"DELETE FROM {t} WHERE _parent_id = %s "  # type: ignore[arg-type]
            f"AND NOT ({quote(collection.key)} = ANY(%s))",
            (parent_id, list(keep_ids)),
        )
        return cur.rowcount


@cache
def _upsert_sql(schema: str, name: str) -> sql.Composable:
    from stripesync.catalog import build_catalog

    collection = build_catalog()[name]
    return sql.SQL(_upsert_text(schema, collection))  # type: ignore[arg-type]


def _upsert_text(schema: str, collection: Collection) -> str:
    cols = columns_for(collection.name)
    t = f"{quote(schema)}.{quote(collection.table)}"
    key = collection.key
    names = [quote(c.name) for c in cols]
    exprs = []
    for c in cols:
        e = c.expr("s.raw")
        if c.name == key:
            e = f"coalesce(s.key, {e})"
        exprs.append(e)
    system = ["_raw", "_parent_id", "_stripe_time", "_event_id", "_synced_at"]
    assert [n for n, _ in SYSTEM_COLUMNS] == system
    key_col = cols[[c.name for c in cols].index(key)]
    key_expr = f"coalesce(i.key, {key_col.expr('i.raw')})"
    select = ", ".join(
        [*exprs, "s.raw", "s.parent_id", "to_timestamp(s.stripe_time)", "s.event_id", "now()"]
    )
    updates = ", ".join(
        f"{n} = excluded.{n}" for n in [*names, *map(quote, system)] if n != quote(key)
    )
    return (
        f"INSERT INTO {t} ({', '.join([*names, *map(quote, system)])}) "
        f"SELECT {select} FROM ("
        f"  SELECT DISTINCT ON (k) * FROM ("
        f"    SELECT i.ord, {masked_raw('i.raw', collection.masked)} AS raw, i.parent_id, i.key,"
        f"      i.stripe_time, i.event_id, {key_expr} AS k FROM _stripesync_incoming i"
        f"  ) x ORDER BY k, stripe_time DESC, ord DESC"
        f") s "
        f"WHERE s.k IS NOT NULL AND NOT EXISTS ("
        f"  SELECT 1 FROM {quote(schema)}._deletions d"
        f"  WHERE d.collection = %s AND d.id = s.k AND d.deleted_at >= to_timestamp(s.stripe_time)"
        f") "
        f"ON CONFLICT ({quote(key)}) DO UPDATE SET {updates} "
        f"WHERE {t}._stripe_time <= excluded._stripe_time"
    )
